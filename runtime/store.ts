/**
 * The tiered KV block store: sequences own ordered lists of blocks, committed blocks are
 * shared through the prefix index, and zero-copy leases hold blocks in tier 0. Where a
 * block's bytes live, and how they move between tiers, is the ladder's (runtime/ladder.ts):
 * down under pressure, up when read.
 *
 * Invariants (checked by `checkInvariants`, exercised by the property test):
 * - A block's bytes are in one of two states. Exact: only a raw copy, holding what was
 *   written. Quantized: quantized copies (in any memory tier and/or on disk, all the same
 *   bytes) are the truth, and a raw copy in tier 0, if any, is their dequantized cache. So
 *   quantization error never accumulates, and a block whose quantized form is already
 *   below is not written again.
 * - Every used slot belongs to exactly one live block, or is in transit to one; every
 *   free slot to none.
 * - A pinned block stays where it is: its top copy never moves (clean copies below it may
 *   go). Reference counts never go negative; a block referenced by a sequence is never
 *   dropped.
 * - One operation at a time touches a block's slots (BlockLock); evictors pass over busy
 *   and pinned blocks.
 * - Zero-copy: a block acquired under a lease has a tier-0 slot and one pin per lease
 *   holding it, so its slot is never moved or reused until every lease has released it
 *   (or expired); a block no sequence references any more is dropped only then.
 */
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { Counter } from 'prom-client';
import type { Backend, BackendDescription, RawPoolExport } from './backends/backend.js';
import type { Config } from './config.js';
import { DTYPE_BYTES } from './dtype.js';
import { errors, SpillwayError, type ErrorCode } from './errors.js';
import { Ladder, type LadderBlock, type OpContext } from './ladder.js';
import { computeLayout, type Layout, type TierIndex, type TierName } from './layout.js';
import { LeaseManager, type LeaseInfo } from './leases.js';
import { BlockLock, Semaphore } from './lock.js';
import { blockHash, ROOT_HASH } from './prefix.js';
import type { RecoveredBlock, RecoveryReport } from './recovery-report.js';
import { FETCH_WINDOW, type SharedTier, type SharedTierStatus } from './shared-tier.js';
import { Telemetry } from './telemetry.js';

interface Block extends LadderBlock {
  owners: Set<string>;
  hash: string | null;
  written: boolean;
  /** Its only copy failed verification; reads fail until it is written again. */
  lost: boolean;
  dead: boolean;
  /** Zero-copy leases holding the block in tier 0; each also counts one pin. */
  leases: Set<string>;
}

interface Sequence {
  id: string;
  blocks: Block[];
}

export interface Limits {
  maxTokensPerSequence: number;
  maxLiveSequences: number;
  maxTotalTokens: number;
}

export interface ReadOptions {
  /** Move the block into tier 0 (default), or read it where it is. */
  promote?: boolean;
  /** 'raw' (default) returns the block's raw layout; 'stored' returns the bytes as held. */
  format?: 'raw' | 'stored';
  /**
   * A buffer of one raw block that a raw read fills and answers with, so that a caller
   * reusing its buffers allocates nothing per read; unused by a 'stored' read.
   */
  into?: Buffer;
}

export interface ReadResult {
  data: Buffer;
  /** The tier the bytes were found in. */
  tier: TierName;
  /** Whether the block is now in tier 0 (false when not asked, or when the ladder is full). */
  promoted: boolean;
  format: 'raw' | 'quantized';
  /** Whether the data went through quantization (within the quantizer's error bound). */
  lossy: boolean;
}

export interface BlockRef {
  index: number;
  blockId: number;
}

/** Tier 0 for an engine on the same GPU: the IPC handle and how to address blocks in it. */
export interface PoolExport extends RawPoolExport {
  dtype: Config['model']['dtype'];
  elementBytes: number;
  /** The raw block layout: [layer][kv: 0 = K, 1 = V][kv_head][token][head_dim]. */
  shape: [number, number, number, number, number];
  layers: number;
  kvHeads: number;
  tokensPerBlock: number;
  headDim: number;
}

export interface AcquireResult {
  /** The block's tier-0 slot: bytes [slot * slotBytes, (slot + 1) * slotBytes) of the pool. */
  slot: number;
  blockId: number;
  /** Whether the slot holds the block's data; false: a new block, for the engine to write in place. */
  written: boolean;
  /** Whether the data went through quantization (within the quantizer's error bound). */
  lossy: boolean;
  /** The tier the block was found in; null for a block not yet written. */
  tier: TierName | null;
  /** Whether it was brought up into tier 0 for this call. */
  promoted: boolean;
  pins: number;
}

export interface ReleaseResult {
  blockId: number;
  pins: number;
  written: boolean;
  /** Bumped by a release with written: true, as by a write. */
  generation: number;
}

/** One entry of a batch answer: the operation's result, or the error that entry alone met, under its key. */
export type BatchEntry<T, Key extends keyof T> = T | (Pick<T, Key> & { error: { code: ErrorCode; message: string } });
type AcquireEntry = BatchEntry<AcquireResult & { index: number }, 'index'>;

function entryError(err: unknown): { code: ErrorCode; message: string } {
  return err instanceof SpillwayError ? { code: err.code, message: err.message } : { code: 'INTERNAL', message: String((err as Error)?.message ?? err) };
}

