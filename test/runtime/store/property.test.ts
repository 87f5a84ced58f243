/**
 * Model-based property test of the store: random interleavings of create, allocate,
 * write, commit (prefix), read, concurrent reads, reads racing rewrites of another
 * sequence (whose evictions take the very slots the reads promote into), pin, unpin,
 * free, and zero-copy acquire and release under a lease (released with or without
 * written, or let go all at once as the lease ends), against a plain in-memory model, on
 * ladders of 12 slots so that blocks move down and up all the time: raw 2 + quantized 2 +
 * disk 8, and the same with a host tier (2 + 2 + 3 + 5), and that one again keeping a free
 * slot in each memory tier ahead of demand (background evictions racing every operation).
 * Raw data reads back bit-exact; quantized data within the 4-bit bound, and the same bytes
 * every time until rewritten (no drift from re-quantization).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { blockHash, ROOT_HASH } from '../../../runtime/prefix.js';
import type { BlockStore } from '../../../runtime/store.js';
import { blockContent, FOUR_BIT_BOUND, relativeError, tempDir, tinyStore, type TinySlots } from '../../helpers.js';

type Op =
  | { kind: 'create' }
  | { kind: 'allocate'; seq: number; count: number }
  | { kind: 'write'; seq: number; index: number; seed: number }
  | { kind: 'commit'; seq: number; pattern: number }
  | { kind: 'read'; seq: number; index: number; promote: boolean }
  | { kind: 'readAll'; seq: number }
  | { kind: 'race'; seq: number; other: number; seed: number }
  | { kind: 'pin'; seq: number; index: number }
  | { kind: 'unpin'; seq: number; index: number }
  | { kind: 'free'; seq: number }
  | { kind: 'attach'; seq: number }
  | { kind: 'acquire'; seq: number; index: number }
  | { kind: 'release'; written: boolean }
  | { kind: 'endLease' };

const op: fc.Arbitrary<Op> = fc.oneof(
  { weight: 1, arbitrary: fc.constant({ kind: 'create' as const }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('allocate' as const), seq: fc.nat(3), count: fc.integer({ min: 1, max: 3 }) }) },
  { weight: 4, arbitrary: fc.record({ kind: fc.constant('write' as const), seq: fc.nat(3), index: fc.nat(6), seed: fc.nat() }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('commit' as const), seq: fc.nat(3), pattern: fc.nat(1) }) },
  { weight: 5, arbitrary: fc.record({ kind: fc.constant('read' as const), seq: fc.nat(3), index: fc.nat(6), promote: fc.boolean() }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('readAll' as const), seq: fc.nat(3) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('race' as const), seq: fc.nat(3), other: fc.nat(3), seed: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('pin' as const), seq: fc.nat(3), index: fc.nat(6) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('unpin' as const), seq: fc.nat(3), index: fc.nat(6) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('free' as const), seq: fc.nat(3) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('attach' as const), seq: fc.nat(3) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('acquire' as const), seq: fc.nat(3), index: fc.nat(6) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('release' as const), written: fc.boolean() }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'endLease' as const }) },
);

const TOKENS_PER_BLOCK = 4;
/** Both ladders hold 12 blocks: what the model's "every slot holds a live block" condition counts. */
const CAPACITY = 12;
const LADDERS: Record<string, { slots: TinySlots; reserve: number }> = {
  'raw, quantized, disk': { slots: { raw: 2, quantized: 2, disk: 8 }, reserve: 0 },
  'raw, quantized, host, disk': { slots: { raw: 2, quantized: 2, host: 3, disk: 5 }, reserve: 0 },
  // Half of each memory tier, rounded down: one free slot kept in raw, quantized and host.
  'raw, quantized, host, disk, with reserves': { slots: { raw: 2, quantized: 2, host: 3, disk: 5 }, reserve: 0.5 },
};

interface ModelBlock {
  id: number;
  content: Buffer | null;
  hash: string | null;
  owners: number;
  pins: number;
  lastLossy: Buffer | null;
}

class Model {
  seqs: Array<{ id: string; blocks: ModelBlock[] }> = [];
  blocks = new Map<number, ModelBlock>();
  /** Blocks the one zero-copy lease holds in tier 0, by id (they may have lost every owner). */
  leased = new Map<number, ModelBlock>();
  /** Hash -> content of every committed chain ever written (content is a function of it). */
  chains: string[][] = [];

  live(): number {
    let n = 0;
    for (const b of this.blocks.values()) if (b.owners > 0) n++;
    return n;
  }

