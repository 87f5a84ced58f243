/**
 * Zero-copy bookkeeping on the host backend: leases (create, heartbeat, end, expiry),
 * acquire pinning a block in tier 0 at a stable slot, release (written or not, by block
 * id), the races between expiry and an acquire in flight, and the HTTP routes. The host
 * backend has no device memory to share, so the engine's own writes into a slot are
 * tested on the GPU (zerocopy.gpu.test.ts and clients/python/zero_copy_engine.py); here
 * the bytes a slot holds come from a promotion or from a write into the held block.
 */
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { test } from 'node:test';
import { buildServer } from '../../../api/server.js';
import { HostBackend } from '../../../runtime/backends/host.js';
import type { Backend } from '../../../runtime/backends/backend.js';
import type { SpillwayError } from '../../../runtime/errors.js';
import { computeLayout } from '../../../runtime/layout.js';
import { BlockStore } from '../../../runtime/store.js';
import { blockContent, FOUR_BIT_BOUND, relativeError, tempDir, tinyConfig, tinyStore, withHostStore } from '../../helpers.js';

type Slots = { raw: number; quantized: number; disk: number };
const LADDER: Slots = { raw: 2, quantized: 2, disk: 16 };


async function writeBlocks(store: BlockStore, id: string, count: number): Promise<Buffer[]> {
  store.createSequence(id);
  store.allocate(id, count);
  const data = Array.from({ length: count }, (_, i) => blockContent(9000 + i));
  for (let i = 0; i < count; i++) await store.write(id, i, data[i]!);
  return data;
}

/** Asserts that `call` fails with `code`, naming `field` where given. */
async function rejectsWith(call: () => unknown, code: string, field?: string): Promise<void> {
  await assert.rejects(async () => call(), (err: SpillwayError) => {
    assert.equal(err.code, code, err.message);
    if (field !== undefined) assert.equal(err.details.field, field, err.message);
    return true;
  });
}

const used = (store: BlockStore) => store.stats().tiers.map((t) => t.used);

test('a lease is created, renewed by heartbeat and ended; an unknown or ended lease is LEASE_NOT_FOUND', async () => {
  await withHostStore(LADDER, async (store) => {
    const lease = store.createLease('engine-0', 5000);
    assert.match(lease.id, /^lease-[0-9a-f]{24}$/);
    assert.equal(lease.ttlMs, 5000);
    assert.equal(lease.blocks, 0);
    await sleep(5);
    assert.ok(store.heartbeat(lease.id).expiresAt > lease.expiresAt);
    assert.equal(store.createLease('engine-1').ttlMs, 30_000, 'the default TTL');
    await rejectsWith(() => store.createLease('has space'), 'INVALID_ARGUMENT', 'client');
    await rejectsWith(() => store.createLease('x', 10), 'INVALID_ARGUMENT', 'ttlMs');
    assert.deepEqual(await store.endLease(lease.id), { released: 0 });
    await rejectsWith(() => store.heartbeat(lease.id), 'LEASE_NOT_FOUND', 'lease');
    await rejectsWith(() => store.endLease(lease.id), 'LEASE_NOT_FOUND', 'lease');
    await rejectsWith(() => store.heartbeat('lease-000000000000000000000000'), 'LEASE_NOT_FOUND', 'lease');
  });
});

test('an acquired block is never evicted under pressure and keeps its slot; one pin per lease', async () => {
  await withHostStore(LADDER, async (store) => {
    const data = await writeBlocks(store, 'a', 1);
    const lease = store.createLease('engine').id;
    const first = await store.acquire(lease, 'a', 0);
    assert.deepEqual({ ...first, slot: 0 }, { slot: 0, blockId: first.blockId, written: true, lossy: false, tier: 'raw', promoted: false, pins: 1 });
    store.allocate('a', 7);
    for (let i = 1; i < 8; i++) await store.write('a', i, blockContent(i)); // six evictions through the other slot
    store.checkInvariants();
    const again = await store.acquire(lease, 'a', 0);
    assert.equal(again.slot, first.slot, 'the slot is stable');
    assert.equal(again.pins, 1, 'acquiring again under the same lease adds no pin');
    const read = await store.read('a', 0);
    assert.equal(read.tier, 'raw');
    assert.ok(read.data.equals(data[0]!), 'never quantized');

    const other = store.createLease('engine-b').id;
    assert.equal((await store.acquire(other, 'a', 0)).pins, 2);
    assert.equal((await store.release(other, first.blockId)).pins, 1);
    // An explicit unpin never undoes a lease's pin.
    await rejectsWith(() => store.unpin('a', 0), 'INVALID_ARGUMENT', 'index');
    store.pin('a', 0);
    assert.deepEqual(store.unpin('a', 0), { pins: 1 });

    // Both tier-0 slots pinned: neither a write nor a promotion finds room.
    await store.acquire(lease, 'a', 7);
    await rejectsWith(() => store.write('a', 6, blockContent(6)), 'CAPACITY_EXCEEDED');
    await rejectsWith(() => store.acquire(lease, 'a', 1), 'CAPACITY_EXCEEDED');
    assert.equal(store.heartbeat(lease).blocks, 2);
    assert.deepEqual(await store.endLease(lease), { released: 2 });
    await store.write('a', 6, blockContent(6));
  });
});

