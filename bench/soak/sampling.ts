/**
 * Sampling the soak: the figures taken every sampleMs (operations and their latency, the
 * tiers, the server's memory and descriptors, the GPU's memory), the leak verdicts judged
 * from them, and the quantiles of the server's own Prometheus histograms.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { statSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { OPS, type OpKind } from './operations.js';
import type { Soak } from './soak.js';
import { judgeGrowth, quantile, type GrowthRule, type GrowthVerdict } from './stats.js';

const GPU_QUERY = ['--query-gpu=memory.used', '--format=csv,noheader,nounits', '--id=0'];

/**
 * The GPU's memory in use, from one nvidia-smi that prints it every interval (`-lms`), started
 * once. Starting nvidia-smi for every sample forked the harness each second from the thread
 * that times the requests (4 % of that thread's time in a profile of a GPU soak).
 */
class GpuMemoryWatch {
  private child: ChildProcess | undefined;
  private latest: number | null = null;

  start(intervalMs: number): void {
    const child = spawn('nvidia-smi', [...GPU_QUERY, `-lms=${Math.max(100, Math.round(intervalMs))}`], { stdio: ['ignore', 'pipe', 'ignore'] });
    child.on('error', () => (this.latest = null));  // no nvidia-smi: not measured
    child.on('exit', () => (this.latest = null));
    createInterface({ input: child.stdout! }).on('line', (line) => {
      const mib = Number(line.trim());
      this.latest = Number.isFinite(mib) ? mib * 2 ** 20 : null;
    });
    this.child = child;
  }

  /** The last figure printed, or null when there is none or nvidia-smi has gone. */
  bytes(): number | null {
    return this.latest;
  }

  stop(): void {
    this.child?.kill();
  }
}

export interface Sample {
  t: number;
  life: number;
  opsPerSecond: Record<string, number>;
  p50Ms: Record<string, number | null>;
  p99Ms: Record<string, number | null>;
  readsChecked: number;
  blocks: { raw: number; quantized: number; disk: number } | null;
  movesPerSecond: { demote: number; promote: number; drop: number } | null;
  diskBytesPerSecond: { read: number; write: number } | null;
  rssBytes: number | null;
  openFds: number | null;
  /** Tier 0 and 1 slots in use times their size: device memory on the GPU backend, host memory on the host one. */
  fastTierBytes: number | null;
  /** The whole GPU's memory in use (nvidia-smi), where there is one. */
  gpuMemoryBytes: number | null;
  diskSlotBytes: number | null;
  diskFileBytes: number | null;
  liveBlocks: number | null;
  cachedBlocks: number | null;
  lostBlocks: number | null;
  sequences: number | null;
}


/** How many of an operation were timed, and the p50 and p99 of their times in ms. */
export interface OperationQuantiles {
  count: number;
  p50: number | null;
  p99: number | null;
}

export interface LeakVerdicts {
  rss: GrowthVerdict;
  fds: GrowthVerdict;
  gpuMemory: GrowthVerdict | null;
}

/**
 * p50 and p99 (bucket upper bounds, ms) of a Prometheus histogram in `metrics`, its series
 * summed by `keyOf(labels)`; series whose key is undefined are left out.
 */
