/**
 * Free slots kept ahead of demand (`eviction.reserve`): the tiers above the disk keep a
 * share of their slots free by moving blocks down in the background, so that a write or a
 * promotion takes a free slot instead of paying for the eviction it causes. Nothing is
 * lost on the way, pinned blocks stay, and a failing background eviction fails no request.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { BlockStore } from '../../../runtime/store.js';
import { assertReadBack, blockContent, FOUR_BIT_BOUND, relativeError, tempDir, tinyStore, type TinySlots } from '../../helpers.js';

const EIO = 5;

async function withStore(slots: TinySlots, reserve: number, fn: (store: BlockStore) => Promise<void>): Promise<void> {
  const dir = tempDir();
  const store = await tinyStore(dir.path, slots, { backend: 'host', eviction: { reserve } });
  try {
    await fn(store);
    await store.idle();
    store.checkInvariants();
  } finally {
    await store.close();
    dir.cleanup();
  }
}

/** Writes `count` blocks of seeded content into a new sequence, one at a time. */
async function writeBlocks(store: BlockStore, count: number): Promise<{ id: string; data: Buffer[] }> {
  const { id } = store.createSequence();
  store.allocate(id, count);
  const data = Array.from({ length: count }, (_, i) => blockContent(100 + i));
  for (let i = 0; i < count; i++) await store.write(id, i, data[i]!);
  return { id, data };
}

async function assertIntact(store: BlockStore, id: string, data: Buffer[]): Promise<void> {
  for (let i = 0; i < data.length; i++) {
    const r = await store.read(id, i, { promote: false });
    assertReadBack(data[i]!, r, `block ${i}`);
  }
}

async function reclaimCount(store: BlockStore, tier: string, outcome: string): Promise<number> {
  const { values } = await store.telemetry.reclaims.get();
  return values.find((v) => v.labels.tier === tier && v.labels.outcome === outcome)?.value ?? 0;
}

test('each memory tier keeps its reserve of free slots; the disk keeps none; nothing is lost', async () => {
  // A quarter of 8 slots: 2 free in raw, in quantized and in host memory.
  await withStore({ raw: 8, quantized: 8, host: 8, disk: 32 }, 0.25, async (store) => {
    const { id, data } = await writeBlocks(store, 30);
    await store.idle();
    const tiers = store.stats().tiers;
    assert.deepEqual(tiers.map((t) => t.reserve), [2, 2, 2, 0]);
    for (const t of tiers.slice(0, 3)) assert.ok(t.free >= 2, `${t.name}: ${t.free} free, reserve ${t.reserve}`);
    assert.equal(tiers[3]!.used, 30 - 6 * 3, 'what the memory tiers leave goes to disk');
    for (const name of ['raw', 'quantized', 'host']) assert.ok(await reclaimCount(store, name, 'freed') > 0, `${name} freed no slot ahead`);
    await assertIntact(store, id, data);
  });
});

test('without a reserve the memory tiers fill to their last slot and nothing moves ahead', async () => {
  await withStore({ raw: 8, quantized: 8, disk: 32 }, 0, async (store) => {
    await writeBlocks(store, 20);
    await store.idle();
    const tiers = store.stats().tiers;
    assert.deepEqual(tiers.map((t) => [t.free, t.reserve]), [[0, 0], [0, 0], [28, 0]]);
    assert.equal(await reclaimCount(store, 'raw', 'freed'), 0);
  });
});

test('a promotion from disk takes the free slots the reserve keeps', async () => {
  await withStore({ raw: 4, quantized: 4, disk: 32 }, 0.25, async (store) => {
    const { id, data } = await writeBlocks(store, 12);
    await store.idle();
    // Background evictions finish in any order, so which blocks reached the disk varies.
    let onDisk = -1;
    for (let i = 0; i < data.length && onDisk < 0; i++) if ((await store.read(id, i, { promote: false })).tier === 'disk') onDisk = i;
    assert.ok(onDisk >= 0, 'no block reached the disk');
    const r = await store.read(id, onDisk);
    assert.equal(r.tier, 'disk');
    assert.equal(r.promoted, true);
    assert.ok(relativeError(data[onDisk]!, r.data) < FOUR_BIT_BOUND);
  });
});

test('pinned blocks stay in tier 0 however far below its reserve the tier is', async () => {
  await withStore({ raw: 4, quantized: 8, disk: 32 }, 0.5, async (store) => {
    const { id } = store.createSequence();
    store.allocate(id, 4);
    // Pinned before they are written: the reserve's evictions run between any two calls.
    for (let i = 0; i < 3; i++) store.pin(id, i);
    for (let i = 0; i < 4; i++) await store.write(id, i, blockContent(i));
    await store.idle();
    // Three pinned of four: the one unpinned block went down to give the reserve one of its two slots.
    const raw = store.stats().tiers[0]!;
    assert.equal(raw.free, 1);
    for (let i = 0; i < 3; i++) assert.equal((await store.read(id, i, { promote: false })).tier, 'raw', `pinned block ${i} moved`);
    assert.equal((await store.read(id, 3, { promote: false })).tier, 'quantized');
  });
});

test('a background eviction that fails fails no request and leaves its block where it was', async () => {
  await withStore({ raw: 4, quantized: 4, disk: 32 }, 0.25, async (store) => {
    const { id, data } = await writeBlocks(store, 6);
    await store.idle();
    store.allocate(id, 1);
    // The next spill fails: the one the write's background eviction chain makes, not the write.
    store.injectDiskFault('write', EIO, 1);
    const extra = blockContent(999);
    await store.write(id, 6, extra);
    await store.idle();
    assert.equal(await reclaimCount(store, 'quantized', 'failed'), 1);
    await assertIntact(store, id, [...data, extra]);
    // The reserve comes back with the next slot taken.
    store.allocate(id, 1);
    await store.write(id, 7, blockContent(1000));
    await store.idle();
    assert.ok(store.stats().tiers[1]!.free >= 1);
  });
});

test('background evictions that find no room below stop, and nothing spins', { timeout: 20_000 }, async () => {
  // 8 slots for 7 live blocks: the reserves (2 raw, 1 quantized) cannot all be kept.
  await withStore({ raw: 4, quantized: 2, disk: 2 }, 0.5, async (store) => {
    const { id, data } = await writeBlocks(store, 7);
    // An eviction that cannot succeed would otherwise start again on its own progress, forever.
    await store.idle();
    assert.ok(await reclaimCount(store, 'raw', 'no_room') + await reclaimCount(store, 'quantized', 'no_room') > 0, 'no background eviction found the ladder full');
    assert.equal(store.stats().tiers.reduce((n, t) => n + t.used, 0), 7);
    await assertIntact(store, id, data);
  });
});

test('closing waits for the background evictions in flight', async () => {
  const dir = tempDir();
  const store = await tinyStore(dir.path, { raw: 8, quantized: 8, disk: 64 }, { backend: 'host', eviction: { reserve: 0.5 } });
  try {
    const { id } = store.createSequence();
    store.allocate(id, 24);
    await Promise.all(Array.from({ length: 24 }, (_, i) => store.write(id, i, blockContent(i))));
  } finally {
    // Evictions are still moving blocks down: close must let them land before the backend goes.
    await store.close();
    dir.cleanup();
  }
});
