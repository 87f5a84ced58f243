/**
 * The long-context soak: a server in its own process, driven over HTTP by many concurrent
 * sequences (workload.ts) while every read is checked against content recomputed from its
 * seed, the server's memory, descriptors and tiers are sampled, and faults are injected:
 * a full disk, a corrupted slot, a killed server. docs/SOAK.md says what passes.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { SpillwayClient } from '../../api/client.js';
import type { ConfigInput } from '../../runtime/config.js';
import { FOUR_BIT_BOUND } from '../block-content.js';
import { ServerProcess } from '../../api/process.js';
import { ClientThreads } from './client-threads.js';
import { FAULT_AT, Faults, type FaultKind, type FaultRecord } from './faults.js';
import { Gate } from './gate.js';
import { ABANDON, codeOf, OPS, writtenBefore, type OpKind } from './operations.js';
import { BLOCK_ROUTES, histogramQuantiles, Sampler, type LeakVerdicts, type OperationQuantiles, type Sample } from './sampling.js';
import { LatencyHistogram, lateness, loopDelayMonitor, type GrowthRule, type LoopLateness } from './stats.js';
import { Verifier } from './verifier.js';
import { SequenceModel, Workload, type WorkloadOptions } from './workload.js';

export interface SoakOptions {
  durationS: number;
  /** Sequences live at once (one engine request loop each). */
  sequences: number;
  workload: Omit<WorkloadOptions, 'tokensPerBlock'>;
  model: { layers: number; kvHeads: number; headDim: number; tokensPerBlock: number; dtype: 'bf16' };
  /** host: the host tier, or none where absent. */
  tiers: { raw: string; quantized: string; host?: string; disk: string };
  /** The server's `eviction.reserve` (free slots kept ahead of demand); its default where absent. */
  reserve?: number;
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
  /** Threads that send the load's requests (client-threads.ts); 0 sends them from the harness's own thread. */
  clientThreads: number;
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
  /** More flags for the server's node, after its own (V8 settings to compare). */
  serverNodeArgs?: string[];
  log: (line: string) => void;
}

/** Answers that mean "not now": the request is retried after a pause. */
const RETRY = new Set(['TIER_BUSY', 'BUSY']);
/** Answers that mean "no room": a new sequence waits, a growing one ends early. */
const FULL = new Set(['CAPACITY_EXCEEDED', 'LIMIT_EXCEEDED']);
const HISTORY = 200_000;
/** The most blocks a decode step's batch read asks for. */
const MAX_BATCH_READ = 8;

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
  latencyMs: Record<string, OperationQuantiles>;
  /**
   * The same from `steadyFromS` on: once the first wave of sequences has written its
   * prompts. All of them start at once and prefill together, a burst of batch writes into a
   * cold cache that the churn after it never sees again; later arrivals' prefills count.
   */
  steadyLatencyMs: Record<string, OperationQuantiles>;
  steadyFromS: number | null;
  /**
   * The store's own time per operation (spillway_operation_seconds, the server's last life):
   * the upper bound of the histogram bucket holding the quantile, without HTTP or queueing.
   */
  storeMs: Record<string, OperationQuantiles>;
  /** The same for the block routes' requests, from arrival to answer, as the server timed them. */
  serverMs: Record<string, OperationQuantiles>;
  /** The same for block moves, by kind and tiers (from the server's spillway_move_seconds). */
  moveMs: Record<string, OperationQuantiles>;
  /** The same for the addon's tasks, by phase (spillway_native_task_seconds). */
  nativeMs: Record<string, OperationQuantiles>;
  /** The same for the server's garbage collection pauses, by kind (spillway_gc_seconds). */
  gcMs: Record<string, OperationQuantiles>;
  /**
   * How late the harness's own event loop ran its callbacks: a latency above is measured
   * from the harness's side, so its own delays are in it.
   */
  harnessLoopDelayMs: LoopLateness;
  /** The client threads' own, the last server life's (none without client threads). */
  clientThreadsLoopDelayMs: LoopLateness[];
  leak: LeakVerdicts;
  faults: FaultRecord[];
  mismatch: Record<string, unknown> | null;
  samples: Sample[];
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

/**
 * The harness: the server's lives, the sequences driving it and every read's check. Its
 * Faults and its Sampler read and steer it through the members left public.
 */