const SEQUENCE_ID = /^[A-Za-z0-9._:-]{1,128}$/;
/** Longest random pause before an acquire that met busy blocks tries again. */
const RETRY_JITTER_MS = 2;
/** Most acquires of batches in flight at once, all batches together (fewer where tier 1 is small). */
const MAX_ACQUIRES_IN_FLIGHT = 256;

export class BlockStore {
  readonly config: Config;
  readonly layout: Layout;
  readonly telemetry = new Telemetry();
  private readonly backend: Backend;
  private readonly ladder: Ladder;
  private readonly blocks = new Map<number, Block>();
  private readonly sequences = new Map<string, Sequence>();
  private readonly prefixIndex = new Map<string, Block>();
  private limitsNow: Limits;
  private nextBlockId = 1;
  private nextSequenceId = 1;
  private liveBlocks = 0;
  private closed = false;
  private readonly leases = new LeaseManager((id, held) => {
    this.leasesExpired.inc();
    void this.releaseLeaseHolds(id, held);
  });
  /**
   * The acquires of every batch in flight at once, in the order they came: enough to keep
   * the disk's queue and the coalesced dequantizations full, few enough that the blocks on
   * their way up through tier 1 do not crowd it and wait out eviction.waitMs behind one
   * another (an acquire's wait starts when it gets through).
   */
  private readonly batchWindow: Semaphore;
  /** What the recovery of the disk tier found when the store opened (runtime/recovery.ts). */
  recovery: RecoveryReport | null = null;
  /** Committed blocks shared with other servers (runtime/shared-tier.ts); null when not configured. */
  private shared: SharedTier | null = null;
  private readonly leasesExpired = new Counter({
    name: 'spillway_zero_copy_leases_expired_total', help: 'Zero-copy leases that expired holding blocks or not', registers: [this.telemetry.registry],
  });

  constructor(config: Config, backend: Backend, layout: Layout = computeLayout(config)) {
    this.config = config;
    this.layout = layout;
    this.backend = backend;
    if (layout.tiers[0]!.slots < 1 || layout.tiers[1]!.slots < 1) {
      throw errors.tiersTooSmall(layout.rawBlockBytes, layout.quantizedBlockBytes);
    }
    const { policy, waitMs, reserve } = config.eviction;
    this.ladder = new Ladder({ layout, backend, telemetry: this.telemetry, policy, waitMs, reserve });
    this.ladder.serve({
      block: (id) => this.blocks.get(id),
      drop: (b, fromTier) => this.dropBlock(b as Block, fromTier),
      lose: (b) => this.markLost(b as Block),
    });
    this.limitsNow = this.validateLimits(config.limits);
    this.batchWindow = new Semaphore(Math.max(1, Math.min(MAX_ACQUIRES_IN_FLIGHT, Math.floor(layout.tiers[1]!.slots / 2))));
  }

  // ---- sequences and blocks -------------------------------------------------------------

  /** Creates a sequence, attaching the leading blocks of `prefix` (block hashes) that are cached. */
  createSequence(id?: string, prefix: string[] = []): { id: string; attached: BlockRef[] } {
    this.assertOpen();
    if (this.sequences.size >= this.limitsNow.maxLiveSequences) {
      throw errors.liveSequenceLimit(this.limitsNow.maxLiveSequences);
    }
    const seqId = id ?? `seq-${this.nextSequenceId++}`;
    if (!SEQUENCE_ID.test(seqId)) {
      throw errors.badSequenceId();
    }
    if (this.sequences.has(seqId)) throw errors.sequenceExists(seqId);
    const cached = this.cachedPrefix(prefix);
    this.checkGrowth(0, cached.filter((b) => b.owners.size === 0).length, cached.length);
    const seq: Sequence = { id: seqId, blocks: [] };
    for (const b of cached) this.attach(b, seq);
    this.sequences.set(seqId, seq);
    return { id: seqId, attached: seq.blocks.map((b, index) => ({ index, blockId: b.id })) };
  }

  /**
   * Adopts the committed blocks a restart found on disk (runtime/recovery.ts) into a store
   * that holds nothing yet: disk-only, committed, cached and referenced by no sequence, as
   * blocks cached before the restart were. They keep the ids and generations their slot
   * headers carry, so reads verify their slots as any; new blocks are numbered after them.
   */
  adoptRecovered(found: RecoveredBlock[]): void {
    if (this.blocks.size > 0) throw errors.recoveryIntoNonEmptyStore();
    const placed = found.map((f) => {
      const b = this.newBlock(f.id);
      Object.assign(b, { generation: f.generation, hash: f.hash, written: true });
      this.prefixIndex.set(f.hash, b);
      this.nextBlockId = Math.max(this.nextBlockId, f.id + 1);
      return { block: b, tier: this.ladder.bottom, slot: f.diskSlot };
    });
    this.ladder.adopt(placed);
  }

  /** Reserves `count` new blocks at the end of a sequence. They take no slot until written. */
  allocate(sequenceId: string, count: number): BlockRef[] {
    this.assertOpen();
    const seq = this.sequence(sequenceId);
    if (!Number.isInteger(count) || count < 1) {
      throw errors.badCount();
    }
    this.checkGrowth(seq.blocks.length, count, count);
    const refs: BlockRef[] = [];
    for (let i = 0; i < count; i++) {
      const b = this.newBlock();
      this.attach(b, seq);
      refs.push({ index: seq.blocks.length - 1, blockId: b.id });
    }
    this.telemetry.allocations.inc(count);
    return refs;
  }