test('acquire promotes a block from disk; release with written makes the slot\'s bytes the block, exact', async () => {
  await withHostStore(LADDER, async (store) => {
    const data = await writeBlocks(store, 'p', 6);
    const lease = store.createLease('engine').id;
    const got = await store.acquire(lease, 'p', 0);
    assert.equal(got.tier, 'disk');
    assert.equal(got.promoted, true);
    assert.equal(got.lossy, true);
    const slotBytes = await store.read('p', 0, { promote: false });
    assert.equal(slotBytes.tier, 'raw');
    assert.ok(relativeError(data[0]!, slotBytes.data) < FOUR_BIT_BOUND);
    const [raw, quantized, disk] = used(store);
    const released = await store.release(lease, got.blockId, { written: true });
    assert.deepEqual(released, { blockId: got.blockId, pins: 0, written: true, generation: 2 });
    assert.deepEqual(used(store), [raw, quantized! - 1, disk! - 1], 'its quantized copies are dropped');
    const after = await store.read('p', 0);
    assert.equal(after.lossy, false, 'the slot is now the block, exact');
    assert.ok(after.data.equals(slotBytes.data));
  });
});

test('a new block is acquired for writing in place; released without written, its slot goes back', async () => {
  await withHostStore(LADDER, async (store) => {
    store.createSequence('n');
    store.allocate('n', 1);
    const lease = store.createLease('engine').id;
    const got = await store.acquire(lease, 'n', 0);
    assert.deepEqual({ ...got, slot: 0 }, { slot: 0, blockId: got.blockId, written: false, lossy: false, tier: null, promoted: false, pins: 1 });
    assert.equal(used(store)[0], 1);
    await store.release(lease, got.blockId);
    assert.equal(used(store)[0], 0);
    await rejectsWith(() => store.read('n', 0), 'BLOCK_NOT_WRITTEN');

    // The host cannot reach a slot from another process; a write into the held block lands in it.
    const again = await store.acquire(lease, 'n', 0);
    const bytes = blockContent(77);
    await store.write('n', 0, bytes);
    assert.equal((await store.acquire(lease, 'n', 0)).slot, again.slot);
    assert.equal((await store.release(lease, again.blockId, { written: true })).written, true);
    const read = await store.read('n', 0);
    assert.equal(read.lossy, false);
    assert.ok(read.data.equals(bytes));
  });
});

test('release names the block by id: double release, another lease, a committed block and a freed sequence', async () => {
  await withHostStore(LADDER, async (store) => {
    store.createSequence('r');
    store.allocate('r', 2);
    await store.write('r', 0, blockContent(1), [1, 2, 3, 4]);
    await store.write('r', 1, blockContent(2));
    const lease = store.createLease('engine').id;
    const other = store.createLease('other').id;
    const committed = await store.acquire(lease, 'r', 0);
    const plain = await store.acquire(lease, 'r', 1);
    await rejectsWith(() => store.release(other, plain.blockId), 'INVALID_ARGUMENT', 'blockId');
    await rejectsWith(() => store.release(lease, 999), 'INVALID_ARGUMENT', 'blockId');
    await rejectsWith(() => store.release('lease-000000000000000000000000', plain.blockId), 'LEASE_NOT_FOUND', 'lease');
    await rejectsWith(() => store.release(lease, committed.blockId, { written: true }), 'BLOCK_IMMUTABLE', 'written');
    assert.equal((await store.release(lease, committed.blockId)).pins, 0);
    await rejectsWith(() => store.release(lease, committed.blockId), 'INVALID_ARGUMENT', 'blockId');

    // Freed with its sequence, a held block stays (pinned, in its slot) until released.
    const blocks = store.stats().blocks;
    store.freeSequence('r');
    await sleep(1);
    assert.equal(store.stats().blocks, blocks, 'the held block is not dropped');
    assert.equal(store.stats().pinnedBlocks, 1);
    store.checkInvariants();
    assert.equal((await store.release(lease, plain.blockId)).pins, 0);
    assert.equal(store.stats().blocks, blocks - 1, 'dropped once released');
    assert.equal(used(store)[0], 1, 'the committed block stays cached');
  });
});

