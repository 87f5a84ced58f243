/**
 * `spillway serve --gpus 0,1`: one runtime per GPU, each in its own process (its own CUDA
 * context, HBM tiers and weights rank). Rank r of N runs on the r-th GPU listed, with
 * weights.rank r and weights.world N, on port server.port + r (each on a port of its own
 * choosing when server.port is 0), with a disk tier file of its own (tiers.disk.path with
 * ".rank-r" before the extension). SIGINT and SIGTERM are passed on to every runtime. When
 * one exits unasked, the launcher says so and stops the others: the ranks of a
 * tensor-parallel engine are of no use apart. It exits 0 when every runtime stopped
 * cleanly, 1 otherwise.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { join, parse } from 'node:path';
import type { Config, ConfigSources } from './config.js';
import { projectRoot } from './config.js';
import { errors } from './errors.js';
import { NODE_FLAGS } from './node-flags.js';

const CLI = join(projectRoot, 'dist', 'runtime', 'cli.js');

/** What one runtime of the group gets. */
export interface RankPlan {
  rank: number;
  /** Its GPU: an index within the visible devices, as gpu.device takes it. */
  device: number;
  /** 0 where the base port is 0: the runtime picks one. */
  port: number;
  diskPath: string;
  /** Settings added after the user's own: later ones win. */
  sets: string[];
}

/** "0,1" -> [0, 1]: distinct visible device indices, at least one. */
export function parseGpuList(text: string): number[] {
  const items = text.split(',').map((s) => s.trim());
  if (items.some((s) => !/^\d+$/.test(s))) throw new Error(`option --gpus wants device indices separated by commas (0,1), got "${text}"`);
  const gpus = items.map(Number);
  const repeated = gpus.find((g, i) => gpus.indexOf(g) !== i);
  if (repeated !== undefined) throw new Error(`option --gpus names device ${repeated} twice: one runtime per GPU`);
  return gpus;
}

/** data/tier2.slots -> data/tier2.rank-1.slots */
function rankPath(path: string, rank: number): string {
  const p = parse(path);
  return join(p.dir, `${p.name}.rank-${rank}${p.ext}`);
}

/** One plan per GPU; refuses a configuration the group cannot run as given. */
export function planRanks(config: Config, gpus: readonly number[]): RankPlan[] {
  const world = gpus.length;
  if (config.weights.world !== 1 && config.weights.world !== world) {
    throw errors.badConfig('weights.world', `${config.weights.world}, but --gpus names ${world} GPUs: the launcher runs one rank per GPU`);
  }
  const base = config.server.port;
  if (base !== 0 && base + world - 1 > 65535) {
    throw errors.badConfig('server.port', `${base} leaves no room for ${world} consecutive ports`);
  }
  return gpus.map((device, rank) => {
    const diskPath = rankPath(config.tiers.disk.path, rank);
    return {
      rank, device, port: base === 0 ? 0 : base + rank, diskPath,
      sets: [`gpu.device=${device}`, `weights.rank=${rank}`, `weights.world=${world}`, `tiers.disk.path=${diskPath}`],
    };
  });
}

/** The command line that starts one rank: the user's own sources, then the rank's settings. */
export function rankArgs(sources: ConfigSources, plan: RankPlan): string[] {
  const file = sources.file === undefined ? [] : ['--config', sources.file];
  return ['serve', ...file, ...[...(sources.sets ?? []), ...plan.sets].flatMap((s) => ['--set', s])];
}

/** Starts every rank and resolves with the launcher's exit code once all have exited. */
export function launch(sources: ConfigSources, plans: readonly RankPlan[]): Promise<number> {
  const say = (line: string) => process.stderr.write(`spillway: ${line}\n`);
  let stopping = false;
  let clean = true;
  const children: ChildProcess[] = [];
  const stopAll = (signal: NodeJS.Signals) => {
    stopping = true;
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill(signal);
  };
  const exits = plans.map((plan) => {
    // Its own process group: a terminal's Ctrl-C reaches the runtime once, through us.
    const child = spawn(process.execPath, [...NODE_FLAGS, CLI, ...rankArgs(sources, plan)], {
      env: { ...process.env, PORT: String(plan.port) },
      stdio: 'inherit',
      detached: true,
    });
    children.push(child);
    const name = `rank ${plan.rank} of ${plans.length} (GPU ${plan.device}${plan.port === 0 ? '' : `, port ${plan.port}`})`;
    say(`${name}: pid ${child.pid}`);
    return new Promise<void>((resolve) => {
      child.once('error', (err) => {
        clean = false;
        say(`${name} did not start: ${err.message}`);
        resolve();
      });
      child.once('exit', (code, signal) => {
        if (code !== 0) clean = false;
        const how = signal ? `on ${signal}` : `with code ${code}`;
        if (stopping) {
          say(`${name} exited ${how}`);
        } else {
          say(`${name} exited ${how}; stopping the others`);
          stopAll('SIGTERM');
        }
        resolve();
      });
    });
  });
  const forward = (signal: NodeJS.Signals) => () => stopAll(signal);
  const onInt = forward('SIGINT');
  const onTerm = forward('SIGTERM');
  process.on('SIGINT', onInt);
  process.on('SIGTERM', onTerm);
  return Promise.all(exits).then(() => {
    process.off('SIGINT', onInt);
    process.off('SIGTERM', onTerm);
    return clean ? 0 : 1;
  });
}