  /**
   * Writes a block's raw bytes. With `tokens`, the block is committed to the prefix cache
   * under hash(parent, tokens) and becomes immutable; if that prefix is already cached,
   * the sequence shares the cached block instead and no bytes are stored twice.
   */
  async write(sequenceId: string, index: number, data: Uint8Array, tokens?: number[]): Promise<{ blockId: number; hash: string | null; deduplicated: boolean }> {
    this.assertOpen();
    const seq = this.sequence(sequenceId);
    const b = this.blockAt(seq, index);
    if (data.byteLength !== this.layout.rawBlockBytes) {
      throw errors.wrongBlockSize(this.layout.rawBlockBytes, data.byteLength);
    }
    const hash = tokens === undefined ? null : blockHash(this.parentHash(seq, index), this.checkTokens(tokens));
    const started = performance.now();
    // A block without a tier-0 copy needs a slot, taken before the block's lock (and its
    // lower copies) is held: a writer that waits for room then holds nothing another
    // waiting writer could need, so every wait points down the ladder (docs/ARCHITECTURE.md).
    let slot: number | null = null;
    const attempt = () => this.withBlock(b, async () => {
      if (b.hash !== null || b.owners.size > 1) {
        throw errors.immutableInSequence(sequenceId, index, b.hash !== null);
      }
      const cached = hash === null ? undefined : this.prefixIndex.get(hash);
      if (cached && cached !== b) {
        this.replaceInSequence(seq, index, b, cached);
        return { blockId: cached.id, hash, deduplicated: true };
      }
      if (b.copies[0] === null) {
        if (slot === null) return null;
        this.ladder.place(b, 0, slot);
        slot = null;
      }
      // The lower copies go only now: a write refused for room (DISK_FULL, TIER_BUSY) leaves the block as it was.
      this.ladder.releaseQuantized(b);
      await this.backend.writeRaw(b.copies[0]!, data);
      b.generation++;
      b.written = true;
      b.exact = true;
      b.lost = false;
      this.ladder.touch(b);
      if (hash !== null) {
        b.hash = hash;
        this.prefixIndex.set(hash, b);
        this.shared?.publishLater(hash, data);
      }
      this.telemetry.writes.inc();
      this.telemetry.opSeconds.observe({ op: 'write' }, (performance.now() - started) / 1000);
      return { blockId: b.id, hash, deduplicated: false };
    });
    try {
      const done = await attempt();
      if (done !== null) return done;
      slot = await this.rawSlotForWrite(b);
      // Not null: the slot is used, or goes back if the block went into tier 0 meanwhile.
      return (await attempt())!;
    } finally {
      if (slot !== null) this.ladder.returnSlot(0, slot);
    }
  }

  /**
   * A tier-0 slot for a write of `b`, taken without holding its lock. When the ladder is
   * full and only the block's own lower copies can make room, those copies are given up
   * first (the block reads as not written until the write lands): a rewrite never fails
   * for room that the block itself holds.
   */
  private async rawSlotForWrite(b: Block): Promise<number> {
    try {
      return await this.ladder.acquireSlot(0, { held: new Set(), wait: true });
    } catch (err) {
      if ((err as { code?: ErrorCode }).code !== 'CAPACITY_EXCEEDED') throw err;
      const gaveUp = await this.withBlock(b, async () => {
        if (b.copies[0] !== null || !this.ladder.hasQuantizedCopy(b) || b.pins > 0) return false;
        this.ladder.releaseQuantized(b);
        b.written = false;
        b.generation++;
        return true;
      });
      if (!gaveUp) throw err;
      return this.ladder.acquireSlot(0, { held: new Set(), wait: true });
    }
  }

  /** Reads a block: by default promoting it into tier 0 and returning its raw bytes. */
  async read(sequenceId: string, index: number, options: ReadOptions = {}): Promise<ReadResult> {
    this.assertOpen();
    const b = this.blockAt(this.sequence(sequenceId), index);
    return this.readBlock(b, options);
  }

  /** Reads a block by id (as returned by prefix lookups). */
  async readById(blockId: number, options: ReadOptions = {}): Promise<ReadResult> {
    this.assertOpen();
    const b = this.blocks.get(blockId);
    if (!b) throw errors.blockNotFound(blockId);
    return this.readBlock(b, options);
  }

  /** A pinned block is never moved or evicted until unpinned as often as it was pinned. */
  pin(sequenceId: string, index: number): { pins: number } {
    this.assertOpen();
    const b = this.blockAt(this.sequence(sequenceId), index);
    b.pins++;
    return { pins: b.pins };
  }

  unpin(sequenceId: string, index: number): { pins: number } {
    this.assertOpen();
    const b = this.blockAt(this.sequence(sequenceId), index);
    // A zero-copy lease's pin is undone only by its release, never by an unpin.
    if (b.pins === b.leases.size) {
      throw errors.notPinned(sequenceId, index, b.leases.size > 0);
    }
    b.pins--;
    this.ladder.notifyProgress();
    return { pins: b.pins };
  }