export function histogramQuantiles(metrics: string, name: string, keyOf: (labels: Record<string, string>) => string | undefined): Record<string, OperationQuantiles> {
  const buckets = new Map<string, Map<number, number>>();
  for (const m of metrics.matchAll(new RegExp(`^${name}_bucket\\{([^}]*)\\} (\\d+)`, 'gm'))) {
    const labels = Object.fromEntries([...m[1]!.matchAll(/(\w+)="([^"]*)"/g)].map((l) => [l[1]!, l[2]!]));
    const key = keyOf(labels);
    if (key === undefined) continue;
    const le = labels.le === '+Inf' ? Infinity : Number(labels.le) * 1000;
    if (!buckets.has(key)) buckets.set(key, new Map());
    const b = buckets.get(key)!;
    b.set(le, (b.get(le) ?? 0) + Number(m[2]));
  }
  return Object.fromEntries([...buckets].map(([key, b]) => {
    const sorted = [...b].sort((x, y) => x[0] - y[0]);
    const total = sorted[sorted.length - 1]![1];
    const quantile = (q: number) => (total === 0 ? null : sorted.find(([, c]) => c >= q * total)![0]);
    return [key, { count: total, p50: quantile(0.5), p99: quantile(0.99) }];
  }));
}

/** The block routes' requests as the server timed them, by method and route. */
export const BLOCK_ROUTES = new Set(['/v1/sequences/:id/blocks/:index', '/v1/sequences/:id/blocks/read', '/v1/sequences/:id/blocks/write']);


function emptyWindow(): Record<OpKind, number[]> {
  return Object.fromEntries(OPS.map((k) => [k, [] as number[]])) as Record<OpKind, number[]>;
}

/** Takes the run's samples and judges them: one per run, reading the harness it samples. */
export class Sampler {
  readonly samples: Sample[] = [];
  /** Latencies (ms) of the operations completed since the last sample. */
  private window = emptyWindow();
  private readonly gpu = new GpuMemoryWatch();

  constructor(private readonly soak: Soak) {}

  /** An operation of `kind` completed in `ms`. */
  observe(kind: OpKind, ms: number): void {
    this.window[kind].push(ms);
  }

  /** Whether the server's RSS, its descriptors and the GPU's memory (where there is one) grew past their rules. */
  leaks(): LeakVerdicts {
    const o = this.soak.o;
    return {
      rss: this.judge((s) => s.rssBytes, o.rss),
      fds: this.judge((s) => s.openFds, o.fds),
      gpuMemory: this.soak.hasGpu ? this.judge((s) => s.gpuMemoryBytes, o.gpuMemory) : null,
    };
  }


  /** The harness's figures since `last`, and the server's own where it answers. */
  private async sample(last: { t: number; checked: number }): Promise<void> {
    const t = this.soak.now();
    const dt = Math.max(t - last.t, 1e-3);
    const window = this.window;
    this.window = emptyWindow();
    const s: Sample = {
      t, life: this.soak.life,
      opsPerSecond: Object.fromEntries(OPS.map((k) => [k, window[k].length / dt])),
      p50Ms: Object.fromEntries(OPS.map((k) => [k, quantile(window[k], 0.5)])),
      p99Ms: Object.fromEntries(OPS.map((k) => [k, quantile(window[k], 0.99)])),
      readsChecked: this.soak.t.readsChecked - last.checked,
      blocks: null, movesPerSecond: null, diskBytesPerSecond: null, rssBytes: null, openFds: null, fastTierBytes: null,
      gpuMemoryBytes: null, diskSlotBytes: null, diskFileBytes: null, liveBlocks: null, cachedBlocks: null, lostBlocks: null, sequences: null,
    };
    last.t = t;
    last.checked = this.soak.t.readsChecked;
    if (!this.soak.restarting) {
      try {
        const [tel, status] = await Promise.all([this.soak.client.telemetry(), this.soak.client.status()]);
        s.blocks = tel.blocks;
        s.movesPerSecond = tel.movesPerSecond;
        s.diskBytesPerSecond = tel.diskBytesPerSecond;
        s.rssBytes = this.soak.server.rssBytes();
        s.openFds = this.soak.server.openFds();
        // The memory tiers' bytes in use, host memory included (the RSS bound allows for them).
        s.fastTierBytes = tel.blocks.raw * this.soak.slotBytes.raw! + tel.blocks.quantized * this.soak.slotBytes.quantized! + (tel.blocks.host ?? 0) * (this.soak.slotBytes.host ?? 0);
        s.gpuMemoryBytes = this.soak.hasGpu ? this.gpu.bytes() : null;
        s.diskSlotBytes = tel.blocks.disk * this.soak.slotBytes.disk!;
        s.diskFileBytes = statSync(this.soak.diskPath).blocks * 512;
        s.liveBlocks = status.stats.liveBlocks;
        s.cachedBlocks = status.stats.cachedBlocks;
        s.lostBlocks = status.stats.lostBlocks;
        s.sequences = status.stats.sequences;
      } catch {
        // A restart began while sampling: this sample has the harness's figures only.
      }
    }
    this.samples.push(s);
  }

  /** Samples every sampleMs until the run stops, logging a line about every 10 s. */
  async loop(): Promise<void> {
    const last = { t: 0, checked: 0 };
    let next = this.soak.o.sampleMs;
    if (this.soak.hasGpu) this.gpu.start(this.soak.o.sampleMs);
    try {
      while (!this.soak.stopping) {
        await sleep(Math.max(0, next - (performance.now() - this.soak.started)));
        next += this.soak.o.sampleMs;
        if (this.soak.stopping) break;
        await this.sample(last);
        const s = this.samples[this.samples.length - 1]!;
        if (this.samples.length % Math.max(1, Math.round(10_000 / this.soak.o.sampleMs)) === 0) {
          const ops = Object.values(s.opsPerSecond).reduce((a, b) => a + b, 0);
          this.soak.o.log(`${s.t.toFixed(0)} s: ${ops.toFixed(0)} ops/s, ${this.soak.t.readsChecked} reads checked, blocks ${s.blocks ? `${s.blocks.raw}/${s.blocks.quantized}/${s.blocks.disk}` : '-'}, ` +
            `moves/s ${s.movesPerSecond ? `${s.movesPerSecond.demote.toFixed(0)} down ${s.movesPerSecond.promote.toFixed(0)} up` : '-'}, RSS ${s.rssBytes ? (s.rssBytes / 2 ** 20).toFixed(0) : '-'} MiB, fds ${s.openFds ?? '-'}`);
        }
      }
    } finally {
      this.gpu.stop();
    }
  }

  /** The growth of one figure over the longest of the server's lives (a restart starts it anew). */
  private judge(pick: (s: Sample) => number | null, rule: GrowthRule): GrowthVerdict {
    const lives = new Map<number, Array<[number, number]>>();
    for (const s of this.samples) {
      const v = pick(s);
      if (v === null) continue;
      if (!lives.has(s.life)) lives.set(s.life, []);
      lives.get(s.life)!.push([s.t, v]);
    }
    const span = (p: Array<[number, number]>) => p[p.length - 1]![0] - p[0]![0];
    const longest = [...lives.values()].sort((a, b) => span(b) - span(a))[0] ?? [];
    return judgeGrowth(longest, rule);
  }
}
