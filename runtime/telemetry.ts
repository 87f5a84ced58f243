/**
 * Counters, histograms and the event stream of block moves. Metrics live in a
 * prom-client registry of the store's own, so that the API serves them as Prometheus text
 * or JSON without copying; events go to listeners of `moves`.
 */
import { EventEmitter } from 'node:events';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { TierName } from './layout.js';

export type MoveKind = 'demote' | 'promote' | 'drop';

export interface MoveEvent {
  kind: MoveKind;
  blockId: number;
  sequences: string[];
  from: TierName;
  to: TierName | 'none';
  bytes: number;
  durationMs: number;
  /** Whether bytes were moved (false when a clean copy below made the move free). */
  copied: boolean;
  at: number;
}

const LATENCY_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.025, 0.05, 0.1, 0.25, 0.5, 1];

export class Telemetry {
  readonly registry = new Registry();
  readonly moves = new EventEmitter();

  readonly allocations = new Counter({ name: 'spillway_allocations_total', help: 'Blocks allocated', registers: [this.registry] });
  readonly frees = new Counter({ name: 'spillway_frees_total', help: 'Blocks released', registers: [this.registry] });
  readonly writes = new Counter({ name: 'spillway_writes_total', help: 'Block writes', registers: [this.registry] });
  readonly hits = new Counter({ name: 'spillway_hits_total', help: 'Reads served from a tier', labelNames: ['tier'], registers: [this.registry] });
  readonly misses = new Counter({ name: 'spillway_misses_total', help: 'Reads that did not find the block in a tier', labelNames: ['tier'], registers: [this.registry] });
  readonly moveCount = new Counter({ name: 'spillway_moves_total', help: 'Block moves between tiers', labelNames: ['kind', 'from', 'to'], registers: [this.registry] });
  readonly moveBytes = new Counter({ name: 'spillway_move_bytes_total', help: 'Bytes written by block moves', labelNames: ['kind', 'from', 'to'], registers: [this.registry] });
  readonly moveSeconds = new Histogram({ name: 'spillway_move_seconds', help: 'Duration of block moves', labelNames: ['kind', 'from', 'to'], buckets: LATENCY_BUCKETS, registers: [this.registry] });
  /** Where the addon's tasks (copies, kernels, disk I/O) spend their time; taken in at each scrape and sample. */
  readonly nativeTaskSeconds = new Histogram({
    name: 'spillway_native_task_seconds', help: 'Addon tasks by phase: queued for a worker thread, run on it, returned to the JS thread',
    labelNames: ['phase'], buckets: LATENCY_BUCKETS, registers: [this.registry],
    collect: () => this.takeNativeTimings(),
  });
  private nativeTimings: () => Float64Array = () => new Float64Array(0);
  readonly opSeconds = new Histogram({ name: 'spillway_operation_seconds', help: 'Duration of store operations', labelNames: ['op'], buckets: LATENCY_BUCKETS, registers: [this.registry] });
  readonly diskQueue = new Gauge({ name: 'spillway_disk_queue_depth', help: 'Disk operations in flight', registers: [this.registry] });
  /**
   * How long each disk operation held one of the disk queue's turns (tiers.disk.inFlight): the
   * transfer with its checks and copies, not the wait for a turn nor the result's way back to the
   * JS thread. Taken from the backend at each scrape and sample.
   */
  readonly diskOpSeconds = new Histogram({
    name: 'spillway_disk_op_seconds', help: 'Disk operations from their turn to done, by direction', labelNames: ['direction'], buckets: LATENCY_BUCKETS, registers: [this.registry],
    collect: () => this.takeDiskRuns(),
  });
  private diskRuns: () => Float64Array = () => new Float64Array(0);
  readonly diskBytes = new Counter({ name: 'spillway_disk_bytes_total', help: 'Bytes moved to and from the disk tier', labelNames: ['direction'], registers: [this.registry] });
  readonly reclaims = new Counter({ name: 'spillway_reclaims_total', help: 'Background evictions keeping a tier\'s reserve of free slots, by outcome', labelNames: ['tier', 'outcome'], registers: [this.registry] });
  readonly diskErrors = new Counter({ name: 'spillway_disk_errors_total', help: 'Disk tier failures by kind', labelNames: ['kind'], registers: [this.registry] });
  readonly prefixLookups = new Counter({ name: 'spillway_prefix_lookup_blocks_total', help: 'Blocks asked for in prefix lookups', labelNames: ['result'], registers: [this.registry] });

  /** Where the addon's task timings come from (runtime/native.ts); set once by the store. */
  readNativeTimingsFrom(take: () => Float64Array): void {
    this.nativeTimings = take;
  }

  /** Where the disk queue's runs come from (the backend's takeDiskRuns); set once by the ladder. */
  readDiskRunsFrom(take: () => Float64Array): void {
    this.diskRuns = take;
  }

  /** Moves the disk queue's runs, (direction, start, end) each, into spillway_disk_op_seconds. */
  takeDiskRuns(): void {
    const r = this.diskRuns();
    for (let i = 0; i + 2 < r.length; i += 3) {
      this.diskOpSeconds.observe({ direction: r[i] === 0 ? 'read' : 'write' }, r[i + 2]! - r[i + 1]!);
    }
  }

  /** Moves the addon's task timings into spillway_native_task_seconds. */
  takeNativeTimings(): void {
    const t = this.nativeTimings();
    for (let i = 0; i + 2 < t.length; i += 3) {
      this.nativeTaskSeconds.observe({ phase: 'queued' }, t[i]!);
      this.nativeTaskSeconds.observe({ phase: 'run' }, t[i + 1]!);
      this.nativeTaskSeconds.observe({ phase: 'returned' }, t[i + 2]!);
    }
  }

  recordMove(event: Omit<MoveEvent, 'at'>): void {
    const labels = { kind: event.kind, from: event.from, to: event.to };
    this.moveCount.inc(labels);
    if (event.copied) this.moveBytes.inc(labels, event.bytes);
    this.moveSeconds.observe(labels, event.durationMs / 1000);
    if (this.moves.listenerCount('move') > 0) this.moves.emit('move', { ...event, at: Date.now() });
  }
}