  /**
   * Frees a sequence. Its blocks lose a reference; a block no one references is released,
   * unless it is committed to the prefix cache, where it stays (evictable) for reuse.
   */
  freeSequence(sequenceId: string): { released: number; cached: number } {
    this.assertOpen();
    const seq = this.sequence(sequenceId);
    this.sequences.delete(sequenceId);
    let released = 0;
    let cached = 0;
    for (const b of seq.blocks) {
      if (!b.owners.delete(seq.id) || b.owners.size > 0) continue;
      this.liveBlocks--;
      // Explicit pins go with the sequence; a zero-copy lease keeps its pin until released.
      b.pins = b.leases.size;
      if (b.hash !== null && b.written && !b.lost) {
        cached++;
      } else {
        released++;
        void this.dropWhenIdle(b);
      }
    }
    this.telemetry.frees.inc(released);
    this.ladder.notifyProgress();
    return { released, cached };
  }

  /** Consults `shared` after the prefix index from now on (openStore, when tiers.shared.path is set). */
  useSharedTier(shared: SharedTier): void {
    this.shared = shared;
  }

  sharedStatus(): SharedTierStatus | null {
    return this.shared?.describe() ?? null;
  }

  /**
   * Brings the blocks of a hash chain that follow the locally cached ones in from the
   * shared tier, in order, until the first it lacks: each becomes a committed, cached block
   * with a tier-1 copy of the file's stored bytes. Answers how many came in. Prefix
   * lookups and attaches call it first, so that they see what other servers committed.
   */
  async pullShared(hashes: string[]): Promise<number> {
    this.assertOpen();
    const shared = this.shared;
    if (!shared) return 0;
    // No more than the ladder holds: the first ones would be dropped for the last.
    const wanted = hashes.slice(this.cachedPrefix(hashes).length, this.layout.totalBlocks);
    let pulled = 0;
    for (let start = 0; start < wanted.length; start += FETCH_WINDOW) {
      const window = wanted.slice(start, start + FETCH_WINDOW);
      const found = await Promise.all(window.map((h) => (this.prefixIndex.has(h) ? null : shared.fetch(h))));
      for (const [i, hash] of window.entries()) {
        const stored = found[i];
        if (!this.prefixIndex.has(hash)) {
          if (!stored || !(await this.adoptShared(hash, stored))) return pulled;
        }
        pulled++;
      }
    }
    return pulled;
  }

  /** A block of a file from the shared tier, cached with a tier-1 copy; false where no room could be made. */
  private async adoptShared(hash: string, stored: Buffer): Promise<boolean> {
    const b = this.newBlock();
    b.hash = hash;
    try {
      await this.ladder.placeStored(b, stored);
    } catch (err) {
      b.dead = true;
      this.blocks.delete(b.id);
      const code = (err as { code?: ErrorCode }).code;
      if (code === 'CAPACITY_EXCEEDED' || code === 'TIER_BUSY') return false;
      throw err;
    }
    // Another pull of the same prefix may have won meanwhile: one block per hash.
    if (this.prefixIndex.has(hash)) {
      this.dropBlock(b);
      return true;
    }
    b.generation = 1;
    b.written = true;
    this.prefixIndex.set(hash, b);
    this.ladder.touch(b);
    return true;
  }

  /** The leading blocks of a hash chain that are cached, and where each one is now. */
  lookupPrefix(hashes: string[]): Array<{ hash: string; blockId: number; tier: TierName }> {
    this.assertOpen();
    const found = this.cachedPrefix(hashes);
    this.telemetry.prefixLookups.inc({ result: 'hit' }, found.length);
    this.telemetry.prefixLookups.inc({ result: 'miss' }, hashes.length - found.length);
    return found.map((b) => ({ hash: b.hash!, blockId: b.id, tier: this.layout.tiers[this.ladder.top(b)]!.name }));
  }

  // ---- zero-copy access ---------------------------------------------------------------

  /** Tier 0 as a CUDA IPC handle with its geometry; NO_DEVICE_MEMORY where tier 0 is host memory. */
  exportPool(): PoolExport {
    this.assertOpen();
    const e = this.backend.exportRaw?.();
    if (!e) {
      const name = this.backend.describe().name;
      throw errors.noDeviceMemory(name);
    }
    const m = this.config.model;
    return {
      ...e, dtype: m.dtype, elementBytes: DTYPE_BYTES[m.dtype], shape: [m.layers, 2, m.kvHeads, m.tokensPerBlock, m.headDim],
      layers: m.layers, kvHeads: m.kvHeads, tokensPerBlock: m.tokensPerBlock, headDim: m.headDim,
    };
  }

  /** Opens a lease for zero-copy acquisitions: renewed by heartbeat() or any call naming it. */
  createLease(client: string, ttlMs?: number): LeaseInfo {
    this.assertOpen();
    return this.leases.create(client, ttlMs);
  }

  heartbeat(lease: string): LeaseInfo {
    this.assertOpen();
    return this.leases.touch(lease);
  }

  /** Ends a lease, releasing every block it holds (as a release without written). */
  async endLease(lease: string): Promise<{ released: number }> {
    this.assertOpen();
    return { released: await this.releaseLeaseHolds(lease, this.leases.end(lease)) };
  }

