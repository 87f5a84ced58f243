/**
 * The tier ladder: where each block's copies live and how they move. Tiers come from the
 * layout, top to bottom: raw blocks in tier 0, then quantized blocks in memory (tier 1
 * next to tier 0, then the host tier where configured), then disk slots. What a move does
 * follows from the kinds of the two tiers, so a tier is added by configuration:
 *
 *   raw -> quantized: quantize        quantized -> raw: dequantize (from tier 1)
 *   quantized -> quantized: copy      disk -> quantized: fill (verified)
 *   quantized -> disk: spill          disk -> (gone): drop
 *
 * Blocks move down one tier at a time when a slot above is needed (eviction) and come
 * up to tier 0 through tier 1 when read (promotion). The ladder owns the slot pools, the
 * eviction policies, the slots in transit and the waits for progress; the store owns what
 * blocks mean (sequences, prefixes, leases) and tells the ladder which blocks may move.
 */
import { performance } from 'node:perf_hooks';
import { Gauge } from 'prom-client';
import type { Backend } from './backends/backend.js';
import { errors, type ErrorCode } from './errors.js';
import type { Layout, TierIndex, TierLayout } from './layout.js';
import type { BlockLock } from './lock.js';
import { createPolicy, type EvictionPolicy } from './policy.js';
import { SlotPool } from './slots.js';
import type { MoveKind, Telemetry } from './telemetry.js';

/** What the ladder knows of a block: its copies and what decides whether they may move. */
export interface LadderBlock {
  readonly id: number;
  /** Bumped on every write; disk slots carry it so that stale bytes are refused. */
  generation: number;
  /** The block's slot in each tier, by tier index; null where it has no copy there. */
  readonly copies: Array<number | null>;
  /** The raw copy is exactly what was written (never quantized), and the only copy. */
  exact: boolean;
  /** Pins by sequences and by zero-copy leases: a pinned block is never dropped, even with no owner left. */
  pins: number;
  /** Sequences referencing it: a referenced block is never dropped. */
  readonly owners: ReadonlySet<string>;
  /** A committed block's prefix hash: disk slots carry it so that a restart can recover the block. */
  readonly hash: string | null;
  readonly lock: BlockLock;
}

/**
 * What an operation holds and may do. `held`: blocks it has locked, which evictions it
 * triggers must pass over. `wait`: whether it may wait for busy blocks to free a slot.
 * Only a write's search for its tier-0 slot waits, holding no block of its own (its chain
 * of waits points strictly down the ladder); an operation holding a block's lock never
 * waits, so that no cycle of waits can form (docs/ARCHITECTURE.md, "Concurrency").
 */
export interface OpContext {
  held: Set<number>;
  wait: boolean;
}

/** What the ladder asks of the store that owns the blocks. */
export interface LadderOwner {
  block(id: number): LadderBlock | undefined;
  /** `b` is only cache and has no room left below: release it (its copies and its prefix entry). */
  drop(b: LadderBlock, fromTier: TierIndex): void;
  /** `b`'s only quantized copy failed verification on disk. */
  lose(b: LadderBlock): void;
}

export interface LadderOptions {
  layout: Layout;
  backend: Backend;
  telemetry: Telemetry;
  policy: 'lru' | 'fifo';
  /** How long an operation that may wait waits for in-flight moves to free a slot. */
  waitMs: number;
  /** The fraction of each tier above the disk kept free ahead of demand (see reclaimAhead). */
  reserve: number;
}

/**
 * No sequence references the block and nothing pins it: a lease may hold a block whose
 * sequences were all freed, and its slot must outlive them until the lease lets go.
 */
function onlyCache(b: LadderBlock): boolean {
  return b.owners.size === 0 && b.pins === 0;
}

/**
 * Background evictions in flight per tier. One: the tiers' own evictions already overlap
 * down the ladder, and four held block locks and cores that reads needed (the soak's read
 * p99 rose with them; docs/SOAK.md, "Free slots ahead of demand").
 */
const RECLAIMS_IN_FLIGHT = 1;
/**
 * Candidates a background eviction looks at, least recently used first. It runs on every slot
 * taken and lock released while a tier is short; in a tier full of pinned or busy blocks a
 * scan of the whole tier each time would cost quadratic time for nothing.
 */