export class Soak {
  readonly o: SoakOptions;
  readonly workload: Workload;
  readonly gate = new Gate();
  readonly live = new Set<SequenceModel>();
  private readonly history = new Ring();
  private readonly moves = new Ring();
  private readonly configPath: string;
  private readonly logPath: string;
  server!: ServerProcess;
  /** Control, sampling and the faults' own requests. */
  client!: SpillwayClient;
  /** The load's requests, on their own threads where configured. */
  private requests: ClientThreads | undefined;
  private rawBytes = 0;
  /** Bytes of a slot, by tier name. */
  slotBytes: Record<string, number> = {};
  diskSlots = 0;
  diskPath = '';
  epoch = 0;
  life = 0;
  restarting = false;
  stopping = false;
  readonly started = performance.now();
  private readonly failures: string[] = [];
  mismatch: Record<string, unknown> | null = null;
  private readonly faults = new Faults(this);
  private readonly sampler = new Sampler(this);
  private readonly eventsAbort = new AbortController();
  hasGpu = false;
  private readonly verifier = new Verifier();
  private readonly loopDelay = loopDelayMonitor();
  readonly t = {
    ops: Object.fromEntries(OPS.map((k) => [k, 0])) as Record<OpKind, number>,
    readsChecked: 0, readsExact: 0, readsLossy: 0, maxRelativeError: 0, mismatches: 0,
    retries: {} as Record<string, number>, faultErrors: {} as Record<string, number>,
    sequencesStarted: 0, sequencesFinished: 0, preempted: 0, admissionWaits: 0, refusedRewritesReadBack: 0, deduplicated: 0, attachedBlocks: 0,
    longestSequenceTokens: 0, bytesWritten: 0, bytesRead: 0,
  };
  private readonly latency = histograms();
  private readonly steadyLatency = histograms();
  /** Prefills of the first wave still to finish; the steady state starts when none is left. */
  private firstWave: number;
  private steadyFrom: number | null = null;
  /** Moves counted by servers already gone (a restarted server counts from zero). */
  private readonly movesBefore = { demotions: 0, promotions: 0, drops: 0 };
  /** While the disk-full fault is armed, DISK_FULL answers are expected and retried. */
  diskFullArmed = false;

  constructor(o: SoakOptions) {
    this.o = o;
    this.workload = new Workload({ ...o.workload, tokensPerBlock: o.model.tokensPerBlock });
    this.firstWave = o.sequences;
    this.configPath = join(o.dir, 'soak-config.json');
    this.logPath = join(o.dir, 'server.log');
  }

  now(): number {
    return (performance.now() - this.started) / 1000;
  }