  /** Blocks holding data that someone references: each takes at least one slot of the ladder. */
  writtenLive(): number {
    let n = 0;
    for (const b of this.blocks.values()) if (b.content !== null && b.owners > 0) n++;
    return n;
  }

  pinned(): number {
    let n = 0;
    for (const b of this.blocks.values()) if (b.pins > 0 && b.owners > 0 && !this.leased.has(b.id)) n++;
    return n + this.leased.size;
  }

  /** A block no sequence references is gone unless the cache keeps it (committed and written). */
  forgetIfUnreferenced(b: ModelBlock): void {
    if (b.owners === 0 && (b.hash === null || b.content === null)) this.blocks.delete(b.id);
  }

  block(id: number, content: Buffer | null = null): ModelBlock {
    let b = this.blocks.get(id);
    if (!b) {
      b = { id, content, hash: null, owners: 0, pins: 0, lastLossy: null };
      this.blocks.set(id, b);
    }
    return b;
  }
}

function contentForHash(hash: string): Buffer {
  return blockContent(parseInt(hash.slice(0, 8), 16));
}

async function expectCode(p: Promise<unknown> | (() => unknown), code: string): Promise<void> {
  await assert.rejects(async () => (typeof p === 'function' ? p() : p), (err: { code?: string }) => {
    assert.equal(err.code, code);
    return true;
  });
}

async function checkRead(store: BlockStore, model: Model, seq: { id: string; blocks: ModelBlock[] }, index: number, promote: boolean): Promise<void> {
  const mb = seq.blocks[index]!;
  if (!mb.content) {
    await expectCode(store.read(seq.id, index, { promote }), 'BLOCK_NOT_WRITTEN');
    return;
  }
  const r = await store.read(seq.id, index, { promote });
  assert.equal(r.data.length, mb.content.length);
  if (!r.lossy) {
    assert.ok(r.data.equals(mb.content), `block ${mb.id}: exact read differs`);
  } else {
    const err = relativeError(mb.content, r.data);
    assert.ok(err < FOUR_BIT_BOUND, `block ${mb.id}: quantized read error ${err} over bound`);
    if (mb.lastLossy) assert.ok(r.data.equals(mb.lastLossy), `block ${mb.id}: lossy reads drifted`);
    mb.lastLossy = r.data;
  }
  void model;
}

/** Moves seen across all runs, by "kind from->to": the test must have exercised every ladder. */
const movesSeen = new Map<string, number>();
/** Slots the reserve variant's background evictions freed, per tier and outcome. */
const reclaimsSeen = new Map<string, number>();