const RECLAIM_SCAN = 64;

export class Ladder {
  readonly tiers: readonly TierLayout[];
  /** The disk tier's index: the bottom of the ladder. */
  readonly bottom: TierIndex;
  private readonly backend: Backend;
  private readonly telemetry: Telemetry;
  private readonly waitMs: number;
  private readonly pools: SlotPool[];
  private readonly policies: EvictionPolicy[];
  /**
   * Slots in transit per tier: handed out by acquireSlot (free, or freed by an eviction)
   * and not yet listed in the tier's policy. Such a slot holds no victim yet, but will
   * soon, so a tier whose only unlisted slots are in transit is busy, not full.
   */
  private readonly inTransit: number[];
  private progressWaiters: Array<() => void> = [];
  /**
   * Disk operations asked for and not yet done, those queued in the backend included: the
   * backend's disk queue runs tiers.disk.inFlight of them at once, each finished one starting
   * the next without a trip through the JS thread.
   */
  private diskInFlight = 0;
  /** Free slots each tier keeps ahead of demand; 0 for the bottom, which frees by dropping. */
  readonly reserve: readonly number[];
  /** Background evictions in flight per tier, and all of them, for settle(). */
  private readonly reclaiming: number[];
  /** A background eviction of the tier failed: none starts again until an operation takes a slot there. */
  private readonly reclaimStalled: boolean[];
  private readonly reclaims = new Set<Promise<void>>();
  private settling = false;
  private owner!: LadderOwner;

  constructor(o: LadderOptions) {
    this.tiers = o.layout.tiers;
    this.bottom = this.tiers.length - 1;
    this.backend = o.backend;
    this.telemetry = o.telemetry;
    this.waitMs = o.waitMs;
    this.pools = this.tiers.map((t) => new SlotPool(t.slots));
    this.policies = this.tiers.map((t) => createPolicy(o.policy, t.slots));
    this.inTransit = this.tiers.map(() => 0);
    this.reserve = this.tiers.map((t) => (t.tier === this.bottom ? 0 : Math.floor(o.reserve * t.slots)));
    this.reclaiming = this.tiers.map(() => 0);
    this.reclaimStalled = this.tiers.map(() => false);
    o.telemetry.readDiskRunsFrom(() => o.backend.takeDiskRuns());
    const { pools, tiers } = this;
    new Gauge({
      name: 'spillway_tier_slots', help: 'Slots per tier by state', labelNames: ['tier', 'state'], registers: [o.telemetry.registry],
      collect() {
        pools.forEach((p, t) => {
          this.set({ tier: tiers[t]!.name, state: 'used' }, p.used);
          this.set({ tier: tiers[t]!.name, state: 'free' }, p.available);
        });
      },
    });
  }

  /** Binds the ladder to the store whose blocks it moves; once, before any move. */
  serve(owner: LadderOwner): void {
    this.owner = owner;
  }

  /** A block's copies for a new block: none anywhere. */
  noCopies(): Array<number | null> {
    return this.tiers.map(() => null);
  }

  // ---- where blocks are ----------------------------------------------------------------

  /** The highest tier holding a copy (the bottom for a block without any). */
  top(b: LadderBlock): TierIndex {
    const t = b.copies.findIndex((slot) => slot !== null);
    return t < 0 ? this.bottom : t;
  }

  /** Whether `b` has a quantized copy (in memory or on disk) in a tier other than `except`. */
  hasQuantizedCopy(b: LadderBlock, except: TierIndex = -1): boolean {
    for (let t = 1; t < b.copies.length; t++) if (t !== except && b.copies[t] !== null) return true;
    return false;
  }

  /** Whether `b` has a quantized copy above `tier` (from tier 1 up to, not including, it). */
  private hasQuantizedCopyAbove(b: LadderBlock, tier: TierIndex): boolean {
    for (let t = 1; t < tier; t++) if (b.copies[t] !== null) return true;
    return false;
  }

  /**
   * A pin holds a block where it is: its top copy never moves. The copies below it (clean
   * quantized copies) still move down or go, as any block's do.
   */
  pinnedHere(b: LadderBlock, tier: TierIndex): boolean {
    return b.pins > 0 && this.top(b) === tier;
  }