  /**
   * Makes a block resident in tier 0 and pins it under `lease`, returning its slot. A
   * written block is promoted (filled from disk and dequantized as needed); a block not
   * yet written gets a tier-0 slot for the engine to write in place, and becomes written
   * when released with `written: true`. Like a write, it waits up to eviction.waitMs for
   * a slot while every candidate is busy, but without holding the block's lock meanwhile.
   * Acquiring a block the lease already holds answers the same slot and adds no pin.
   * The answer comes once the data is in the slot: each backend operation completes on
   * the device before it resolves.
   */
  async acquire(lease: string, sequenceId: string, index: number): Promise<AcquireResult> {
    this.assertOpen();
    this.leases.touch(lease);
    const b = this.blockAt(this.sequence(sequenceId), index);
    const started = performance.now();
    const deadline = Date.now() + this.config.eviction.waitMs;
    for (;;) {
      try {
        const result = await this.withBlock(b, (ctx) => this.acquireLocked(b, lease, ctx));
        this.telemetry.opSeconds.observe({ op: 'acquire' }, (performance.now() - started) / 1000);
        return result;
      } catch (err) {
        if ((err as { code?: ErrorCode }).code !== 'TIER_BUSY' || Date.now() >= deadline) throw err;
      }
      // Acquires that found each other's blocks busy would retry in lockstep and find them busy
      // again: a random pause after the progress breaks the tie.
      await this.ladder.waitForProgress(deadline);
      await sleep(Math.random() * RETRY_JITTER_MS);
    }
  }

  /**
   * Lets go of a block acquired under `lease`, by the id acquire answered (so a block
   * whose sequence was freed, or whose index now names a shared twin, can still be
   * released). With `written: true` the slot's contents become the block's bytes, as a
   * write of them would: exact, a new generation, lower copies dropped. A block committed
   * to the prefix cache or shared cannot be written (BLOCK_IMMUTABLE; the lease keeps it
   * until released without written). A lease that expired has lost its holds: its
   * releases answer LEASE_NOT_FOUND and its writes are not taken.
   */
  async release(lease: string, blockId: number, options: { written?: boolean } = {}): Promise<ReleaseResult> {
    this.assertOpen();
    this.leases.touch(lease);
    const b = this.heldBlock(lease, blockId);
    return this.withBlock(b, async () => {
      // Checked again under the lock: the lease may have expired, or the hold been released, meanwhile.
      this.leases.touch(lease);
      this.heldBlock(lease, blockId);
      if (options.written) {
        if (b.hash !== null || b.owners.size > 1) {
          throw errors.immutableUnderLease(blockId, b.hash !== null);
        }
        this.ladder.releaseQuantized(b);
        b.generation++;
        b.written = true;
        b.exact = true;
        b.lost = false;
        this.ladder.touch(b);
        this.telemetry.writes.inc();
      }
      this.unhold(b, lease, false);
      return { blockId: b.id, pins: b.pins, written: b.written, generation: b.generation };
    });
  }

  /**
   * Acquires many blocks of a sequence under one lease, as one pipeline: every block's
   * promotion runs at once (disk reads in flight together, dequantizations coalesced by
   * the backend, the evictions that make room overlapped with the fills), and the answer
   * comes when every block is in its slot. A block that fails (lost, corrupt, no room) is
   * reported in its entry without failing the rest. A batch larger than tier 0 can hold
   * for this lease now is refused up front, saying how many fit.
   */
  async acquireMany(lease: string, sequenceId: string, indices: number[]): Promise<AcquireEntry[]> {
    this.assertOpen();
    this.leases.touch(lease);
    const seq = this.sequence(sequenceId);
    indices.forEach((index, k) => this.blockAt(seq, index, `indices.${k}`));
    const batch = new Set(indices.map((i) => seq.blocks[i]!.id));
    const fit = this.tier0Room(batch);
    if (batch.size > fit) {
      throw errors.leaseDoesNotFit(batch.size, fit, this.ladder.size(0));
    }
    return Promise.all(indices.map(async (index) => {
      await this.batchWindow.acquire();
      try {
        return { index, ...(await this.acquire(lease, sequenceId, index)) };
      } catch (err) {
        return { index, error: entryError(err) };
      } finally {
        this.batchWindow.release();
      }
    }));
  }

  /** Releases many blocks held under one lease; each entry answers for itself. */
  async releaseMany(lease: string, blocks: Array<{ blockId: number; written?: boolean }>): Promise<BatchEntry<ReleaseResult, 'blockId'>[]> {
    this.assertOpen();
    this.leases.touch(lease);
    return Promise.all(blocks.map(({ blockId, written }) => this.release(lease, blockId, { written }).catch(
      (err: unknown) => ({ blockId, error: entryError(err) }),
    )));
  }

  /**
   * Creates a sequence with the cached leading blocks of `prefix` attached and `allocate`
   * new blocks after them, and acquires them all under the lease: an engine's "restore
   * this prefix and give me room to continue" in one call.
   */
  async attachAndAcquire(lease: string, prefix: string[], allocate = 0, id?: string): Promise<{ id: string; attached: number; blocks: AcquireEntry[] }> {
    this.assertOpen();
    this.leases.touch(lease);
    await this.pullShared(prefix);
    const cached = this.cachedPrefix(prefix);
    const fit = this.tier0Room(new Set(cached.map((b) => b.id)));
    const attached = cached.length;
    if (attached + allocate > fit) {
      throw errors.leaseAllocationDoesNotFit(attached, allocate, fit);
    }
    const created = this.createSequence(id, prefix);
    if (allocate > 0) {
      try {
        this.allocate(created.id, allocate);
      } catch (err) {
        this.freeSequence(created.id);
        throw err;
      }
    }
    const blocks = await this.acquireMany(lease, created.id, Array.from({ length: attached + allocate }, (_, i) => i));
    return { id: created.id, attached, blocks };
  }

