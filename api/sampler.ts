/**
 * Telemetry over time: every interval, the store's counters are read and turned into rates
 * (moves, reads and disk bytes per second, hit rates) with the blocks each tier holds.
 * The last samples are kept for /v1/telemetry and the dashboard.
 */
import type { z } from 'zod';
import type { BackendDescription } from '../runtime/backends/backend.js';
import type { Layout } from '../runtime/layout.js';
import type { BlockStore } from '../runtime/store.js';
import type { LoadMonitor } from './load.js';
import type { ApiMetrics } from './metrics.js';
import type { TelemetrySample } from './schemas.js';

export type Sample = z.output<typeof TelemetrySample>;
type PerTier = Sample['blocks'];

/** One number per tier of the layout, keyed by tier name (host only where the ladder has it). */
export function perTier(layout: Layout, values: number[]): PerTier {
  return Object.fromEntries(layout.tiers.map((t, i) => [t.name, values[i]!])) as PerTier;
}

/** Cumulative counts read from the store's counters. */
export interface Totals {
  demotions: number;
  promotions: number;
  drops: number;
  reads: number;
  hits: number;
  prefixHits: number;
  prefixMisses: number;
  diskBytes: { read: number; write: number };
  eventsDropped: number;
}

type Values = Array<{ value: number; labels: Partial<Record<string, string | number>> }>;

function sum(values: Values, label?: string, equals?: string): number {
  let total = 0;
  for (const v of values) if (label === undefined || v.labels[label] === equals) total += v.value;
  return total;
}

export class TelemetrySampler {
  readonly intervalMs: number;
  private readonly store: BlockStore;
  private readonly load: LoadMonitor;
  private readonly metrics: ApiMetrics;
  private readonly capacity: number;
  private readonly history: Sample[] = [];
  private last: { at: number; totals: Totals } | undefined;
  private description: BackendDescription | undefined;
  private timer: NodeJS.Timeout | undefined;

  constructor(store: BlockStore, load: LoadMonitor, metrics: ApiMetrics, intervalMs: number, capacity = 600) {
    this.store = store;
    this.load = load;
    this.metrics = metrics;
    this.intervalMs = intervalMs;
    this.capacity = capacity;
  }

  /** Takes the first sample (rates zero) and samples every interval after it. */
  async start(): Promise<void> {
    await this.sample();
    this.timer = setInterval(() => void this.sample(), this.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  latest(): { sample: Sample; totals: Totals } {
    return { sample: this.history[this.history.length - 1]!, totals: this.last!.totals };
  }

  /**
   * The backend and its I/O paths as of the last sample. Asking the backend goes to the
   * addon and costs more than the rest of a status request, so it is asked once a sample.
   */
  get backend(): BackendDescription {
    return this.description!;
  }

  /** The samples taken after `at` (ms since the epoch), oldest first. */
  since(at: number): Sample[] {
    return this.history.filter((s) => s.at > at);
  }

  private async totals(): Promise<Totals> {
    const t = this.store.telemetry;
    // between scrapes too, so that the addon's buffers of timings do not overflow
    t.takeNativeTimings();
    t.takeDiskRuns();
    const [moves, hits, disk, prefix, dropped] = await Promise.all([
      t.moveCount.get(), t.hits.get(), t.diskBytes.get(), t.prefixLookups.get(), this.metrics.eventsDropped.get(),
    ]);
    return {
      demotions: sum(moves.values, 'kind', 'demote'),
      promotions: sum(moves.values, 'kind', 'promote'),
      drops: sum(moves.values, 'kind', 'drop'),
      reads: sum(hits.values),
      hits: sum(hits.values, 'tier', 'raw'),
      prefixHits: sum(prefix.values, 'result', 'hit'),
      prefixMisses: sum(prefix.values, 'result', 'miss'),
      diskBytes: { read: sum(disk.values, 'direction', 'read'), write: sum(disk.values, 'direction', 'write') },
      eventsDropped: sum(dropped.values),
    };
  }

  async sample(): Promise<Sample> {
    const at = Date.now();
    const totals = await this.totals();
    const prev = this.last ?? { at, totals };
    const seconds = Math.max((at - prev.at) / 1000, 1e-3);
    const rate = (now: number, before: number) => (now - before) / seconds;
    const share = (part: number, whole: number) => (whole > 0 ? part / whole : null);
    const p = prev.totals;
    const sample: Sample = {
      at,
      blocks: perTier(this.store.layout, this.store.occupancy().slotsUsed),
      movesPerSecond: {
        demote: rate(totals.demotions, p.demotions),
        promote: rate(totals.promotions, p.promotions),
        drop: rate(totals.drops, p.drops),
      },
      readsPerSecond: rate(totals.reads, p.reads),
      hitRate: share(totals.hits - p.hits, totals.reads - p.reads),
      prefixHitRate: share(totals.prefixHits - p.prefixHits, totals.prefixHits + totals.prefixMisses - p.prefixHits - p.prefixMisses),
      diskBytesPerSecond: { read: rate(totals.diskBytes.read, p.diskBytes.read), write: rate(totals.diskBytes.write, p.diskBytes.write) },
      diskQueue: this.store.diskQueueDepth,
      eventLoopDelayMs: this.load.eventLoopDelayMs,
    };
    this.last = { at, totals };
    this.description = this.store.describeBackend();
    this.history.push(sample);
    if (this.history.length > this.capacity) this.history.shift();
    return sample;
  }
}