  /** The blocks holding a slot in `tier`, most evictable first. */
  candidates(tier: TierIndex): Iterable<number> {
    return this.policies[tier]!.candidates();
  }

  /** `b` was read or written where its top copy is. */
  touch(b: LadderBlock): void {
    this.policies[this.top(b)]!.touch(b.id);
  }

  size(tier: TierIndex): number {
    return this.pools[tier]!.size;
  }

  slotsUsed(): number[] {
    return this.pools.map((p) => p.used);
  }

  /** Disk operations in flight now. */
  get diskQueueDepth(): number {
    return this.diskInFlight;
  }

  // ---- slots -----------------------------------------------------------------------------

  /**
   * Takes a free slot in `tier`, evicting a victim down the ladder if none is free. Waits
   * for in-flight moves to finish when every candidate is busy, up to the wait limit, if
   * the operation may wait. The slot comes back in transit: the caller records it on a
   * block with place(), or gives it back with returnSlot().
   */
  async acquireSlot(tier: TierIndex, ctx: OpContext): Promise<number> {
    const deadline = Date.now() + this.waitMs;
    // Victims whose move down found no room: the next candidate may still move (or move free).
    const noRoomBelow = new Set<number>();
    for (;;) {
      const free = this.pools[tier]!.take();
      if (free !== undefined) {
        this.inTransit[tier]!++;
        this.reclaimAhead(tier, true);
        return free;
      }
      const victim = this.pickVictim(tier, ctx, noRoomBelow);
      if (victim) {
        try {
          const slot = await this.evict(tier, victim, ctx);
          this.reclaimAhead(tier, true);
          return slot;
        } catch (err) {
          if ((err as { code?: ErrorCode }).code !== 'CAPACITY_EXCEEDED') throw err;
          noRoomBelow.add(victim.id);
          continue;
        }
      }
      const name = this.tiers[tier]!.name;
      if (!this.anyBusy(tier, ctx)) {
        throw errors.tierFull(name, this.pools[tier]!.size);
      }
      if (!ctx.wait || Date.now() >= deadline) {
        throw errors.tierBusy(name);
      }
      await this.waitForProgress(deadline);
      noRoomBelow.clear();
    }
  }

  /** A slot in transit now recorded on `b`: listed in the tier's policy. */
  place(b: LadderBlock, tier: TierIndex, slot: number): void {
    b.copies[tier] = slot;
    this.policies[tier]!.insert(b.id);
    this.inTransit[tier]!--;
    this.notifyProgress();
  }

  /** Records copies found in place at start (a restart's disk slots): taken from the pools, listed in the policies. */
  adopt(found: Array<{ block: LadderBlock; tier: TierIndex; slot: number }>): void {
    this.tiers.forEach((t) => this.pools[t.tier]!.claim(found.filter((f) => f.tier === t.tier).map((f) => f.slot)));
    for (const { block, tier, slot } of found) {
      block.copies[tier] = slot;
      this.policies[tier]!.insert(block.id);
    }
  }

  /** A slot in transit that no block took, back to its pool. */
  returnSlot(tier: TierIndex, slot: number): void {
    this.pools[tier]!.release(slot);
    this.inTransit[tier]!--;
    this.notifyProgress();
  }

  /** Frees `b`'s copies in the given tiers. Without a raw copy a block is no longer exact. */
  releaseCopies(b: LadderBlock, tiers: Iterable<TierIndex>): void {
    for (const t of tiers) {
      const slot = b.copies[t];
      if (slot === null || slot === undefined) continue;
      this.pools[t]!.release(slot);
      this.policies[t]!.remove(b.id);
      b.copies[t] = null;
    }
    if (b.copies[0] === null) b.exact = false;
    this.notifyProgress();
  }

  /** Frees every quantized copy of `b` (memory and disk): what a write of new bytes does. */
  releaseQuantized(b: LadderBlock): void {
    this.releaseCopies(b, this.tiers.slice(1).map((t) => t.tier));
  }

  releaseAll(b: LadderBlock): void {
    this.releaseCopies(b, this.tiers.map((t) => t.tier));
  }

  // ---- eviction --------------------------------------------------------------------------