  // ---- limits, capacity and stats ----------------------------------------------------

  get limits(): Limits {
    return { ...this.limitsNow };
  }

  /** Changes context limits at run time; each must fit the ladder's capacity. */
  setLimits(changes: Partial<Limits>): Limits {
    this.limitsNow = this.validateLimits({ ...this.limitsNow, ...changes });
    return this.limits;
  }

  capacity() {
    const { tiers, totalBlocks, totalTokens, tokensPerBlock, rawBlockBytes, quantizedBlockBytes, compressionRatio } = this.layout;
    return {
      tokensPerBlock, rawBlockBytes, quantizedBlockBytes, compressionRatio, totalBlocks, totalTokens,
      tiers: tiers.map((t) => ({ name: t.name, slots: t.slots, slotBytes: t.slotBytes, bytes: t.bytes, tokens: t.tokens })),
    };
  }

  /** Live sequences and tokens and slots in use per tier, without walking every block as stats() does. */
  occupancy(): { sequences: number; liveTokens: number; slotsUsed: number[] } {
    return { sequences: this.sequences.size, liveTokens: this.liveBlocks * this.layout.tokensPerBlock, slotsUsed: this.ladder.slotsUsed() };
  }

  /** Disk operations in flight now; cheap enough to ask on every request (stats() is not). */
  get diskQueueDepth(): number {
    return this.ladder.diskQueueDepth;
  }

  describeBackend(): BackendDescription {
    return this.backend.describe();
  }

  stats() {
    let pinned = 0;
    let cached = 0;
    let lost = 0;
    let leased = 0;
    for (const b of this.blocks.values()) {
      if (b.pins > 0) pinned++;
      if (b.owners.size === 0 && b.hash !== null) cached++;
      if (b.lost) lost++;
      if (b.leases.size > 0) leased++;
    }
    const used = this.ladder.slotsUsed();
    return {
      sequences: this.sequences.size,
      blocks: this.blocks.size,
      liveBlocks: this.liveBlocks,
      cachedBlocks: cached,
      pinnedBlocks: pinned,
      lostBlocks: lost,
      leases: this.leases.size,
      leasedBlocks: leased,
      liveTokens: this.liveBlocks * this.layout.tokensPerBlock,
      diskInFlight: this.ladder.diskQueueDepth,
      tiers: this.layout.tiers.map(({ name, slots }, i) => ({ name, slots, used: used[i]!, free: slots - used[i]!, reserve: this.ladder.reserve[i]! })),
    };
  }

  /** Resolves once no background eviction (keeping the tiers' reserves) is in flight: what a test waits for before it looks. */
  idle(): Promise<void> {
    return this.ladder.idle();
  }

  /** Test seam: the next `count` disk reads or writes fail with `errno`. */
  injectDiskFault(op: 'read' | 'write', errno: number, count: number): void {
    this.backend.injectDiskFault(op, errno, count);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.leases.close();
    await this.shared?.settle();
    await this.ladder.settle();
    await this.ladder.drainDisk();
    await this.backend.close();
  }

  /** Throws if any invariant in the header comment is broken. For tests. */
  checkInvariants(): void {
    const fail = (msg: string): never => {
      throw new Error(`store invariant broken: ${msg}`);
    };
    let live = 0;
    for (const b of this.blocks.values()) {
      if (b.dead) fail(`dead block ${b.id} is still listed`);
      if (b.owners.size > 0) live++;
      if (b.pins < 0) fail(`block ${b.id} has negative pins`);
      if (b.pins < b.leases.size) fail(`block ${b.id} has ${b.pins} pins for ${b.leases.size} leases`);
      if (b.leases.size > 0 && b.copies[0] === null) fail(`block ${b.id} is held by a lease without a tier-0 slot`);
      if (b.exact && (b.copies[0] === null || this.ladder.hasQuantizedCopy(b))) fail(`exact block ${b.id} has copies ${b.copies.join('/')}`);
      if (b.written && !b.exact && !b.lost && !this.ladder.hasQuantizedCopy(b)) fail(`quantized block ${b.id} has no quantized copy`);
      if (b.owners.size === 0 && b.hash === null && !b.lock.locked && b.leases.size === 0) fail(`unreferenced uncached block ${b.id} was not released`);
    }
    if (live !== this.liveBlocks) fail(`live block count ${this.liveBlocks}, counted ${live}`);
    for (const { lease, blockId } of this.leases.holdings()) {
      if (!this.blocks.get(blockId)?.leases.has(lease)) fail(`lease ${lease} holds block ${blockId}, which is gone or does not know it`);
    }
    this.ladder.checkSlots(this.blocks.values(), fail);
  }

  // ---- zero-copy internals ----------------------------------------------------------

