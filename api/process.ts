/**
 * `spillway serve` in its own process, as a user runs it: for tests, benches and the soak,
 * which need its exit code and log, its memory and descriptors from /proc, or to kill it.
 * It resolves once the server logs that it listens, and takes its URL from that line, so
 * a configuration may ask for port 0. `startServerGroup` does the same for
 * `spillway serve --gpus`, one runtime per GPU.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { projectRoot } from '../runtime/config.js';
import { NODE_FLAGS } from '../runtime/node-flags.js';

const CLI = join(projectRoot, 'dist', 'runtime', 'cli.js');
const LISTENING = /Server listening at (http:\/\/[^\s"]+)/;
/** The end of the log that error messages and output() show. */
const TAIL_CHARS = 64 * 1024;

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface ServerProcessOptions {
  /** After `serve`: --config FILE, --set path=value ... */
  args?: string[];
  /** Added to this process's environment. */
  env?: NodeJS.ProcessEnv;
  /** Options for node itself, before the script (e.g. --cpu-prof for a profile of the server). */
  nodeArgs?: string[];
  /** Appends the server's stdout and stderr to this file. */
  logPath?: string;
  timeoutMs?: number;
}

export class ServerProcess {
  readonly pid: number;
  readonly url: string;
  /** Settles when the process exits, for whatever reason. */
  readonly exited: Promise<Exit>;

  private constructor(private readonly child: ChildProcess, url: string, exited: Promise<Exit>, private readonly tail: () => string) {
    this.pid = child.pid!;
    this.url = url;
    this.exited = exited;
  }

  /**
   * Starts the server and resolves once it listens; rejects with the end of its log if it
   * exits first or does not listen within `timeoutMs`.
   */
  static start(options: ServerProcessOptions = {}): Promise<ServerProcess> {
    const { args = [], env = {}, nodeArgs = [], logPath, timeoutMs = 120_000 } = options;
    const log = logPath === undefined ? undefined : createWriteStream(logPath, { flags: 'a' });
    const child = spawn(process.execPath, [...NODE_FLAGS, ...nodeArgs, CLI, 'serve', ...args], {
      // The CLI's own default, as `npm start` sets it: libuv's pool runs the disk operations.
      env: { ...process.env, UV_THREADPOOL_SIZE: process.env.UV_THREADPOOL_SIZE ?? '16', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let tail = '';
    const exited = new Promise<Exit>((resolve) => child.once('exit', (code, signal) => {
      log?.end();
      resolve({ code, signal });
    }));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        reject(new Error(`server did not listen within ${timeoutMs} ms: ${tail}`));
      }, timeoutMs);
      let listening = false;
      const onData = (chunk: Buffer) => {
        log?.write(chunk);
        tail = (tail + chunk.toString()).slice(-TAIL_CHARS);
        const m = listening ? null : LISTENING.exec(tail);
        if (m) {
          listening = true;
          clearTimeout(timer);
          resolve(new ServerProcess(child, m[1]!, exited, () => tail));
        }
      };
      child.stdout!.on('data', onData);
      child.stderr!.on('data', onData);
      void exited.then(({ code, signal }) => {
        clearTimeout(timer);
        reject(new Error(`server exited (code ${code}, signal ${signal}) before listening: ${tail}`));
      });
    });
  }

  /** The end of the server's stdout and stderr so far. */
  output(): string {
    return this.tail();
  }

  /** Resident memory in bytes (VmRSS), or null once the process is gone. */
  rssBytes(): number | null {
    try {
      const kb = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${this.pid}/status`, 'utf8'));
      return kb ? Number(kb[1]) * 1024 : null;
    } catch {
      return null;
    }
  }

  /** Open file descriptors, or null once the process is gone. */
  openFds(): number | null {
    try {
      return readdirSync(`/proc/${this.pid}/fd`).length;
    } catch {
      return null;
    }
  }

  kill(signal: NodeJS.Signals): void {
    this.child.kill(signal);
  }

  /** SIGTERM (a clean stop), and waits for the exit. */
  async stop(): Promise<Exit> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGTERM');
    return this.exited;
  }
}

/** `spillway serve --gpus`: the launcher and its runtimes. */
export interface ServerGroup {
  /** Rank -> its URL, once all listen. */
  urls: string[];
  /** Rank -> its runtime's pid. */
  pids: number[];
  /** Settles when the launcher exits, with its exit code and everything it wrote to stderr. */
  exited: Promise<{ code: number | null; stderr: string }>;
  /** Signals the launcher, which passes SIGINT and SIGTERM on to the runtimes. */
  kill(signal: NodeJS.Signals): void;
}

/**
 * Starts `spillway serve --gpus GPUS ARGS` (PORT unset: ARGS say the port, 0 for each its
 * own) and resolves once every runtime listens, with their URLs by rank (from their status)
 * and their pids (from the launcher's lines); rejects with the launcher's output if that
 * does not happen within `timeoutMs`, having ended whatever it started.
 */
export async function startServerGroup(gpus: string, args: string[], timeoutMs = 120_000): Promise<ServerGroup> {
  const env = { ...process.env };
  delete env.PORT;
  const child = spawn(process.execPath, [...NODE_FLAGS, CLI, 'serve', '--gpus', gpus, ...args], { env });
  const world = gpus.split(',').length;
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => (stdout += d));
  child.stderr.on('data', (d) => (stderr += d));
  const exited = new Promise<{ code: number | null; stderr: string }>((resolve) => child.once('exit', (code) => resolve({ code, stderr })));
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const listening = [...stdout.matchAll(new RegExp(LISTENING.source, 'g'))].map((m) => m[1]!);
    const pids = [...stderr.matchAll(/rank (\d+) of \d+ \(GPU \d+\): pid (\d+)/g)];
    if (listening.length === world && pids.length === world) {
      const urls: string[] = [];
      for (const url of listening) {
        const status = (await (await fetch(`${url}/v1/status`)).json()) as { config: { weights: { rank: number } } };
        urls[status.config.weights.rank] = url;
      }
      return { urls, pids: pids.sort((a, b) => Number(a[1]) - Number(b[1])).map((m) => Number(m[2])), exited, kill: (s) => child.kill(s) };
    }
    if (Date.now() > deadline || child.exitCode !== null) {
      // The runtimes are in process groups of their own: end them too.
      for (const m of pids) {
        try {
          process.kill(Number(m[2]), 'SIGKILL');
        } catch {
          // already gone
        }
      }
      child.kill('SIGKILL');
      throw new Error(`the group did not start: ${stderr}\n${stdout.slice(-4000)}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}