  /** The first block the policy offers that may leave `tier` now, among the first `scanLimit`; locked (by this operation) on return. */
  private pickVictim(tier: TierIndex, ctx: OpContext, passOver: Set<number>, scanLimit = Infinity): LadderBlock | undefined {
    let scanned = 0;
    for (const id of this.policies[tier]!.candidates()) {
      if (scanned++ >= scanLimit) return undefined;
      const b = this.owner.block(id);
      if (!b || this.pinnedHere(b, tier) || passOver.has(id)) continue;
      // Leaving the bottom tier loses bytes unless another quantized copy stays or the block is only cache.
      if (tier === this.bottom && !this.hasQuantizedCopy(b, tier) && !onlyCache(b)) continue;
      // A block this operation holds may still give up a copy that one above it makes
      // redundant: its promotions read the top copy, which stays.
      if (ctx.held.has(id)) {
        if (tier > 0 && this.hasQuantizedCopyAbove(b, tier)) return b;
        continue;
      }
      if (b.lock.tryAcquire()) return b;
    }
    return undefined;
  }

  private anyBusy(tier: TierIndex, ctx: OpContext): boolean {
    if (this.inTransit[tier]! > 0) return true;
    for (const id of this.policies[tier]!.candidates()) {
      const b = this.owner.block(id);
      if (b && !ctx.held.has(id) && b.lock.locked && !this.pinnedHere(b, tier)) return true;
    }
    return false;
  }

  /** Moves `victim` out of `tier` and returns its freed slot there, to the caller alone. */
  private async evict(tier: TierIndex, victim: LadderBlock, ctx: OpContext): Promise<number> {
    const lockedHere = !ctx.held.has(victim.id);
    ctx.held.add(victim.id);
    try {
      const slot = victim.copies[tier]!;
      // The quantized truth elsewhere (or, for the raw copy, any quantized copy) makes the move free.
      const free = tier === 0 ? !victim.exact : this.hasQuantizedCopy(victim, tier);
      let drop = false;
      if (free) {
        if (tier < this.bottom) this.recordFreeMove(victim, tier);
      } else if (tier === this.bottom) {
        // Only cache no one references reaches here (pickVictim): it goes.
        drop = true;
      } else {
        try {
          await this.move('demote', victim, tier, tier + 1, ctx, (dest) => this.copyDown(victim, tier, slot, dest));
        } catch (err) {
          // A block that is only cache goes when there is no room below.
          if ((err as { code?: ErrorCode }).code !== 'CAPACITY_EXCEEDED' || !onlyCache(victim)) throw err;
          drop = true;
        }
      }
      victim.copies[tier] = null;
      if (tier === 0) victim.exact = false;
      this.policies[tier]!.remove(victim.id);
      this.inTransit[tier]!++;
      if (drop) this.owner.drop(victim, tier);
      return slot;
    } finally {
      if (lockedHere) {
        ctx.held.delete(victim.id);
        victim.lock.release();
      }
      this.notifyProgress();
    }
  }

  /**
   * Keeps `tier`'s reserve of free slots: while fewer are free (or being freed) than the
   * reserve, the policy's first movable victims move down in the background, as a
   * write's eviction would move them, and their slots go back to the pool. A write or a
   * promotion then finds its slot free instead of waiting for a quantization or a spill
   * behind it. A background eviction never waits: a busy or full tier below ends it, and
   * the tier is left alone until an operation takes one of its slots (`taken`), so that
   * evictions that cannot succeed do not retry on their own progress.
   */
  private reclaimAhead(tier: TierIndex, taken = false): void {
    if (taken) this.reclaimStalled[tier] = false;
    while (!this.settling && !this.reclaimStalled[tier] && this.reclaiming[tier]! < RECLAIMS_IN_FLIGHT
      && this.pools[tier]!.available + this.reclaiming[tier]! < this.reserve[tier]!) {
      const ctx: OpContext = { held: new Set(), wait: false };
      const victim = this.pickVictim(tier, ctx, new Set(), RECLAIM_SCAN);
      if (!victim) return;
      this.reclaiming[tier]!++;
      const run = this.evict(tier, victim, ctx).then(
        (slot) => {
          this.returnSlot(tier, slot);
          return 'freed';
        },
        (err: unknown) => {
          const code = (err as { code?: ErrorCode }).code;
          this.reclaimStalled[tier] = true;
          return code === 'TIER_BUSY' || code === 'CAPACITY_EXCEEDED' ? 'no_room' : 'failed';
        },
      ).then((outcome) => {
        this.telemetry.reclaims.inc({ tier: this.tiers[tier]!.name, outcome });
        this.reclaiming[tier]!--;
        this.reclaims.delete(run);
        this.reclaimAhead(tier);
      });
      this.reclaims.add(run);
    }
  }

