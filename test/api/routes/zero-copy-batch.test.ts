/**
 * Zero-copy batches on the host backend: acquire-many brings blocks from every tier into
 * tier 0 at once (one entry failing alone), refuses a batch tier 0 cannot hold saying how
 * many fit, release-many answers per entry, and attach restores a cached prefix and
 * acquires it with room to continue, in one call; then the same over HTTP.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { buildServer } from '../../../api/server.js';
import { blockHash, ROOT_HASH } from '../../../runtime/prefix.js';
import type { SpillwayError } from '../../../runtime/errors.js';
import { blockContent, FOUR_BIT_BOUND, relativeError, tempDir, TINY_MODEL, tinyStore, withHostStore, writeSequence } from '../../helpers.js';

const LADDER = { raw: 6, quantized: 2, disk: 32 };
const EIO = 5;


test('acquire-many brings blocks from every tier into tier 0 at once; one failed fill fails its entry alone', async () => {
  await withHostStore(LADDER, async (store) => {
    const data = await writeSequence(store, 'ctx', 12, 100);
    const lease = store.createLease('engine').id;
    // Blocks 0-3 went down to disk, 10-11 are still raw; one disk read fails.
    store.injectDiskFault('read', EIO, 1);
    const got = await store.acquireMany(lease, 'ctx', [0, 1, 2, 3, 10, 11]);
    assert.deepEqual(got.map((e) => e.index), [0, 1, 2, 3, 10, 11], 'in the order asked');
    const failed = got.filter((e) => 'error' in e);
    assert.equal(failed.length, 1, JSON.stringify(got));
    assert.equal(failed[0]!.error!.code, 'IO_ERROR');
    const held = got.filter((e): e is Extract<typeof e, { slot: number }> => !('error' in e));
    assert.equal(new Set(held.map((e) => e.slot)).size, held.length, 'distinct slots');
    assert.ok(held.some((e) => e.tier === 'disk' && e.promoted));
    assert.ok(held.some((e) => e.tier === 'raw' && !e.promoted && !e.lossy));
    for (const e of held) {
      const now = await store.read('ctx', e.index, { promote: false });
      assert.equal(now.tier, 'raw', `block ${e.index} is in tier 0`);
      if (e.lossy) assert.ok(relativeError(data[e.index]!, now.data) < FOUR_BIT_BOUND);
      else assert.ok(now.data.equals(data[e.index]!));
    }
    // The failed block reads fine afterwards (the fault was one read), and is not held.
    const retry = await store.acquireMany(lease, 'ctx', [failed[0]!.index]);
    assert.ok(!('error' in retry[0]!));
    assert.equal(store.stats().leasedBlocks, 6);

    const released = await store.releaseMany(lease, [...held, retry[0]! as { blockId: number }].map((e) => ({ blockId: e.blockId })).concat([{ blockId: 9999 }]));
    assert.equal(released.filter((e) => 'error' in e).length, 1, 'the unknown block fails alone');
    const last = released.at(-1)!;
    assert.equal('error' in last && last.error.code, 'INVALID_ARGUMENT');
    assert.equal(store.stats().leasedBlocks, 0);
  });
});

test('acquire-many refuses up front a batch tier 0 cannot hold, saying how many fit', async () => {
  await withHostStore(LADDER, async (store) => {
    await writeSequence(store, 'big', 10, 200);
    const a = store.createLease('a').id;
    const b = store.createLease('b').id;
    await assert.rejects(store.acquireMany(a, 'big', [0, 1, 2, 3, 4, 5, 6]), (err: SpillwayError) => {
      assert.equal(err.code, 'INVALID_ARGUMENT');
      assert.equal(err.details.field, 'indices');
      assert.equal(err.details.max, LADDER.raw);
      return true;
    });
    await store.acquireMany(a, 'big', [0, 1, 2, 3]);
    await assert.rejects(store.acquireMany(b, 'big', [4, 5, 6]), (err: SpillwayError) => err.details.max === 2);
    // The same lease counts its own holds as room: acquiring them again adds no pin.
    const again = await store.acquireMany(a, 'big', [0, 1, 2, 3, 4, 5]);
    assert.ok(again.every((e) => !('error' in e) && e.pins === 1));
    await assert.rejects(store.acquireMany(a, 'big', [0, 99]), (err: SpillwayError) => err.code === 'BLOCK_NOT_FOUND' && err.details.field === 'indices.1');
    assert.equal(store.stats().leasedBlocks, 6, 'a refused batch holds nothing');
  });
});

test('attach restores a cached prefix and acquires it with new blocks to continue, in one call', async () => {
  await withHostStore(LADDER, async (store) => {
    store.createSequence('first');
    store.allocate('first', 5);
    const hashes: string[] = [];
    const data: Buffer[] = [];
    for (let i = 0; i < 5; i++) {
      const tokens = Array.from({ length: TINY_MODEL.tokensPerBlock }, (_, t) => i * 10 + t);
      hashes.push(blockHash(hashes[i - 1] ?? ROOT_HASH, tokens));
      data.push(blockContent(300 + i));
      await store.write('first', i, data[i]!, tokens);
    }
    store.freeSequence('first');
    const lease = store.createLease('engine').id;
    const unknown = 'f'.repeat(32);
    const got = await store.attachAndAcquire(lease, [...hashes.slice(0, 4), unknown], 2, 'second');
    assert.equal(got.id, 'second');
    assert.equal(got.attached, 4);
    assert.equal(got.blocks.length, 6);
    for (const e of got.blocks.slice(0, 4)) {
      assert.ok(!('error' in e) && e.written);
      const now = await store.read('second', e.index, { promote: false });
      assert.ok(relativeError(data[e.index]!, now.data) < FOUR_BIT_BOUND);
    }
    assert.ok(got.blocks.slice(4).every((e) => !('error' in e) && !e.written && e.tier === null));
    // The lease's 2 unwritten blocks of 'second' stay pinned outside this batch.
    await assert.rejects(store.attachAndAcquire(lease, hashes, 3), (err: SpillwayError) => err.details.field === 'allocate' && err.details.max === LADDER.raw - 2);
    assert.equal(store.stats().sequences, 1, 'a refused attach creates no sequence');
  });
});

test('the batch routes over HTTP: acquire-many by range, release-many, attach; errors name the field', async () => {
  const dir = tempDir();
  const app = await buildServer(await tinyStore(dir.path, LADDER, { backend: 'host' }));
  const call = async (url: string, payload: object, status = 200) => {
    const res = await app.inject({ method: 'POST', url, payload });
    assert.equal(res.statusCode, status, `${url}: ${res.body}`);
    return res.json();
  };
  try {
    const lease = await call('/v1/zero-copy/leases', { client: 'engine' }, 201);
    const at = `/v1/zero-copy/leases/${lease.id}`;
    await call('/v1/sequences', { id: 'h' }, 201);
    await call('/v1/sequences/h/blocks', { count: 4 }, 201);
    const got = await call(`${at}/acquire-many`, { sequence: 'h', start: 1, count: 3 });
    assert.deepEqual(got.blocks.map((e: { index: number }) => e.index), [1, 2, 3]);
    assert.ok(got.blocks.every((e: { written: boolean; slot: number }) => !e.written && Number.isInteger(e.slot)));
    const released = await call(`${at}/release-many`, { blocks: got.blocks.map((e: { blockId: number }) => ({ blockId: e.blockId })) });
    assert.ok(released.blocks.every((e: { pins: number }) => e.pins === 0));
    const tooMany = await call(`${at}/acquire-many`, { sequence: 'h', indices: [0, 1, 2, 3, 0, 1, 2] }, 200);
    assert.equal(tooMany.blocks.length, 7, 'repeated indices name the same blocks: 4 fit');
    await call(`${at}/release-many`, { blocks: [0, 1, 2, 3].map((i) => ({ blockId: tooMany.blocks[i].blockId })) });
    const bad = await call(`${at}/acquire-many`, { sequence: 'h', start: 0 }, 400);
    assert.equal(bad.error.code, 'INVALID_ARGUMENT');
    const attached = await call(`${at}/attach`, { prefix: [], allocate: 2 }, 201);
    assert.equal(attached.blocks.length, 2);
    const over = await call(`${at}/attach`, { prefix: [], allocate: 7 }, 400);
    assert.equal(over.error.field, 'allocate');
    assert.equal(over.error.max, LADDER.raw - 2);
  } finally {
    await app.close();
    dir.cleanup();
  }
});