async function runOps({ slots, reserve }: { slots: TinySlots; reserve: number }, ops: Op[]): Promise<void> {
  const dir = tempDir();
  // A short wait for room: a writer that waits it out at a full ladder fails in 1 s, not 5.
  const store = await tinyStore(dir.path, slots, { limits: { maxLiveSequences: 4 }, eviction: { waitMs: 1000, reserve } });
  const model = new Model();
  let seqCounter = 0;
  let lease = store.createLease('property').id;
  store.telemetry.moves.on('move', (e: { kind: string; from: string; to: string }) => {
    const key = `${e.kind} ${e.from}->${e.to}`;
    movesSeen.set(key, (movesSeen.get(key) ?? 0) + 1);
  });
  try {
    for (const o of ops) {
      const seq = model.seqs.length ? model.seqs[('seq' in o ? o.seq : 0) % model.seqs.length]! : undefined;
      switch (o.kind) {
        case 'create': {
          if (model.seqs.length >= 4) {
            await expectCode(() => store.createSequence(), 'LIMIT_EXCEEDED');
            break;
          }
          const id = `s${seqCounter++}`;
          store.createSequence(id);
          model.seqs.push({ id, blocks: [] });
          break;
        }
        case 'allocate': {
          if (!seq) break;
          if (seq.blocks.length + o.count > CAPACITY || model.live() + o.count > CAPACITY) {
            await expectCode(() => store.allocate(seq.id, o.count), 'LIMIT_EXCEEDED');
            break;
          }
          for (const ref of store.allocate(seq.id, o.count)) {
            const b = model.block(ref.blockId);
            b.owners++;
            seq.blocks.push(b);
          }
          break;
        }
        case 'write': {
          const b = seq?.blocks[o.index];
          if (!seq || !b) break;
          const data = blockContent(o.seed);
          if (b.hash !== null || b.owners > 1) {
            await expectCode(store.write(seq.id, o.index, data), 'BLOCK_IMMUTABLE');
            break;
          }
          if (model.pinned() > 0) {
            // With a pinned block the 2-slot raw tier may legitimately be unable to take more.
            try {
              await store.write(seq.id, o.index, data);
            } catch (err) {
              assert.equal((err as { code?: string }).code, 'CAPACITY_EXCEEDED');
              break;
            }
          } else {
            await store.write(seq.id, o.index, data);
          }
          b.content = data;
          b.lastLossy = null;
          break;
        }
        case 'commit': {
          if (!seq) break;
          const index = seq.blocks.findIndex((b) => b.content === null);
          if (index < 0) break;
          const parent = index === 0 ? ROOT_HASH : seq.blocks[index - 1]!.hash;
          if (parent === null) break;
          const tokens = Array.from({ length: TOKENS_PER_BLOCK }, (_, i) => o.pattern * 100 + index * 10 + i);
          const hash = blockHash(parent, tokens);
          const data = contentForHash(hash);
          if (seq.blocks[index]!.owners > 1) break;
          let result;
          try {
            result = await store.write(seq.id, index, data, tokens);
          } catch (err) {
            assert.ok(model.pinned() > 0, `commit failed without pins: ${(err as Error).message}`);
            assert.equal((err as { code?: string }).code, 'CAPACITY_EXCEEDED');
            break;
          }
          assert.equal(result.hash, hash);
          const own = seq.blocks[index]!;
          if (result.deduplicated) {
            own.owners--;
            if (own.owners === 0) model.blocks.delete(own.id);
            const shared = model.block(result.blockId, data);
            assert.ok(shared.content?.equals(data), 'deduplicated block has other content');
            shared.owners++;
            seq.blocks[index] = shared;
          } else {
            own.content = data;
            own.hash = hash;
            own.lastLossy = null;
          }
          break;
        }
        case 'read': {
          if (!seq || !seq.blocks[o.index]) break;
          await checkRead(store, model, seq, o.index, o.promote);
          break;
        }
        case 'readAll': {
          if (!seq) break;
          await Promise.all(seq.blocks.map((_, i) => checkRead(store, model, seq, i, i % 2 === 0)));
          break;
        }
        case 'race': {
          // Reads of one sequence (promoting, or not, by turns) while rewrites of another
          // evict: nothing is pinned, so every write must succeed, however busy the ladder.
          const other = model.seqs[o.other % Math.max(1, model.seqs.length)];
          if (!seq || !other || other === seq) break;
          const rewritable = other.blocks.map((b, i) => ({ b, i })).filter(({ b }) => b.hash === null && b.owners === 1);
          const reads = seq.blocks.map((_, i) => checkRead(store, model, seq, i, (o.seed + i) % 3 !== 0));
          const writes = rewritable.map(async ({ b, i }, k) => {
            const data = blockContent(o.seed + k);
            try {
              await store.write(other.id, i, data);
            } catch (err) {
              // Only a pin (or a lease's pin) in the 2-slot raw tier, or a ladder whose every slot
              // holds a live block, may leave concurrent writers without room (or waiting it out).
              assert.ok(model.pinned() > 0 || model.writtenLive() === CAPACITY, `write racing reads failed: ${(err as Error).message}`);
              assert.ok(['CAPACITY_EXCEEDED', 'TIER_BUSY'].includes((err as { code?: string }).code!), (err as Error).message);
              return;
            }
            b.content = data;
            b.lastLossy = null;
          });
          await Promise.all([...reads, ...writes]);
          break;
        }
        case 'pin': {
          const b = seq?.blocks[o.index];
          if (!seq || !b || model.pinned() > 0) break;
          store.pin(seq.id, o.index);
          b.pins++;
          break;
        }
        case 'unpin': {
          const b = seq?.blocks[o.index];
          if (!seq || !b) break;
          if (b.pins === 0) {
            await expectCode(() => store.unpin(seq.id, o.index), 'INVALID_ARGUMENT');
            break;
          }
          store.unpin(seq.id, o.index);
          b.pins--;
          break;
        }
        case 'free': {
          if (!seq) break;
          store.freeSequence(seq.id);
          for (const b of seq.blocks) {
            b.owners--;
            if (b.owners === 0) b.pins = 0;
            model.forgetIfUnreferenced(b);
          }
          model.seqs.splice(model.seqs.indexOf(seq), 1);
          await new Promise((r) => setImmediate(r)); // let deferred releases run
          break;
        }
        case 'attach': {
          // A new sequence attaches the longest cached prefix of another's committed chain.
          if (!seq || model.seqs.length >= 4) break;
          const hashes = seq.blocks.map((b) => b.hash).filter((h): h is string => h !== null);
          const found = store.lookupPrefix(hashes);
          if (model.live() + found.filter((f) => (model.blocks.get(f.blockId)?.owners ?? 0) === 0).length > CAPACITY) break;
          const id = `s${seqCounter++}`;
          const created = store.createSequence(id, hashes);
          assert.equal(created.attached.length, found.length);
          const blocks = created.attached.map((a) => {
            const b = model.block(a.blockId);
            b.owners++;
            return b;
          });
          model.seqs.push({ id, blocks });
          for (let i = 0; i < blocks.length; i++) await checkRead(store, model, model.seqs[model.seqs.length - 1]!, i, true);
          break;
        }
        case 'acquire': {
          // One block held at a time, as with pins: the 2-slot raw tier must keep a free slot.
          const b = seq?.blocks[o.index];
          if (!seq || !b?.content || model.pinned() > 0) break;
          let held;
          try {
            held = await store.acquire(lease, seq.id, o.index);
          } catch (err) {
            // With every slot holding a live block, a block on disk has no room to come up through.
            assert.equal(model.writtenLive(), CAPACITY, `acquire failed below a full ladder: ${(err as Error).message}`);
            assert.ok(['CAPACITY_EXCEEDED', 'TIER_BUSY'].includes((err as { code?: string }).code!), (err as Error).message);
            break;
          }
          assert.equal(held.blockId, b.id);
          assert.equal(held.written, true);
          model.leased.set(b.id, b);
          break;
        }
        case 'release': {
          const [b] = model.leased.values();
          if (!b) break;
          if (o.written && (b.hash !== null || b.owners > 1)) {
            await expectCode(store.release(lease, b.id, { written: true }), 'BLOCK_IMMUTABLE');
            break; // the lease keeps it until released without written
          }
          // What an engine would find in the slot: the block's bytes as tier 0 holds them.
          const owner = model.seqs.find((x) => x.blocks.includes(b));
          const slot = o.written && owner ? (await store.read(owner.id, owner.blocks.indexOf(b), { promote: false })).data : null;
          await store.release(lease, b.id, { written: o.written });
          model.leased.delete(b.id);
          if (slot) {
            b.content = slot;
            b.lastLossy = null;
          }
          model.forgetIfUnreferenced(b);
          await new Promise((r) => setImmediate(r)); // let the deferred drop run
          break;
        }
        case 'endLease': {
          // As an expiry would: every hold let go without written; the engine opens another.
          const { released } = await store.endLease(lease);
          assert.equal(released, model.leased.size);
          for (const b of model.leased.values()) model.forgetIfUnreferenced(b);
          model.leased.clear();
          lease = store.createLease('property').id;
          break;
        }
      }
      store.checkInvariants();
    }
    // Every block still referenced reads back right at the end.
    for (const seq of model.seqs) for (let i = 0; i < seq.blocks.length; i++) await checkRead(store, model, seq, i, true);
    await store.idle();
    store.checkInvariants();
    for (const v of (await store.telemetry.reclaims.get()).values) {
      const key = `${v.labels.tier} ${v.labels.outcome}`;
      reclaimsSeen.set(key, (reclaimsSeen.get(key) ?? 0) + v.value);
    }
  } finally {
    await store.close();
    dir.cleanup();
  }
}