  private async acquireLocked(b: Block, lease: string, ctx: OpContext): Promise<AcquireResult> {
    this.leases.touch(lease); // it may have expired while the lock was awaited
    if (b.lost) throw errors.blockLost(b.id);
    const found = b.written ? this.ladder.top(b) : null;
    if (b.copies[0] === null) {
      if (b.written) await this.ladder.promoteToRaw(b, ctx);
      else this.ladder.place(b, 0, await this.ladder.acquireSlot(0, ctx));
    }
    // The lease may have expired while the block was brought up: then an unwritten block
    // gives back the slot no one holds (a written one keeps it, as a promoted cache).
    if (!this.leases.has(lease) && !b.written && b.pins === 0) this.ladder.releaseCopies(b, [0]);
    this.leases.touch(lease);
    if (!b.leases.has(lease)) {
      b.leases.add(lease);
      b.pins++;
      this.leases.hold(lease, b.id);
    }
    this.ladder.touch(b);
    return {
      slot: b.copies[0]!, blockId: b.id, written: b.written, lossy: b.written && !b.exact,
      tier: found === null ? null : this.layout.tiers[found]!.name, promoted: found !== null && found > 0, pins: b.pins,
    };
  }

  /**
   * Drops one lease's hold on a block; the caller holds its lock. A block not written
   * gives its slot back once no one holds it; an abandoned hold (lease ended or expired)
   * also drops the raw cache of a quantized block, which the engine may have scribbled
   * on, since the quantized truth stays below.
   */
  private unhold(b: Block, lease: string, abandoned: boolean): void {
    if (!b.leases.delete(lease)) return;
    b.pins--;
    this.leases.unhold(lease, b.id);
    if (b.pins === 0 && b.copies[0] !== null && (!b.written || (abandoned && !b.exact && !b.lost))) this.ladder.releaseCopies(b, [0]);
    if (b.owners.size === 0 && b.leases.size === 0 && (b.hash === null || b.lost || !b.written)) this.dropBlock(b);
    this.ladder.notifyProgress();
  }

  /** How many blocks a batch could hold in tier 0 at once now: every slot but those pinned by blocks outside it. */
  private tier0Room(batch: Set<number>): number {
    let pinnedOutside = 0;
    for (const id of this.ladder.candidates(0)) {
      const b = this.blocks.get(id);
      if (b && !batch.has(id) && this.ladder.pinnedHere(b, 0)) pinnedOutside++;
    }
    return this.ladder.size(0) - pinnedOutside;
  }

  private heldBlock(lease: string, blockId: number): Block {
    const b = this.blocks.get(blockId);
    if (!b?.leases.has(lease)) {
      throw errors.notHeldByLease(blockId, lease);
    }
    return b;
  }

  /** Releases the holds of a lease that ended or expired. */
  private async releaseLeaseHolds(lease: string, blockIds: number[]): Promise<number> {
    let released = 0;
    for (const id of blockIds) {
      const b = this.blocks.get(id);
      if (!b) continue;
      await b.lock.acquire();
      try {
        if (!b.dead && b.leases.has(lease)) {
          this.unhold(b, lease, true);
          released++;
        }
      } finally {
        b.lock.release();
        this.ladder.notifyProgress();
      }
    }
    return released;
  }

  // ---- reading ------------------------------------------------------------------------

  private async readBlock(b: Block, options: ReadOptions): Promise<ReadResult> {
    const promote = options.promote ?? true;
    const format = options.format ?? 'raw';
    const started = performance.now();
    const result = await this.withBlock(b, async (ctx) => {
      if (b.lost) throw errors.blockLost(b.id);
      if (!b.written) throw errors.blockNotWritten(b.id);
      const found = this.ladder.top(b);
      const tier = this.layout.tiers[found]!.name;
      this.telemetry.hits.inc({ tier });
      for (let t = 0; t < found; t++) this.telemetry.misses.inc({ tier: this.layout.tiers[t]!.name });
      const lossy = !b.exact;
      if (format === 'stored' && found > 0) {
        return { data: await this.ladder.storedBytes(b), tier, promoted: false, format: 'quantized' as const, lossy };
      }
      if (promote && found > 0) {
        try {
          await this.ladder.promoteToRaw(b, ctx);
        } catch (err) {
          const code = (err as SpillwayError).code;
          if (code !== 'CAPACITY_EXCEEDED' && code !== 'TIER_BUSY') throw err;
        }
      }
      const raw = b.copies[0] ?? null;
      const { into } = options;
      const data = raw !== null ? await this.backend.readRaw(raw, into) : await this.backend.dequantizeBytes(await this.ladder.storedBytes(b), into);
      this.ladder.touch(b);
      return { data, tier, promoted: found > 0 && raw !== null, format: 'raw' as const, lossy };
    });
    this.telemetry.opSeconds.observe({ op: 'read' }, (performance.now() - started) / 1000);
    return result;
  }

  /** The block's only copy is bad: free its slot and leave it unreadable until rewritten. */
  private markLost(b: Block): void {
    this.ladder.releaseAll(b);
    b.lost = true;
    if (b.hash !== null && this.prefixIndex.get(b.hash) === b) this.prefixIndex.delete(b.hash);
    b.hash = null;
  }

  /** Releases every slot of a block no one references. The caller holds its lock. */
  private dropBlock(b: Block, fromTier: TierIndex = this.ladder.top(b)): void {
    const from = this.layout.tiers[fromTier]!.name;
    this.ladder.releaseAll(b);
    if (b.hash !== null && this.prefixIndex.get(b.hash) === b) this.prefixIndex.delete(b.hash);
    b.dead = true;
    this.blocks.delete(b.id);
    this.telemetry.recordMove({ kind: 'drop', blockId: b.id, sequences: [], from, to: 'none', bytes: 0, durationMs: 0, copied: false });
  }

