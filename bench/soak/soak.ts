/**
 * The long-context soak: a server in its own process, driven over HTTP by many concurrent
 * sequences (workload.ts) while every read is checked against content recomputed from its
 * seed, the server's memory, descriptors and tiers are sampled, and faults are injected:
 * a full disk, a corrupted slot, a killed server. docs/SOAK.md says what passes.
 */
import { execFile } from 'node:child_process';
import { closeSync, fdatasyncSync, openSync, readSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { SpillwayClient } from '../../api/client.js';
import type { ConfigInput } from '../../runtime/config.js';
import { SpillwayError } from '../../runtime/errors.js';
import { SLOT_ID_BYTES, SLOT_PAYLOAD_OFFSET, slotBlockId } from '../../runtime/recovery.js';
import { FOUR_BIT_BOUND } from '../block-content.js';
import { ServerProcess } from '../../api/process.js';
import { judgeGrowth, LatencyHistogram, quantile, type GrowthRule, type GrowthVerdict } from './stats.js';
import { Verifier } from './verifier.js';
import { SequenceModel, Workload, type WorkloadOptions } from './workload.js';

export type FaultKind = 'kill' | 'disk-full' | 'corrupt';
export const FAULT_KINDS: FaultKind[] = ['kill', 'disk-full', 'corrupt'];
const OPS = ['create', 'allocate', 'write', 'writeBatch', 'read', 'readBatch', 'free'] as const;
type OpKind = (typeof OPS)[number];

export interface SoakOptions {
  durationS: number;
  /** Sequences live at once (one engine request loop each). */
  sequences: number;
  workload: Omit<WorkloadOptions, 'tokensPerBlock'>;
  model: { layers: number; kvHeads: number; headDim: number; tokensPerBlock: number; dtype: 'bf16' };
  /** host: the host tier, or none where absent. */
  tiers: { raw: string; quantized: string; host?: string; disk: string };
  backend: 'auto' | 'host' | 'gpu';
  /** Where the config, the slot file and the server's log go. */
  dir: string;
  sampleMs: number;
  faults: FaultKind[];
  /** Faults repeat in this cycle: kill at 20%, disk-full at 45%, corrupt at 70% of it. */
  faultEveryS: number;
  /** Disk writes that fail with ENOSPC in the disk-full fault. */
  diskFullWrites: number;
  /** Blocks prefilled per batch write. */
  batchBlocks: number;
  /**
   * An engine's pace: milliseconds between a sequence's decode steps (one block written,
   * its reads), as a decode of tokensPerBlock tokens takes; 0 runs every sequence flat out.
   * Latency means something only under a stated load: flat out, it is the sequences in
   * flight divided by the throughput (Little's law).
   */
  stepMs: number;
  /** Single reads per decoded block; a batch read of a window follows with probability readBatchShare. */
  readsPerStep: number;
  readBatchShare: number;
  rewriteShare: number;
  rss: GrowthRule;
  fds: GrowthRule;
  gpuMemory: GrowthRule;
  /** Follow /v1/events so that a mismatch can show the block's moves. */
  events: boolean;
  /** Where the server writes a CPU profile of each life (node --cpu-prof), if anywhere. */
  serverProfileDir?: string;
  log: (line: string) => void;
}

const FAULT_AT: Record<FaultKind, number> = { kill: 0.2, 'disk-full': 0.45, corrupt: 0.7 };
/** Answers that mean "not now": the request is retried after a pause. */
const RETRY = new Set(['TIER_BUSY', 'BUSY']);
/** Answers that mean "no room": a new sequence waits, a growing one ends early. */
const FULL = new Set(['CAPACITY_EXCEEDED', 'LIMIT_EXCEEDED']);
const HISTORY = 200_000;
const GPU_QUERY = ['--query-gpu=memory.used', '--format=csv,noheader,nounits', '--id=0'];

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

export interface FaultRecord {
  kind: FaultKind;
  at: number;
  ok: boolean;
  outcome: string;
  details: Record<string, unknown>;
}

export interface SoakReport {
  passed: boolean;
  failures: string[];
  startedAt: string;
  durationS: number;
  options: Omit<SoakOptions, 'log'>;
  server: { backend: string; reason: string; paths: Record<string, string>; capacity: unknown; restarts: number };
  totals: {
    ops: Record<string, number>;
    opsPerSecond: number;
    readsChecked: number;
    readsExact: number;
    readsLossy: number;
    maxRelativeError: number;
    bound: number;
    mismatches: number;
    retries: Record<string, number>;
    sequencesStarted: number;
    sequencesFinished: number;
    preempted: number;
    admissionWaits: number;
    /** Rewrites refused by the full disk whose block then read back as before. */
    refusedRewritesReadBack: number;
    deduplicated: number;
    attachedBlocks: number;
    longestSequenceTokens: number;
    bytesWritten: number;
    bytesRead: number;
    faultErrors: Record<string, number>;
    moves: { demotions: number; promotions: number; drops: number };
  };
  latencyMs: Record<string, { count: number; p50: number | null; p99: number | null }>;
  /**
   * The store's own time per operation (spillway_operation_seconds, the server's last life):
   * the upper bound of the histogram bucket holding the quantile, without HTTP or queueing.
   */
  storeMs: Record<string, { count: number; p50: number | null; p99: number | null }>;
  /** The same for the block routes' requests, from arrival to answer, as the server timed them. */
  serverMs: Record<string, { count: number; p50: number | null; p99: number | null }>;
  leak: { rss: GrowthVerdict; fds: GrowthVerdict; gpuMemory: GrowthVerdict | null };
  faults: FaultRecord[];
  mismatch: Record<string, unknown> | null;
  samples: Sample[];
}

/** An operation cut short by a restart: the worker drops its sequence and starts anew. */
const ABANDON = new Error('abandoned by a restart');

function codeOf(err: unknown): string {
  return err instanceof SpillwayError ? ((err.details.serverCode as string | undefined) ?? err.code) : 'NETWORK';
}

/** Pauses workers between operations; in-flight operations finish (or fail) on their own. */
/**
 * p50 and p99 (bucket upper bounds, ms) of a Prometheus histogram in `metrics`, its series
 * summed by `keyOf(labels)`; series whose key is undefined are left out.
 */
export function histogramQuantiles(metrics: string, name: string, keyOf: (labels: Record<string, string>) => string | undefined): SoakReport['storeMs'] {
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
const BLOCK_ROUTES = new Set(['/v1/sequences/:id/blocks/:index', '/v1/sequences/:id/blocks/read', '/v1/sequences/:id/blocks/write']);

class Gate {
  inFlight = 0;
  private closed: Promise<void> | null = null;
  private open: () => void = () => {};

  async enter(): Promise<void> {
    while (this.closed) await this.closed;
    this.inFlight++;
  }

  leave(): void {
    this.inFlight--;
  }

  close(): void {
    if (!this.closed) this.closed = new Promise((r) => (this.open = r));
  }

  async drain(): Promise<void> {
    this.close();
    while (this.inFlight > 0) await sleep(5);
  }

  reopen(): void {
    this.closed = null;
    this.open();
  }
}

/** A bounded log of recent events: what a mismatch report shows of a block's past. */
class Ring {
  private readonly items: string[] = [];
  private next = 0;

  push(line: string): void {
    if (this.items.length < HISTORY) this.items.push(line);
    else this.items[this.next] = line;
    this.next = (this.next + 1) % HISTORY;
  }

  matching(needle: string, limit = 40): string[] {
    const ordered = [...this.items.slice(this.next), ...this.items.slice(0, this.next)];
    return ordered.filter((l) => l.includes(needle)).slice(-limit);
  }
}

class Soak {
  private readonly o: SoakOptions;
  private readonly workload: Workload;
  private readonly gate = new Gate();
  private readonly live = new Set<SequenceModel>();
  private readonly history = new Ring();
  private readonly moves = new Ring();
  private readonly configPath: string;
  private readonly logPath: string;
  private server!: ServerProcess;
  private client!: SpillwayClient;
  private rawBytes = 0;
  /** Bytes of a slot, by tier name. */
  private slotBytes: Record<string, number> = {};
  private diskSlots = 0;
  private diskPath = '';
  private epoch = 0;
  private life = 0;
  private restarting = false;
  private stopping = false;
  private readonly started = performance.now();
  private readonly failures: string[] = [];
  private mismatch: Record<string, unknown> | null = null;
  private readonly faultRecords: FaultRecord[] = [];
  private readonly samples: Sample[] = [];
  private readonly eventsAbort = new AbortController();
  private hasGpu = false;
  private readonly verifier = new Verifier();
  private readonly t = {
    ops: Object.fromEntries(OPS.map((k) => [k, 0])) as Record<OpKind, number>,
    readsChecked: 0, readsExact: 0, readsLossy: 0, maxRelativeError: 0, mismatches: 0,
    retries: {} as Record<string, number>, faultErrors: {} as Record<string, number>,
    sequencesStarted: 0, sequencesFinished: 0, preempted: 0, admissionWaits: 0, refusedRewritesReadBack: 0, deduplicated: 0, attachedBlocks: 0,
    longestSequenceTokens: 0, bytesWritten: 0, bytesRead: 0,
  };
  private readonly latency = Object.fromEntries(OPS.map((k) => [k, new LatencyHistogram()])) as Record<OpKind, LatencyHistogram>;
  private window = Object.fromEntries(OPS.map((k) => [k, [] as number[]])) as Record<OpKind, number[]>;
  /** Moves counted by servers already gone (a restarted server counts from zero). */
  private readonly movesBefore = { demotions: 0, promotions: 0, drops: 0 };
  /** While the disk-full fault is armed, DISK_FULL answers are expected and retried. */
  private diskFullArmed = false;

  constructor(o: SoakOptions) {
    this.o = o;
    this.workload = new Workload({ ...o.workload, tokensPerBlock: o.model.tokensPerBlock });
    this.configPath = join(o.dir, 'soak-config.json');
    this.logPath = join(o.dir, 'server.log');
  }

  private now(): number {
    return (performance.now() - this.started) / 1000;
  }

  private fail(message: string): void {
    if (this.failures.length < 20) this.failures.push(message);
    this.o.log(`FAIL ${message}`);
    this.stopping = true;
  }

  // ---- the server --------------------------------------------------------------------

  private writeConfig(): void {
    const config: ConfigInput = {
      model: this.o.model,
      tiers: { raw: { bytes: this.o.tiers.raw }, quantized: { bytes: this.o.tiers.quantized }, host: { bytes: this.o.tiers.host ?? 0 }, disk: { path: 'tier2.slots', bytes: this.o.tiers.disk } },
      limits: { maxLiveSequences: this.o.sequences * 2, maxTokensPerSequence: this.o.workload.maxTokens },
      backend: this.o.backend,
      server: { host: '127.0.0.1', port: 0, faults: this.o.faults.includes('disk-full') },
    };
    writeFileSync(this.configPath, JSON.stringify(config, null, 2));
  }

  private async startServer(): Promise<void> {
    const nodeArgs = this.o.serverProfileDir ? ['--cpu-prof', '--cpu-prof-dir', this.o.serverProfileDir] : [];
    this.server = await ServerProcess.start({ args: ['--config', this.configPath], logPath: this.logPath, nodeArgs });
    this.client = new SpillwayClient({ baseUrl: this.server.url });
    const life = ++this.life;
    const server = this.server;
    void server.exited.then((e) => {
      if (!this.restarting && !this.stopping && life === this.life) this.fail(`server died (exit code ${e.code}, signal ${e.signal}); its log is ${this.logPath}`);
    });
    if (this.o.events) void this.followEvents(this.client, life);
  }

  private async followEvents(client: SpillwayClient, life: number): Promise<void> {
    try {
      for await (const e of client.events({ signal: this.eventsAbort.signal })) {
        if (e.event === 'move') {
          const m = e.data as { kind: string; blockId: number; from: string; to: string; copied: boolean };
          this.moves.push(`${this.now().toFixed(3)}s life ${life} block ${m.blockId}: ${m.kind} ${m.from} -> ${m.to}${m.copied ? '' : ' (no copy)'}`);
        } else {
          this.moves.push(`${this.now().toFixed(3)}s life ${life}: ${(e.data as { dropped: number }).dropped} move events dropped by the server`);
        }
      }
    } catch {
      // The stream ends with its server: a restart starts another.
    }
  }

  // ---- operations ------------------------------------------------------------------

  /**
   * Runs one request through the gate, timing it. "Not now" answers are retried after a
   * pause; so is DISK_FULL while the disk-full fault is armed, after `onFull`. A failure
   * around a restart abandons the sequence.
   */
  private async op<T>(kind: OpKind, seq: SequenceModel, fn: (client: SpillwayClient) => Promise<T>, gated = true, onFull?: () => Promise<void>): Promise<T> {
    for (;;) {
      if (gated) await this.gate.enter();
      const epoch = this.epoch;
      // A sequence from before a restart no longer exists on the server.
      if (seq.epoch !== epoch) {
        if (gated) this.gate.leave();
        throw ABANDON;
      }
      const t0 = performance.now();
      try {
        const result = await fn(this.client);
        const ms = performance.now() - t0;
        this.t.ops[kind]++;
        this.latency[kind].add(ms);
        this.window[kind].push(ms);
        return result;
      } catch (err) {
        if (this.restarting || epoch !== this.epoch) throw ABANDON;
        const code = codeOf(err);
        const expectedFull = code === 'DISK_FULL' && this.diskFullArmed;
        if (expectedFull) {
          this.t.faultErrors.DISK_FULL = (this.t.faultErrors.DISK_FULL ?? 0) + 1;
          await onFull?.();
        }
        if ((RETRY.has(code) || expectedFull) && !this.stopping) {
          this.t.retries[code] = (this.t.retries[code] ?? 0) + 1;
          await sleep(20 + Math.random() * 80);
          continue;
        }
        throw err;
      } finally {
        if (gated) this.gate.leave();
      }
    }
  }

  private note(seq: SequenceModel, index: number, what: string): void {
    this.history.push(`${this.now().toFixed(3)}s ${seq.id}#${index} block ${seq.blockIds[index] ?? '?'}: ${what}`);
  }

  /** Checks one block read against its seed; a wrong one stops the run with its history. */
  private async check(seq: SequenceModel, index: number, r: { data: Uint8Array; tier: string; lossy: boolean; promoted: boolean }, how: string): Promise<void> {
    const bytes = r.data.byteLength;
    const error = await this.verifier.check(this.workload.seedOf(seq, index), this.rawBytes, r.data);
    const ok = r.lossy ? error < FOUR_BIT_BOUND : error === 0;
    this.t.readsChecked++;
    if (r.lossy) this.t.readsLossy++;
    else this.t.readsExact++;
    this.t.bytesRead += bytes;
    if (Number.isFinite(error) && r.lossy) this.t.maxRelativeError = Math.max(this.t.maxRelativeError, error);
    this.note(seq, index, `${how} from ${r.tier}${r.lossy ? ' (lossy)' : ''}${r.promoted ? ', promoted' : ''}: ${ok ? 'ok' : 'WRONG'}${r.lossy ? ` err ${error.toExponential(2)}` : ''}`);
    if (ok) return;
    this.t.mismatches++;
    const blockId = seq.blockIds[index];
    this.mismatch = {
      sequence: seq.id, index, blockId, epoch: seq.epoch, how, tier: r.tier, lossy: r.lossy, promoted: r.promoted,
      bytes, expectedBytes: this.rawBytes, relativeError: error, bound: r.lossy ? FOUR_BIT_BOUND : 0,
      prompt: seq.prompt, version: seq.versions[index] ?? 0,
      history: this.history.matching(`${seq.id}#${index} `),
      moves: this.moves.matching(`block ${blockId}:`),
    };
    this.fail(`read of ${seq.id} block ${index} (id ${blockId}) from ${r.tier} is wrong: ${r.lossy ? `relative error ${error} over the bound ${FOUR_BIT_BOUND}` : 'not bit-exact'}\n${JSON.stringify(this.mismatch, null, 2)}`);
  }

  /** Writes the next version of a decode block. */
  private async writeDecode(seq: SequenceModel, index: number, gated = true): Promise<void> {
    const previous = seq.versions[index] ?? 0;
    const next = previous + 1;
    const data = await this.verifier.make(this.workload.seedOf(seq, index, next), this.rawBytes);
    // A rewrite refused for room must leave the block as it was: read that back before retrying
    // (in place, so that the read needs no room; outside the gate, which this write holds).
    const readBack = previous === 0 ? undefined : async () => {
      const r = await this.op('read', seq, (c) => c.readBlock(seq.id, index, { promote: false }), false);
      await this.check(seq, index, r, 'read after a rewrite refused by the full disk');
      this.t.refusedRewritesReadBack++;
    };
    // The model takes the new version when the write is sent and keeps it once it succeeds: a
    // write still waiting at the gate (to be admitted, or retried after DISK_FULL) has not
    // changed the block, and a sweep in between must expect the old version.
    await this.op('write', seq, async (c) => {
      seq.versions[index] = next;
      try {
        return await c.writeBlock(seq.id, index, data);
      } catch (err) {
        seq.versions[index] = previous;
        throw err;
      }
    }, gated, readBack);
    this.t.bytesWritten += data.length;
    this.note(seq, index, `written (version ${next})`);
  }

  private async readOne(seq: SequenceModel, index: number, promote: boolean): Promise<void> {
    const r = await this.op('read', seq, (c) => c.readBlock(seq.id, index, { promote }));
    await this.check(seq, index, r, promote ? 'read' : 'read in place');
  }

  // ---- a sequence's life -----------------------------------------------------------

  /** Creates the sequence and writes its prompt; false when there was no room for it. */
  private async prefill(seq: SequenceModel): Promise<boolean> {
    const hashes = this.workload.promptHashes(seq);
    let created: { attached: Array<{ index: number; blockId: number }> };
    try {
      created = await this.op('create', seq, (c) => c.createSequence({ id: seq.id, prefix: hashes }));
    } catch (err) {
      if (!FULL.has(codeOf(err))) throw err;
      // No room for another sequence now: it waits, as an engine queues a request.
      this.t.admissionWaits++;
      await sleep(100);
      return false;
    }
    this.live.add(seq);
    this.t.sequencesStarted++;
    for (const a of created.attached) {
      seq.blockIds[a.index] = a.blockId;
      this.note(seq, a.index, 'attached from the prefix cache');
    }
    seq.written = created.attached.length;
    this.t.attachedBlocks += created.attached.length;
    if (!(await this.grow(seq, seq.prompt.blocks - seq.written))) return true;
    while (seq.written < seq.prompt.blocks && !this.stopping) {
      const from = seq.written;
      const count = Math.min(this.o.batchBlocks, seq.prompt.blocks - from);
      const blocks = await Promise.all(Array.from({ length: count }, async (_, k) => ({
        index: from + k, data: await this.verifier.make(this.workload.seedOf(seq, from + k), this.rawBytes), tokens: this.workload.tokens(seq, from + k),
      })));
      const written = await this.op('writeBatch', seq, (c) => c.writeBlocks(seq.id, blocks));
      for (const w of written) {
        seq.blockIds[w.index] = w.blockId;
        if (w.deduplicated) this.t.deduplicated++;
        this.note(seq, w.index, w.deduplicated ? 'prompt block shared with a cached twin' : 'prompt block written and committed');
      }
      this.t.bytesWritten += count * this.rawBytes;
      seq.written += count;
    }
    return true;
  }

  /** Allocates `count` blocks; false when the ladder or the limits say no (the sequence ends early, as an engine preempts). */
  private async grow(seq: SequenceModel, count: number): Promise<boolean> {
    if (count <= 0) return true;
    try {
      const refs = await this.op('allocate', seq, (c) => c.allocate(seq.id, count));
      for (const r of refs) seq.blockIds[r.index] = r.blockId;
      return true;
    } catch (err) {
      if (!FULL.has(codeOf(err))) throw err;
      this.t.preempted++;
      return false;
    }
  }

  private async decode(seq: SequenceModel): Promise<void> {
    const w = this.workload;
    let due = performance.now();
    while (seq.written < seq.target && !this.stopping && seq.epoch === this.epoch) {
      if (this.o.stepMs > 0) {
        // The next step when the engine would take it; a late step does not bunch the next ones.
        due = Math.max(due + this.o.stepMs, performance.now());
        await sleep(due - performance.now());
      }
      const index = seq.written;
      if (!(await this.grow(seq, 1))) return;
      await this.writeDecode(seq, index);
      seq.written++;
      this.t.longestSequenceTokens = Math.max(this.t.longestSequenceTokens, seq.written * this.o.model.tokensPerBlock);
      // Now and then a decoded block is written again (a tail completed late, a rollback),
      // recent ones most often: many have moved down by then. While the disk is full, half
      // the steps do, so that rewrites refused for room are met often enough to check.
      if (w.uniform() < (this.diskFullArmed ? 0.5 : this.o.rewriteShare)) await this.writeDecode(seq, seq.written - 1 - w.zipfRank(seq.written - seq.prompt.blocks));
      for (let k = 0; k < this.o.readsPerStep; k++) {
        // Half the reads favour recent blocks, half a scattered hot set: both Zipf-skewed.
        const rank = w.zipfRank(seq.written);
        const i = w.uniform() < 0.5 ? seq.written - 1 - rank : (rank * 2654435761) % seq.written;
        await this.readOne(seq, i, w.uniform() < 0.9);
      }
      if (w.uniform() < this.o.readBatchShare) {
        const count = Math.min(seq.written, 2 + Math.floor(w.uniform() * 7));
        const start = Math.max(0, seq.written - count - w.zipfRank(seq.written));
        const indices = Array.from({ length: count }, (_, k) => start + k);
        const blocks = await this.op('readBatch', seq, (c) => c.readBlocks(seq.id, indices));
        await Promise.all(blocks.map((b) => this.check(seq, b.index, b, 'batch read')));
      }
    }
  }

  private async sequenceLife(): Promise<void> {
    const seq = this.workload.arrival(this.epoch);
    try {
      if (await this.prefill(seq)) await this.decode(seq);
    } catch (err) {
      // A write the ladder has no room for (every slot held by live blocks that cannot move,
      // as when a rewrite needs a second slot): the sequence ends, as an engine preempts.
      if (!FULL.has(codeOf(err))) throw err;
      this.t.preempted++;
    } finally {
      if (this.live.delete(seq) && seq.epoch === this.epoch && !this.restarting) {
        await this.op('free', seq, (c) => c.freeSequence(seq.id));
        this.workload.finish(seq);
        this.t.sequencesFinished++;
      }
    }
  }

  private async worker(): Promise<void> {
    while (!this.stopping) {
      try {
        await this.sequenceLife();
      } catch (err) {
        if (err === ABANDON) continue;
        if (!this.stopping) this.fail(`unexpected error: ${codeOf(err)}: ${(err as Error).message}`);
        return;
      }
    }
  }

  // ---- faults ------------------------------------------------------------------------

  private record(kind: FaultKind, at: number, ok: boolean, outcome: string, details: Record<string, unknown>): void {
    this.faultRecords.push({ kind, at, ok, outcome, details });
    this.o.log(`fault ${kind} at ${at.toFixed(1)} s: ${ok ? 'ok' : 'FAILED'}: ${outcome}`);
    if (!ok) this.fail(`fault ${kind}: ${outcome}`);
  }

  /** Reads back up to `per` written blocks of every live sequence: nothing may be lost or wrong. */
  private async sweep(per: number): Promise<number> {
    let checked = 0;
    for (const seq of this.live) {
      for (let k = 0; k < per && seq.written > 0; k++) {
        const index = Math.floor(this.workload.uniform() * seq.written);
        const r = await this.op('read', seq, (c) => c.readBlock(seq.id, index, { promote: false }), false);
        await this.check(seq, index, r, 'sweep read');
        checked++;
      }
    }
    return checked;
  }

  private async diskErrorsOnServer(kind: string): Promise<number> {
    const text = await this.client.metrics();
    const m = new RegExp(`^spillway_disk_errors_total\\{kind="${kind}"\\} (\\d+)`, 'm').exec(text);
    return m ? Number(m[1]) : 0;
  }

  private async armDiskFault(count: number): Promise<void> {
    const res = await fetch(`${this.server.url}/v1/faults/disk`, {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ op: 'write', error: 'ENOSPC', count }),
    });
    if (!res.ok) throw new Error(`arming the disk fault failed: HTTP ${res.status} ${await res.text()}`);
  }

  /** The disk refuses the next writes with ENOSPC while the workload runs on; afterwards nothing is lost. */
  private async diskFull(at: number): Promise<void> {
    const before = await this.diskErrorsOnServer('DISK_FULL');
    const seenBefore = this.t.faultErrors.DISK_FULL ?? 0;
    const lostBefore = (await this.client.status()).stats.lostBlocks;
    this.diskFullArmed = true;
    await this.armDiskFault(this.o.diskFullWrites);
    const deadline = Date.now() + 30_000;
    let failed = 0;
    while (Date.now() < deadline && !this.stopping) {
      failed = (await this.diskErrorsOnServer('DISK_FULL')) - before;
      if (failed >= this.o.diskFullWrites) break;
      await sleep(200);
    }
    await this.armDiskFault(0);
    await this.gate.drain();
    this.diskFullArmed = false;
    const seen = (this.t.faultErrors.DISK_FULL ?? 0) - seenBefore;
    const swept = await this.sweep(8);
    const lostAfter = (await this.client.status()).stats.lostBlocks;
    this.gate.reopen();
    const ok = failed > 0 && seen > 0 && lostAfter === lostBefore && !this.mismatch;
    this.record('disk-full', at, ok,
      ok ? `${failed} disk writes failed with ENOSPC; ${seen} requests were answered DISK_FULL (507) and succeeded when retried; ${swept} blocks read back intact, none lost`
        : `expected ENOSPC to surface as DISK_FULL and lose nothing: ${failed} disk writes failed, ${seen} requests saw DISK_FULL, lost blocks ${lostBefore} -> ${lostAfter}`,
      { diskWritesFailed: failed, requestsAnsweredDiskFull: seen, sweptBlocks: swept, lostBefore, lostAfter });
  }

  /** Slots of the slot file whose header names `blockId`. */
  private slotsHolding(blockId: number): number[] {
    const fd = openSync(this.diskPath, 'r');
    const header = Buffer.alloc(SLOT_ID_BYTES);
    const found: number[] = [];
    try {
      for (let slot = 0; slot < this.diskSlots; slot++) {
        readSync(fd, header, 0, SLOT_ID_BYTES, slot * this.slotBytes.disk!);
        if (slotBlockId(header) === blockId) found.push(slot);
      }
    } finally {
      closeSync(fd);
    }
    return found;
  }

  /** Flips one payload byte in each slot named; synced, so the server's O_DIRECT reads see it. */
  private corruptSlots(slots: number[]): void {
    const fd = openSync(this.diskPath, 'r+');
    const byte = Buffer.alloc(1);
    try {
      for (const slot of slots) {
        const at = slot * this.slotBytes.disk! + SLOT_PAYLOAD_OFFSET + 100;
        readSync(fd, byte, 0, 1, at);
        byte[0] = byte[0]! ^ 0x5a;
        writeSync(fd, byte, 0, 1, at);
      }
      fdatasyncSync(fd);
    } finally {
      closeSync(fd);
    }
  }

  /**
   * A block whose only copy is on disk has a byte of its slot flipped: reading it must
   * answer CHECKSUM_MISMATCH (or SLOT_MISMATCH), then BLOCK_LOST until it is written
   * again, never wrong bytes; written again, it reads back exact.
   */
  private async corrupt(at: number): Promise<void> {
    await this.gate.drain();
    try {
      const candidates = [...this.live].flatMap((seq) => {
        const own = Array.from({ length: Math.max(0, seq.written - seq.prompt.blocks) }, (_, k) => seq.prompt.blocks + k);
        return own.map((index) => ({ seq, index }));
      }).sort(() => this.workload.uniform() - 0.5).slice(0, 400);
      for (const { seq, index } of candidates) {
        const r = await this.op('read', seq, (c) => c.readBlock(seq.id, index, { promote: false }), false);
        await this.check(seq, index, r, 'read in place (looking for a block on disk only)');
        if (r.tier !== 'disk') continue;
        const blockId = seq.blockIds[index]!;
        const slots = this.slotsHolding(blockId);
        this.corruptSlots(slots);
        this.note(seq, index, `slot(s) ${slots.join(', ')} corrupted on disk`);
        const first = await this.expectFailure(seq, index);
        const second = await this.expectFailure(seq, index);
        const lost = (await this.client.status()).stats.lostBlocks;
        await this.writeDecode(seq, index, false);
        const back = await this.op('read', seq, (c) => c.readBlock(seq.id, index), false);
        await this.check(seq, index, back, 'read after rewriting the corrupted block');
        const lostAfter = (await this.client.status()).stats.lostBlocks;
        const ok = ['CHECKSUM_MISMATCH', 'SLOT_MISMATCH'].includes(first) && second === 'BLOCK_LOST' && lost >= 1 && lostAfter === lost - 1 && !this.mismatch;
        this.record('corrupt', at, ok,
          ok ? `block ${blockId} (${seq.id}#${index}, on disk only, slot ${slots.join(', ')}): first read ${first}, then ${second}, never data; written again it read back exact`
            : `expected CHECKSUM_MISMATCH or SLOT_MISMATCH then BLOCK_LOST: got ${first}, then ${second}; lost blocks ${lost} -> ${lostAfter}`,
          { blockId, sequence: seq.id, index, slots, firstRead: first, secondRead: second, lostBlocks: lost, lostAfterRewrite: lostAfter });
        return;
      }
      this.record('corrupt', at, false, `none of ${candidates.length} blocks looked at was on disk only: the tiers are too large for the load`, {});
    } finally {
      this.gate.reopen();
    }
  }

  /** Reads a block that must fail; returns the error code, or 'DATA' if bytes came back. */
  private async expectFailure(seq: SequenceModel, index: number): Promise<string> {
    try {
      await this.op('read', seq, (c) => c.readBlock(seq.id, index), false);
      this.note(seq, index, 'read of the corrupted block returned data');
      return 'DATA';
    } catch (err) {
      const code = codeOf(err);
      this.t.faultErrors[code] = (this.t.faultErrors[code] ?? 0) + 1;
      this.note(seq, index, `read of the corrupted block refused: ${code}`);
      return code;
    }
  }

  /**
   * SIGKILL under load, then a restart on the same configuration and slot file. The
   * committed blocks on disk at the kill come back (docs/ARCHITECTURE.md, "Warm restart"):
   * each prompt's leading run of them must be cached again and read back as written (within
   * the 4-bit bound); nothing else survives: no sequence, nothing in tiers 0 and 1, nothing lost.
   */
  private async kill(at: number): Promise<void> {
    const old = [...this.live].find((s) => s.written > 0);
    await this.countMoves();
    this.restarting = true;
    // No request in flight at the kill, so that what is on disk is what lookups said.
    await this.gate.drain();
    this.epoch++;
    const onDisk = await this.committedOnDisk();
    const t0 = performance.now();
    this.server.kill('SIGKILL');
    const exit = await this.server.exited;
    await this.startServer();
    const downMs = performance.now() - t0;
    const status = await this.client.status();
    const used = status.stats.tiers.map((t) => t.used);
    let oldSequence = 'none to ask for';
    if (old) {
      try {
        await this.client.readBlock(old.id, 0);
        oldSequence = 'still readable';
      } catch (err) {
        oldSequence = codeOf(err);
      }
    }
    const back = await this.readBackRecovered(onDisk);
    const expected = onDisk.reduce((n, c) => n + c.hashes.length, 0);
    this.live.clear();
    this.workload.forgetPrompts();
    this.restarting = false;
    const opsBefore = Object.values(this.t.ops).reduce((a, b) => a + b, 0);
    this.gate.reopen();
    // New work must be served: wait for some requests to complete on the new server.
    const deadline = Date.now() + 30_000;
    while (Object.values(this.t.ops).reduce((a, b) => a + b, 0) - opsBefore < 50 && Date.now() < deadline && !this.stopping) await sleep(100);
    const served = Object.values(this.t.ops).reduce((a, b) => a + b, 0) - opsBefore;
    const recovered = status.recovery?.recovered ?? 0;
    // Every memory tier empty (raw, quantized, and the host tier where there is one), the disk holding what was recovered.
    const clean = status.stats.sequences === 0 && used.slice(0, -1).every((n) => n === 0) && used[used.length - 1] === recovered && status.stats.lostBlocks === 0;
    const ok = exit.signal === 'SIGKILL' && clean && (oldSequence === 'SEQUENCE_NOT_FOUND' || !old) && back.found === expected && back.checked === back.found && served >= 50;
    this.record('kill', at, ok,
      ok ? `killed with SIGKILL under load; back in ${Math.round(downMs)} ms with ${recovered} committed blocks recovered from disk, ${back.found} of ${expected} prompt blocks on disk at the kill cached again and read back right; old sequence ${oldSequence}; ${served} requests served after`
        : `expected the committed blocks on disk back and nothing else: exit ${exit.signal ?? exit.code}, sequences ${status.stats.sequences}, slots used ${used.join('/')} with ${recovered} recovered, lost ${status.stats.lostBlocks}, old sequence ${oldSequence}, prompt blocks on disk at the kill ${expected}, cached again ${back.found}, read back right ${back.checked}, served ${served}`,
      { exit, downMs: Math.round(downMs), recovery: status.recovery, sequences: status.stats.sequences, slotsUsed: used, lostBlocks: status.stats.lostBlocks, oldSequence, promptBlocksOnDisk: expected, cachedAgain: back.found, readBack: back.checked, requestsServedAfter: served });
  }

  /** Each live prompt's leading committed blocks that are on disk now: what a kill must not lose. */
  private async committedOnDisk(): Promise<Array<{ seq: SequenceModel; hashes: string[] }>> {
    const chains: Array<{ seq: SequenceModel; hashes: string[] }> = [];
    for (const seq of this.live) {
      const hashes = this.workload.promptHashes(seq).slice(0, Math.min(seq.written, seq.prompt.blocks));
      if (hashes.length === 0) continue;
      const { cached } = await this.client.lookupPrefix({ hashes });
      const run = cached.findIndex((b) => b.tier !== 'disk');
      const onDisk = run < 0 ? cached.length : run;
      if (onDisk > 0) chains.push({ seq, hashes: hashes.slice(0, onDisk) });
    }
    return chains;
  }

  /** Attaches each chain on the restarted server and checks every block it reads back. */
  private async readBackRecovered(chains: Array<{ seq: SequenceModel; hashes: string[] }>): Promise<{ found: number; checked: number }> {
    let found = 0;
    let checked = 0;
    for (const [n, { seq, hashes }] of chains.entries()) {
      const id = `recovered-${this.epoch}-${n}`;
      const { attached } = await this.client.createSequence({ id, prefix: hashes });
      found += attached.length;
      for (const { index } of attached) {
        const mismatchesBefore = this.t.mismatches;
        await this.check(seq, index, await this.client.readBlock(id, index), 'read after the restart');
        if (this.t.mismatches === mismatchesBefore) checked++;
      }
      await this.client.freeSequence(id);
    }
    return { found, checked };
  }

  /** Adds the running server's move totals to those of servers before it. */
  private async countMoves(): Promise<void> {
    const { totals } = await this.client.telemetry();
    this.movesBefore.demotions += totals.demotions;
    this.movesBefore.promotions += totals.promotions;
    this.movesBefore.drops += totals.drops;
  }

  private async faultLoop(): Promise<void> {
    const plan = this.o.faults.map((kind) => ({ kind, offset: FAULT_AT[kind] * this.o.faultEveryS })).sort((a, b) => a.offset - b.offset);
    for (let cycle = 0; plan.length > 0; cycle++) {
      for (const { kind, offset } of plan) {
        const at = cycle * this.o.faultEveryS + offset;
        if (at >= this.o.durationS) return;
        while (this.now() < at && !this.stopping) await sleep(Math.min(500, (at - this.now()) * 1000));
        if (this.stopping) return;
        try {
          if (kind === 'kill') await this.kill(this.now());
          else if (kind === 'disk-full') await this.diskFull(this.now());
          else await this.corrupt(this.now());
        } catch (err) {
          this.restarting = false;
          this.gate.reopen();
          this.record(kind, this.now(), false, `the fault could not be carried out: ${codeOf(err)}: ${(err as Error).message}`, {});
        }
      }
    }
  }

  // ---- sampling ----------------------------------------------------------------------

  private async gpuMemory(): Promise<number | null> {
    if (!this.hasGpu) return null;
    try {
      const { stdout } = await promisify(execFile)('nvidia-smi', GPU_QUERY, { timeout: 5000 });
      return Number(stdout.trim()) * 2 ** 20;
    } catch {
      return null;
    }
  }

  private async sample(last: { t: number; checked: number }): Promise<void> {
    const t = this.now();
    const dt = Math.max(t - last.t, 1e-3);
    const window = this.window;
    this.window = Object.fromEntries(OPS.map((k) => [k, [] as number[]])) as Record<OpKind, number[]>;
    const s: Sample = {
      t, life: this.life,
      opsPerSecond: Object.fromEntries(OPS.map((k) => [k, window[k].length / dt])),
      p50Ms: Object.fromEntries(OPS.map((k) => [k, quantile(window[k], 0.5)])),
      p99Ms: Object.fromEntries(OPS.map((k) => [k, quantile(window[k], 0.99)])),
      readsChecked: this.t.readsChecked - last.checked,
      blocks: null, movesPerSecond: null, diskBytesPerSecond: null, rssBytes: null, openFds: null, fastTierBytes: null,
      gpuMemoryBytes: null, diskSlotBytes: null, diskFileBytes: null, liveBlocks: null, cachedBlocks: null, lostBlocks: null, sequences: null,
    };
    last.t = t;
    last.checked = this.t.readsChecked;
    if (!this.restarting) {
      try {
        const [tel, status, gpu] = await Promise.all([this.client.telemetry(), this.client.status(), this.gpuMemory()]);
        s.blocks = tel.blocks;
        s.movesPerSecond = tel.movesPerSecond;
        s.diskBytesPerSecond = tel.diskBytesPerSecond;
        s.rssBytes = this.server.rssBytes();
        s.openFds = this.server.openFds();
        // The memory tiers' bytes in use, host memory included (the RSS bound allows for them).
        s.fastTierBytes = tel.blocks.raw * this.slotBytes.raw! + tel.blocks.quantized * this.slotBytes.quantized! + (tel.blocks.host ?? 0) * (this.slotBytes.host ?? 0);
        s.gpuMemoryBytes = gpu;
        s.diskSlotBytes = tel.blocks.disk * this.slotBytes.disk!;
        s.diskFileBytes = statSync(this.diskPath).blocks * 512;
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

  private async sampleLoop(): Promise<void> {
    const last = { t: 0, checked: 0 };
    let next = this.o.sampleMs;
    while (!this.stopping) {
      await sleep(Math.max(0, next - (performance.now() - this.started)));
      next += this.o.sampleMs;
      if (this.stopping) break;
      await this.sample(last);
      const s = this.samples[this.samples.length - 1]!;
      if (this.samples.length % Math.max(1, Math.round(10_000 / this.o.sampleMs)) === 0) {
        const ops = Object.values(s.opsPerSecond).reduce((a, b) => a + b, 0);
        this.o.log(`${s.t.toFixed(0)} s: ${ops.toFixed(0)} ops/s, ${this.t.readsChecked} reads checked, blocks ${s.blocks ? `${s.blocks.raw}/${s.blocks.quantized}/${s.blocks.disk}` : '-'}, ` +
          `moves/s ${s.movesPerSecond ? `${s.movesPerSecond.demote.toFixed(0)} down ${s.movesPerSecond.promote.toFixed(0)} up` : '-'}, RSS ${s.rssBytes ? (s.rssBytes / 2 ** 20).toFixed(0) : '-'} MiB, fds ${s.openFds ?? '-'}`);
      }
    }
  }

  // ---- the run -----------------------------------------------------------------------

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

  async run(): Promise<SoakReport> {
    const startedAt = new Date().toISOString();
    this.writeConfig();
    await this.startServer();
    const status = await this.client.status();
    const cap = status.capacity;
    this.rawBytes = cap.rawBlockBytes;
    this.slotBytes = Object.fromEntries(cap.tiers.map((t) => [t.name, t.slotBytes]));
    this.diskSlots = cap.tiers[cap.tiers.length - 1]!.slots;
    this.diskPath = status.backend.disk.path;
    this.hasGpu = status.backend.name === 'gpu';
    const quant = status.config.quantization as { keyBits: number; valueBits: number };
    if (quant.keyBits !== 4 || quant.valueBits !== 4) throw new Error('the soak checks quantized reads against the 4-bit bound: run it with 4-bit keys and values');
    this.o.log(`server ${this.server.url} (pid ${this.server.pid}), backend ${status.backend.name}: ${status.backend.reason}`);
    this.o.log(`slots ${cap.tiers.map((t) => `${t.name} ${t.slots}`).join(', ')}; ${this.o.sequences} sequences of ${this.o.workload.minTokens}-${this.o.workload.maxTokens} tokens; faults: ${this.o.faults.join(', ') || 'none'}`);

    const workers = Array.from({ length: this.o.sequences }, () => this.worker());
    const sampler = this.sampleLoop();
    const faults = this.faultLoop();
    while (!this.stopping && this.now() < this.o.durationS) await sleep(Math.min(250, (this.o.durationS - this.now()) * 1000));
    this.stopping = true;
    await Promise.all([...workers, sampler, faults]);
    const durationS = this.now();
    await this.countMoves();
    const metrics = await this.client.metrics();
    const storeMs = histogramQuantiles(metrics, 'spillway_operation_seconds', (l) => l.op);
    const serverMs = histogramQuantiles(metrics, 'spillway_http_request_seconds', (l) => (BLOCK_ROUTES.has(l.route!) ? `${l.method} ${l.route}` : undefined));
    this.eventsAbort.abort();
    this.restarting = true;
    this.server.kill('SIGTERM');
    await this.server.exited;

    const leak = {
      rss: this.judge((s) => s.rssBytes, this.o.rss),
      fds: this.judge((s) => s.openFds, this.o.fds),
      gpuMemory: this.hasGpu ? this.judge((s) => s.gpuMemoryBytes, this.o.gpuMemory) : null,
    };
    if (!leak.rss.ok) this.failures.push(`server RSS: ${leak.rss.note}`);
    if (!leak.fds.ok) this.failures.push(`server file descriptors: ${leak.fds.note}`);
    if (leak.gpuMemory && !leak.gpuMemory.ok) this.failures.push(`GPU memory: ${leak.gpuMemory.note}`);
    for (const kind of this.o.faults) {
      if (FAULT_AT[kind] * this.o.faultEveryS < durationS && !this.faultRecords.some((f) => f.kind === kind)) this.failures.push(`fault ${kind} was due but did not run`);
    }
    const totalOps = Object.values(this.t.ops).reduce((a, b) => a + b, 0);
    if (this.t.readsChecked === 0) this.failures.push('no read was checked');
    const { log: _log, ...options } = this.o;
    return {
      passed: this.failures.length === 0,
      failures: this.failures,
      startedAt,
      durationS,
      options,
      server: { backend: status.backend.name, reason: status.backend.reason, paths: status.backend.paths, capacity: cap, restarts: this.life - 1 },
      totals: {
        ...this.t,
        ops: this.t.ops,
        opsPerSecond: totalOps / durationS,
        bound: FOUR_BIT_BOUND,
        moves: this.movesBefore,
      },
      latencyMs: Object.fromEntries(OPS.map((k) => [k, { count: this.latency[k].count, p50: this.latency[k].quantile(0.5), p99: this.latency[k].quantile(0.99) }])),
      storeMs,
      serverMs,
      leak,
      faults: this.faultRecords,
      mismatch: this.mismatch,
      samples: this.samples,
    };
  }

  /** Ends what the run started, however it ended. */
  async dispose(): Promise<void> {
    this.stopping = true;
    this.eventsAbort.abort();
    // Undefined when the server never started.
    (this.server as ServerProcess | undefined)?.kill('SIGKILL');
    await this.verifier.close();
  }
}

export async function runSoak(options: SoakOptions): Promise<SoakReport> {
  const soak = new Soak(options);
  try {
    return await soak.run();
  } finally {
    await soak.dispose();
  }
}