test('an expired lease releases its pins: promoted caches dropped, unwritten slots freed, pinned blocks evictable', async () => {
  await withHostStore({ raw: 3, quantized: 2, disk: 16 }, async (store) => {
    const data = await writeBlocks(store, 'e', 5); // 0 and 1 below tier 0; 2, 3, 4 in it
    store.allocate('e', 2);
    const lease = store.createLease('doomed', 100).id;
    await store.acquire(lease, 'e', 4);
    await store.acquire(lease, 'e', 0);
    await store.acquire(lease, 'e', 5);
    await rejectsWith(() => store.write('e', 6, blockContent(6)), 'CAPACITY_EXCEEDED');
    assert.equal(store.stats().pinnedBlocks, 3);
    await sleep(300);
    await rejectsWith(() => store.heartbeat(lease), 'LEASE_NOT_FOUND', 'lease');
    const expired = await store.telemetry.registry.getSingleMetric('spillway_zero_copy_leases_expired_total')!.get();
    assert.equal(expired.values[0]!.value, 1);
    assert.equal(store.stats().pinnedBlocks, 0);
    assert.equal(used(store)[0], 1, 'only the exact block 4 keeps its tier-0 slot');
    assert.notEqual((await store.read('e', 0, { promote: false })).tier, 'raw', 'the abandoned cache of block 0 is gone');
    await store.write('e', 6, blockContent(6));
    await store.write('e', 5, blockContent(5));
    assert.ok((await store.read('e', 4)).data.equals(data[4]!));
  });
});

test('a lease that expires while an acquire is in flight leaves nothing held', async () => {
  const dir = tempDir();
  const config = tinyConfig(dir.path, LADDER, { backend: 'host' });
  const layout = computeLayout(config);
  const backend: Backend = new HostBackend(layout, config.tiers.disk.path, config.tiers.disk.direct, config.tiers.disk.inFlight, 'test');
  // Holds fills and quantizations at a gate, so that the lease can end while one waits.
  let open = () => {};
  let gate = Promise.resolve();
  const close = () => {
    gate = new Promise((resolve) => (open = resolve));
  };
  const { fill, quantize } = backend;
  backend.fill = async (...args) => gate.then(() => fill.apply(backend, args));
  backend.quantize = async (...args) => gate.then(() => quantize.apply(backend, args));
  const store = new BlockStore(config, backend, layout);
  try {
    await writeBlocks(store, 'f', 5);
    store.allocate('f', 1);

    /** Ends the lease while the acquire of `index` waits at the gate; nothing stays pinned. */
    const endWhileAcquiring = async (index: number) => {
      const lease = store.createLease('engine').id;
      close();
      const acquiring = store.acquire(lease, 'f', index);
      await sleep(5);
      await store.endLease(lease);
      open();
      await rejectsWith(() => acquiring, 'LEASE_NOT_FOUND', 'lease');
      assert.equal(store.stats().pinnedBlocks, 0);
      store.checkInvariants();
    };
    // A written block: its promotion completes, as a cache.
    await endWhileAcquiring(0);
    assert.equal((await store.read('f', 0, { promote: false })).tier, 'raw');
    // A new block: the slot its acquire evicted for is given back.
    await endWhileAcquiring(5);
    assert.equal(used(store)[0], 1, 'one evicted slot, given back');

    // Ended before the acquire got the block's lock.
    const lease = store.createLease('engine').id;
    const queued = store.acquire(lease, 'f', 4);
    await store.endLease(lease);
    await rejectsWith(() => queued, 'LEASE_NOT_FOUND', 'lease');
    store.checkInvariants();
  } finally {
    open();
    await store.close();
    dir.cleanup();
  }
});

test('pool export on the host backend is refused, naming the reason', async () => {
  await withHostStore(LADDER, async (store) => {
    await assert.rejects(async () => store.exportPool(), (err: SpillwayError) => {
      assert.equal(err.code, 'NO_DEVICE_MEMORY');
      assert.equal(err.status, 409);
      assert.match(err.message, /host backend keeps tier 0 in host memory.*needs the GPU backend/);
      return true;
    });
  });
});