  private async dropWhenIdle(b: Block): Promise<void> {
    await b.lock.acquire();
    try {
      if (!b.dead && b.owners.size === 0 && b.leases.size === 0 && (b.hash === null || b.lost || !b.written)) this.dropBlock(b);
    } finally {
      b.lock.release();
      this.ladder.notifyProgress();
    }
  }

  // ---- helpers ------------------------------------------------------------------------

  /** Runs `fn` holding `b`'s lock; whatever it does under the lock never waits for room. */
  private async withBlock<T>(b: Block, fn: (ctx: OpContext) => Promise<T>): Promise<T> {
    await b.lock.acquire();
    try {
      if (b.dead) throw errors.blockReleased(b.id);
      return await fn({ held: new Set([b.id]), wait: false });
    } finally {
      b.lock.release();
      this.ladder.notifyProgress();
    }
  }

  private newBlock(id = this.nextBlockId++): Block {
    const b: Block = {
      id, generation: 0, owners: new Set(), pins: 0, hash: null, written: false, exact: false,
      lost: false, copies: this.ladder.noCopies(), lock: new BlockLock(), dead: false, leases: new Set(),
    };
    this.blocks.set(b.id, b);
    return b;
  }

  private attach(b: Block, seq: Sequence): void {
    if (b.owners.size === 0) this.liveBlocks++;
    b.owners.add(seq.id);
    seq.blocks.push(b);
  }

  /** Points a sequence's block at a cached twin, releasing the sequence's own block. */
  private replaceInSequence(seq: Sequence, index: number, own: Block, cached: Block): void {
    own.owners.delete(seq.id);
    if (own.owners.size === 0) this.liveBlocks--;
    if (cached.owners.size === 0) this.liveBlocks++;
    cached.owners.add(seq.id);
    seq.blocks[index] = cached;
    // A block a zero-copy lease still holds is dropped when the lease lets go of it.
    if (own.owners.size === 0 && own.leases.size === 0) this.dropBlock(own);
  }

  private sequence(id: string): Sequence {
    const seq = this.sequences.get(id);
    if (!seq) throw errors.sequenceNotFound(id);
    return seq;
  }

  private blockAt(seq: Sequence, index: number, field = 'index'): Block {
    const b = Number.isInteger(index) && index >= 0 ? seq.blocks[index] : undefined;
    if (!b) {
      throw errors.noBlockAt(seq.id, seq.blocks.length, index, field);
    }
    return b;
  }

  private parentHash(seq: Sequence, index: number): string {
    if (index === 0) return ROOT_HASH;
    const parent = seq.blocks[index - 1];
    if (!parent?.hash) {
      throw errors.parentNotCommitted(seq.id, index);
    }
    return parent.hash;
  }

  private checkTokens(tokens: number[]): number[] {
    const n = this.layout.tokensPerBlock;
    if (tokens.length !== n || !tokens.every((t) => Number.isInteger(t) && t >= 0 && t <= 0xffffffff)) {
      throw errors.badTokens(n);
    }
    return tokens;
  }

  private cachedPrefix(hashes: string[]): Block[] {
    const found: Block[] = [];
    for (const h of hashes) {
      const b = this.prefixIndex.get(h);
      if (!b || b.dead || b.lost) break;
      found.push(b);
    }
    return found;
  }

  /** Checks a sequence growing by `count` blocks, `newLive` of which become live. */
  private checkGrowth(currentBlocks: number, newLive: number, count: number): void {
    const tpb = this.layout.tokensPerBlock;
    const l = this.limitsNow;
    const seqTokens = (currentBlocks + count) * tpb;
    if (seqTokens > l.maxTokensPerSequence) {
      throw errors.sequenceTokenLimit(seqTokens, l.maxTokensPerSequence, Math.max(0, Math.floor(l.maxTokensPerSequence / tpb) - currentBlocks));
    }
    const totalTokens = (this.liveBlocks + newLive) * tpb;
    if (totalTokens > l.maxTotalTokens) {
      throw errors.totalTokenLimit(totalTokens, l.maxTotalTokens, Math.max(0, Math.floor(l.maxTotalTokens / tpb) - this.liveBlocks));
    }
    // Live blocks (written or only reserved) must fit the ladder; cached blocks no one
    // references are dropped from the bottom tier to make room.
    if (this.liveBlocks + newLive > this.layout.totalBlocks) {
      throw errors.ladderFull(this.layout.totalBlocks, this.liveBlocks);
    }
  }

  private validateLimits(limits: Limits): Limits {
    const cap = this.layout.totalTokens;
    for (const [field, value] of Object.entries(limits)) {
      if (!Number.isInteger(value) || value < 1) {
        throw errors.badLimit(field);
      }
    }
    return {
      maxLiveSequences: limits.maxLiveSequences,
      // Token limits past the ladder's capacity mean "as much as fits".
      maxTokensPerSequence: Math.min(limits.maxTokensPerSequence, cap),
      maxTotalTokens: Math.min(limits.maxTotalTokens, cap),
    };
  }

  private assertOpen(): void {
    if (this.closed) throw errors.storeClosed();
  }
}