  /** Resolves once no background eviction is in flight. */
  async idle(): Promise<void> {
    while (this.reclaims.size > 0) await Promise.all(this.reclaims);
  }

  /** Stops keeping reserves and waits for the background evictions in flight: before the backend closes. */
  async settle(): Promise<void> {
    this.settling = true;
    await this.idle();
  }

  /** Copies `b` from its slot in `tier` into `dest` of the tier below, by the two tiers' kinds. */
  private async copyDown(b: LadderBlock, tier: TierIndex, slot: number, dest: number): Promise<void> {
    const below = tier + 1;
    if (tier === 0) return this.backend.quantize(slot, dest);
    if (this.tiers[below]!.kind === 'disk') {
      return this.diskOp(b, 'write', () => this.backend.spill(tier, slot, dest, { blockId: b.id, generation: b.generation, hash: b.hash }));
    }
    return this.backend.copyStored(tier, slot, below, dest);
  }

  /**
   * Copies `b` from tier `from` into a new slot of tier `to` by `work`; the slot is then
   * recorded on the block. On failure the new slot is returned to its pool and the block
   * keeps the copies it had.
   */
  private async move(kind: MoveKind, b: LadderBlock, from: TierIndex, to: TierIndex, ctx: OpContext, work: (slot: number) => Promise<void>): Promise<void> {
    const slot = await this.acquireSlot(to, ctx);
    const started = performance.now();
    try {
      await work(slot);
    } catch (err) {
      this.returnSlot(to, slot);
      throw err;
    }
    this.place(b, to, slot);
    this.telemetry.recordMove({
      kind, blockId: b.id, sequences: [...b.owners], from: this.tiers[from]!.name, to: this.tiers[to]!.name,
      bytes: to === 0 ? this.tiers[0]!.slotBytes : this.tiers[1]!.slotBytes, durationMs: performance.now() - started, copied: true,
    });
  }

  private recordFreeMove(b: LadderBlock, from: TierIndex): void {
    const [f, t] = [this.tiers[from]!.name, this.tiers[from + 1]!.name];
    this.telemetry.recordMove({ kind: 'demote', blockId: b.id, sequences: [...b.owners], from: f, to: t, bytes: 0, durationMs: 0, copied: false });
  }

  // ---- promotion and reading ---------------------------------------------------------------

  /**
   * Brings a quantized block up to tier 0: its top copy into tier 1 (a copy from host
   * memory, or a fill from disk), then dequantized into tier 0. Where tier 1 cannot take it,
   * it comes straight from its top copy into tier 0. The caller holds its lock.
   */
  async promoteToRaw(b: LadderBlock, ctx: OpContext): Promise<void> {
    if (b.copies[0] !== null) return;
    if (b.copies[1] === null) {
      const from = this.top(b);
      try {
        await this.move('promote', b, from, 1, ctx, (slot) => this.copyUp(b, from, slot));
      } catch (err) {
        if ((err as { code?: ErrorCode }).code !== 'CAPACITY_EXCEEDED') throw err;
        // Tier 1 cannot take it (its blocks have no room below), but tier 0 may.
        await this.move('promote', b, from, 0, ctx, async (slot) => {
          await this.backend.writeRaw(slot, await this.backend.dequantizeBytes(await this.storedBytes(b)));
        });
        return;
      }
    }
    await this.move('promote', b, 1, 0, ctx, (slot) => this.backend.dequantize(b.copies[1]!, slot));
  }