  fail(message: string): void {
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
      ...(this.o.reserve === undefined ? {} : { eviction: { reserve: this.o.reserve } }),
      backend: this.o.backend,
      server: { host: '127.0.0.1', port: 0, faults: this.o.faults.includes('disk-full') },
    };
    writeFileSync(this.configPath, JSON.stringify(config, null, 2));
  }

  async startServer(): Promise<void> {
    const nodeArgs = [...(this.o.serverProfileDir ? ['--cpu-prof', '--cpu-prof-dir', this.o.serverProfileDir] : []), ...(this.o.serverNodeArgs ?? [])];
    this.server = await ServerProcess.start({ args: ['--config', this.configPath], logPath: this.logPath, nodeArgs });
    // The last life's connections: that server is gone.
    (this.client as SpillwayClient | undefined)?.close();
    this.client = new SpillwayClient({ baseUrl: this.server.url });
    await this.requests?.close();
    this.requests = this.o.clientThreads > 0 ? new ClientThreads({ baseUrl: this.server.url }, this.o.clientThreads) : undefined;
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
  async op<T>(kind: OpKind, seq: SequenceModel, fn: (client: SpillwayClient) => Promise<T>, gated = true, onFull?: () => Promise<void>): Promise<T> {
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
        const result = await fn(this.requests?.client ?? this.client);
        const ms = performance.now() - t0;
        this.t.ops[kind]++;
        this.latency[kind].add(ms);
        if (this.steadyFrom !== null) this.steadyLatency[kind].add(ms);
        this.sampler.observe(kind, ms);
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

  note(seq: SequenceModel, index: number, what: string): void {
    this.history.push(`${this.now().toFixed(3)}s ${seq.id}#${index} block ${seq.blockIds[index] ?? '?'}: ${what}`);
  }

  /** Checks one block read against its seed; a wrong one stops the run with its history. */
  async check(seq: SequenceModel, index: number, r: { data: Uint8Array; tier: string; lossy: boolean; promoted: boolean }, how: string): Promise<void> {
    const bytes = r.data.byteLength;
    const error = await this.verifier.checkBlock(this.workload.seedOf(seq, index), this.rawBytes, r.data);
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
  async writeDecode(seq: SequenceModel, index: number, gated = true): Promise<void> {
    const previous = seq.versions[index] ?? 0;
    const next = previous + 1;
    const block = await this.verifier.makeBlock(this.workload.seedOf(seq, index, next), this.rawBytes);
    const data = block.data;
    // A rewrite refused for room must leave the block as it was: read that back before retrying
    // (in place, so that the read needs no room; outside the gate, which this write holds).
    const readBack = previous === 0 ? undefined : async () => {
      const r = await this.op('read', seq, (c) => c.readBlock(seq.id, index, { promote: false }), false);
      await this.check(seq, index, r, 'read after a rewrite refused by the full disk');
      this.t.refusedRewritesReadBack++;
    };
    try {
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
    } finally {
      block.release();
    }
    this.t.bytesWritten += data.length;
    this.note(seq, index, `written (version ${next})`);
  }

  /** Room for a batch read's answer of `blocks` raw blocks: their bytes and each entry's msgpack fields. */
  private batchAnswerBytes(blocks: number): number {
    return blocks * (this.rawBytes + 1024) + 1024;
  }

  private async readOne(seq: SequenceModel, index: number, promote: boolean): Promise<void> {
    const into = this.verifier.block(this.rawBytes);
    try {
      const r = await this.op('read', seq, (c) => c.readBlock(seq.id, index, { promote, into: into.data }));
      await this.check(seq, index, r, promote ? 'read' : 'read in place');
    } finally {
      into.release();
    }
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
      // Made in shared slots and sent from them (the batch body references its blocks), held until answered.
      const made = await Promise.all(Array.from({ length: count }, (_, k) => this.verifier.makeBlock(this.workload.seedOf(seq, from + k), this.rawBytes)));
      try {
        const blocks = made.map((b, k) => ({ index: from + k, data: b.data, tokens: this.workload.tokens(seq, from + k) }));
        // A batch refused part way (DISK_FULL while that fault is armed) has written and
        // committed the entries before the failing one, which a retry must not send again.
        let done = 0;
        const written = await this.op('writeBatch', seq, async (c) => {
          try {
            return await c.writeBlocks(seq.id, blocks.slice(done));
          } catch (err) {
            const before = writtenBefore(err);
            for (let k = done; k < done + before; k++) this.note(seq, from + k, 'prompt block written and committed by a batch refused after it');
            done += before;
            throw err;
          }
        });
        for (const w of written) {
          seq.blockIds[w.index] = w.blockId;
          if (w.deduplicated) this.t.deduplicated++;
          this.note(seq, w.index, w.deduplicated ? 'prompt block shared with a cached twin' : 'prompt block written and committed');
        }
      } finally {
        for (const b of made) b.release();
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
        const count = Math.min(seq.written, 2 + Math.floor(w.uniform() * (MAX_BATCH_READ - 1)));
        const start = Math.max(0, seq.written - count - w.zipfRank(seq.written));
        const indices = Array.from({ length: count }, (_, k) => start + k);
        // The answer is read into a shared area and its blocks checked where they lie in it.
        const area = this.verifier.area(this.batchAnswerBytes(count));
        try {
          const blocks = await this.op('readBatch', seq, (c) => c.readBlocks(seq.id, indices, { into: area.data }));
          await Promise.all(blocks.map((b) => this.check(seq, b.index, b, 'batch read')));
        } finally {
          area.release();
        }
      }
    }
  }

  private async sequenceLife(): Promise<void> {
    const seq = this.workload.arrival(this.epoch);
    try {
      const admitted = await this.prefill(seq).finally(() => this.prefillEnded());
      if (admitted) await this.decode(seq);
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

  private prefillEnded(): void {
    if (this.firstWave > 0 && --this.firstWave === 0) this.steadyFrom = this.now();
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

  // ---- the run -----------------------------------------------------------------------

  /** Adds the running server's move totals to those of servers before it. */
  async countMoves(): Promise<void> {
    const { totals } = await this.client.telemetry();
    this.movesBefore.demotions += totals.demotions;
    this.movesBefore.promotions += totals.promotions;
    this.movesBefore.drops += totals.drops;
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
    // Block buffers for what each sequence does at once (a prompt batch, or a decode step's
    // write or read), and some to spare; areas for the batch reads of a quarter of them.
    await this.verifier.share(this.rawBytes, this.o.sequences * this.o.batchBlocks + 8, Math.ceil(this.o.sequences / 4), this.batchAnswerBytes(MAX_BATCH_READ));
    this.hasGpu = status.backend.name === 'gpu';
    const quant = status.config.quantization as { keyBits: number; valueBits: number };
    if (quant.keyBits !== 4 || quant.valueBits !== 4) throw new Error('the soak checks quantized reads against the 4-bit bound: run it with 4-bit keys and values');
    this.o.log(`server ${this.server.url} (pid ${this.server.pid}), backend ${status.backend.name}: ${status.backend.reason}`);
    this.o.log(`slots ${cap.tiers.map((t) => `${t.name} ${t.slots}`).join(', ')}; ${this.o.sequences} sequences of ${this.o.workload.minTokens}-${this.o.workload.maxTokens} tokens; faults: ${this.o.faults.join(', ') || 'none'}`);

    this.loopDelay.enable();
    const workers = Array.from({ length: this.o.sequences }, () => this.worker());
    const sampler = this.sampler.loop();
    const faults = this.faults.loop();
    while (!this.stopping && this.now() < this.o.durationS) await sleep(Math.min(250, (this.o.durationS - this.now()) * 1000));
    this.stopping = true;
    await Promise.all([...workers, sampler, faults]);
    this.loopDelay.disable();
    const clientThreadsLate = (await this.requests?.lateness()) ?? [];
    const durationS = this.now();
    await this.countMoves();
    const metrics = await this.client.metrics();
    const storeMs = histogramQuantiles(metrics, 'spillway_operation_seconds', (l) => l.op);
    const serverMs = histogramQuantiles(metrics, 'spillway_http_request_seconds', (l) => (BLOCK_ROUTES.has(l.route!) ? `${l.method} ${l.route}` : undefined));
    const moveMs = histogramQuantiles(metrics, 'spillway_move_seconds', (l) => `${l.kind} ${l.from}->${l.to}`);
    const nativeMs = histogramQuantiles(metrics, 'spillway_native_task_seconds', (l) => l.phase);
    const gcMs = histogramQuantiles(metrics, 'spillway_gc_seconds', (l) => l.kind);
    this.eventsAbort.abort();
    this.restarting = true;
    this.server.kill('SIGTERM');
    await this.server.exited;

    const leak = this.sampler.leaks();
    if (!leak.rss.ok) this.failures.push(`server RSS: ${leak.rss.note}`);
    if (!leak.fds.ok) this.failures.push(`server file descriptors: ${leak.fds.note}`);
    if (leak.gpuMemory && !leak.gpuMemory.ok) this.failures.push(`GPU memory: ${leak.gpuMemory.note}`);
    for (const kind of this.o.faults) {
      if (FAULT_AT[kind] * this.o.faultEveryS < durationS && !this.faults.records.some((f) => f.kind === kind)) this.failures.push(`fault ${kind} was due but did not run`);
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
      latencyMs: quantilesOf(this.latency),
      steadyLatencyMs: quantilesOf(this.steadyLatency),
      steadyFromS: this.steadyFrom,
      storeMs,
      serverMs,
      moveMs,
      nativeMs,
      gcMs,
      harnessLoopDelayMs: lateness(this.loopDelay),
      clientThreadsLoopDelayMs: clientThreadsLate,
      leak,
      faults: this.faults.records,
      mismatch: this.mismatch,
      samples: this.sampler.samples,
    };
  }

  /** Ends what the run started, however it ended. */
  async dispose(): Promise<void> {
    this.stopping = true;
    this.eventsAbort.abort();
    // Undefined when the server never started.
    (this.server as ServerProcess | undefined)?.kill('SIGKILL');
    (this.client as SpillwayClient | undefined)?.close();
    await this.requests?.close();
    await this.verifier.close();
  }
}

function histograms(): Record<OpKind, LatencyHistogram> {
  return Object.fromEntries(OPS.map((k) => [k, new LatencyHistogram()])) as Record<OpKind, LatencyHistogram>;
}

function quantilesOf(h: Record<OpKind, LatencyHistogram>): Record<string, OperationQuantiles> {
  return Object.fromEntries(OPS.map((k) => [k, { count: h[k].count, p50: h[k].quantile(0.5), p99: h[k].quantile(0.99) }]));
}

export async function runSoak(options: SoakOptions): Promise<SoakReport> {
  const soak = new Soak(options);
  try {
    return await soak.run();
  } finally {
    await soak.dispose();
  }
}