test('the zero-copy routes over HTTP: errors in the shared shape, naming the field', async () => {
  const dir = tempDir();
  const app = await buildServer(await tinyStore(dir.path, LADDER, { backend: 'host' }));
  const call = async (method: 'GET' | 'POST' | 'DELETE' | 'PUT', url: string, payload?: object, status = 200) => {
    const res = await app.inject({ method, url, ...(payload ? { payload } : {}) });
    assert.equal(res.statusCode, status, `${method} ${url}: ${res.body}`);
    return res.json();
  };
  const error = async (method: 'GET' | 'POST' | 'DELETE', url: string, payload: object | undefined, status: number, code: string, field?: string) => {
    const body = await call(method, url, payload, status);
    assert.equal(body.error.code, code);
    assert.equal(body.error.field, field, body.error.message);
  };
  try {
    const pool = await call('GET', '/v1/zero-copy/pool', undefined, 409);
    assert.equal(pool.error.code, 'NO_DEVICE_MEMORY');
    assert.equal(pool.error.backend, 'host');

    await error('POST', '/v1/zero-copy/leases', { client: 'bad client' }, 400, 'INVALID_ARGUMENT', 'body.client');
    await error('POST', '/v1/zero-copy/leases', { client: 'e', ttlMs: 10 }, 400, 'INVALID_ARGUMENT', 'body.ttlMs');
    await error('POST', '/v1/zero-copy/leases/nope/heartbeat', undefined, 400, 'INVALID_ARGUMENT', 'params.id');
    await error('POST', '/v1/zero-copy/leases/lease-000000000000000000000000/heartbeat', undefined, 404, 'LEASE_NOT_FOUND', 'lease');
    const lease = await call('POST', '/v1/zero-copy/leases', { client: 'engine-1', ttlMs: 5000 }, 201);
    assert.equal(lease.blocks, 0);
    const at = `/v1/zero-copy/leases/${lease.id}`;

    await call('POST', '/v1/sequences', { id: 'zc' }, 201);
    await call('POST', '/v1/sequences/zc/blocks', { count: 2 }, 201);
    const put = await app.inject({ method: 'PUT', url: '/v1/sequences/zc/blocks/0', headers: { 'content-type': 'application/octet-stream' }, payload: blockContent(3) });
    assert.equal(put.statusCode, 200);

    await error('POST', `${at}/acquire`, { sequence: 'zc' }, 400, 'INVALID_ARGUMENT', 'body.index');
    await error('POST', `${at}/acquire`, { sequence: 'zc', index: 9 }, 404, 'BLOCK_NOT_FOUND', 'index');
    await error('POST', `${at}/acquire`, { sequence: 'nope', index: 0 }, 404, 'SEQUENCE_NOT_FOUND');
    const held = await call('POST', `${at}/acquire`, { sequence: 'zc', index: 0 });
    assert.deepEqual({ ...held, slot: 0 }, { slot: 0, blockId: held.blockId, written: true, lossy: false, tier: 'raw', promoted: false, pins: 1 });
    const fresh = await call('POST', `${at}/acquire`, { sequence: 'zc', index: 1 });
    assert.equal(fresh.written, false);
    assert.notEqual(fresh.slot, held.slot);
    assert.equal((await call('POST', `${at}/heartbeat`)).blocks, 2);

    await error('POST', `${at}/release`, { blockId: 'one' }, 400, 'INVALID_ARGUMENT', 'body.blockId');
    await error('POST', `${at}/release`, { blockId: held.blockId, extra: 1 }, 400, 'INVALID_ARGUMENT', 'body');
    assert.deepEqual(await call('POST', `${at}/release`, { blockId: held.blockId }), { blockId: held.blockId, pins: 0, written: true, generation: 1 });
    await error('POST', `${at}/release`, { blockId: held.blockId }, 400, 'INVALID_ARGUMENT', 'blockId');
    assert.deepEqual(await call('DELETE', at), { released: 1 });
    await error('DELETE', at, undefined, 404, 'LEASE_NOT_FOUND', 'lease');
    await error('POST', `${at}/acquire`, { sequence: 'zc', index: 0 }, 404, 'LEASE_NOT_FOUND', 'lease');
  } finally {
    await app.close();
    dir.cleanup();
  }
});