  /**
   * Gives `b`, a block no one else can see yet, a tier-1 copy of stored bytes from outside
   * the ladder (the shared tier). It may wait for room, as a write's slot does: it holds no lock.
   */
  async placeStored(b: LadderBlock, stored: Buffer): Promise<void> {
    const slot = await this.acquireSlot(1, { held: new Set(), wait: true });
    try {
      await this.backend.writeStored(1, slot, stored);
    } catch (err) {
      this.returnSlot(1, slot);
      throw err;
    }
    this.place(b, 1, slot);
  }

  /** Copies `b` from its copy in tier `from` (below tier 1) into `slot` of tier 1. */
  private copyUp(b: LadderBlock, from: TierIndex, slot: number): Promise<void> {
    const src = b.copies[from]!;
    if (from === this.bottom) {
      return this.diskOp(b, 'read', () => this.backend.fill(src, { blockId: b.id, generation: b.generation }, 1, slot));
    }
    return this.backend.copyStored(from, src, 1, slot);
  }

  /** The block's quantized bytes from its top quantized copy, taking no slot. */
  async storedBytes(b: LadderBlock): Promise<Buffer> {
    for (let t = 1; t < this.bottom; t++) {
      const slot = b.copies[t];
      if (slot !== null && slot !== undefined) return this.backend.readStored(t, slot);
    }
    const slot = b.copies[this.bottom]!;
    return this.diskOp(b, 'read', () => this.backend.readDisk(slot, { blockId: b.id, generation: b.generation }));
  }

  /** Runs a disk operation of one slot with queue and byte accounting; a failed verification loses the block. */
  private async diskOp<T>(b: LadderBlock, direction: 'read' | 'write', op: () => Promise<T>): Promise<T> {
    this.diskInFlight++;
    this.telemetry.diskQueue.set(this.diskInFlight);
    try {
      const result = await op();
      this.telemetry.diskBytes.inc({ direction }, this.tiers[this.bottom]!.slotBytes);
      return result;
    } catch (err) {
      const code = (err as { code?: ErrorCode }).code ?? 'INTERNAL';
      this.telemetry.diskErrors.inc({ kind: code });
      const onlyCopy = b.copies[this.bottom] !== null && !this.hasQuantizedCopy(b, this.bottom);
      if ((code === 'CHECKSUM_MISMATCH' || code === 'SLOT_MISMATCH') && onlyCopy) this.owner.lose(b);
      throw err;
    } finally {
      this.diskInFlight--;
      this.telemetry.diskQueue.set(this.diskInFlight);
      this.notifyProgress();
    }
  }

  // ---- progress ----------------------------------------------------------------------------

  /**
   * Wakes every operation waiting for a slot, a lock or the disk queue to move. What frees a
   * lock may also free a victim for a tier short of its reserve.
   */
  notifyProgress(): void {
    const waiters = this.progressWaiters;
    this.progressWaiters = [];
    for (const w of waiters) w();
    for (let t = 0; t < this.bottom; t++) this.reclaimAhead(t);
  }

  waitForProgress(deadline: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, Math.max(1, deadline - Date.now()));
      this.progressWaiters.push(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  /** Resolves once no disk operation is in flight. */
  async drainDisk(): Promise<void> {
    while (this.diskInFlight > 0) await this.waitForProgress(Date.now() + 1000);
  }

  /** Throws unless every used slot of every tier is held by exactly one of `blocks` or is in transit. */
  checkSlots(blocks: Iterable<LadderBlock>, fail: (msg: string) => never): void {
    const owner = this.tiers.map(() => new Map<number, number>());
    for (const b of blocks) {
      if (b.copies.length !== this.tiers.length) fail(`block ${b.id} has ${b.copies.length} copy entries for ${this.tiers.length} tiers`);
      b.copies.forEach((slot, t) => {
        if (slot === null) return;
        const prev = owner[t]!.get(slot);
        if (prev !== undefined) fail(`tier ${t} slot ${slot} held by blocks ${prev} and ${b.id}`);
        owner[t]!.set(slot, b.id);
      });
    }
    this.pools.forEach((p, t) => {
      const held = owner[t]!.size + this.inTransit[t]!;
      if (p.used !== held) fail(`tier ${t} reports ${p.used} slots used, blocks hold ${owner[t]!.size} and ${this.inTransit[t]} are in transit`);
    });
  }
}