for (const [name, ladder] of Object.entries(LADDERS)) {
  test(`store matches the model under random operations with constant demotion and promotion (${name})`, { timeout: 600_000 }, async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(op, { minLength: 20, maxLength: 150 }), async (ops) => {
        await runOps(ladder, [{ kind: 'create' }, { kind: 'create' }, ...ops]);
      }),
      { includeErrorInReport: true, numRuns: Number(process.env.SPILLWAY_PROPERTY_RUNS ?? 200), seed: process.env.SPILLWAY_PROPERTY_SEED ? Number(process.env.SPILLWAY_PROPERTY_SEED) : undefined },
    );
  });
}

test('the property runs moved blocks along every step of the ladders, and ahead of demand with reserves', () => {
  const steps = [
    'demote raw->quantized', 'demote quantized->disk', 'promote disk->quantized', 'promote quantized->raw',
    'demote quantized->host', 'demote host->disk', 'promote host->quantized',
  ];
  for (const key of steps) assert.ok((movesSeen.get(key) ?? 0) > 10, `too few "${key}" moves: ${JSON.stringify([...movesSeen])}`);
  for (const tier of ['raw', 'quantized', 'host']) {
    assert.ok((reclaimsSeen.get(`${tier} freed`) ?? 0) > 10, `too few background evictions from ${tier}: ${JSON.stringify([...reclaimsSeen])}`);
  }
});
