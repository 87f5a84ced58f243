/** The TypeScript client over a real socket, as an engine would use it. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { SpillwayClient } from '../../api/client.js';
import { buildServer } from '../../api/server.js';
import { SpillwayError } from '../../runtime/errors.js';
import { chainHashes } from '../../runtime/prefix.js';
import { blockContent, FOUR_BIT_BOUND, relativeError, tempDir, tinyStore, TINY_RAW } from '../helpers.js';

const TOKEN = 'client-test-token-0123456789';

test('the client runs a decode loop: allocate, write with tokens, look up, attach, read in batches, free', async () => {
  const dir = tempDir();
  const store = await tinyStore(dir.path, { raw: 3, quantized: 3, disk: 16 }, { server: { token: TOKEN } });
  const app = await buildServer(store);
  try {
    const url = await app.listen({ host: '127.0.0.1', port: 0 });
    const client = new SpillwayClient({ baseUrl: url, token: TOKEN });
    assert.deepEqual(await client.health(), { ok: true });
    const status = await client.status();
    assert.equal(status.capacity.rawBlockBytes, TINY_RAW);
    const tpb = status.capacity.tokensPerBlock;

    // Decode: every tpb tokens a block is full, allocated, written and committed.
    const tokens = Array.from({ length: 5 * tpb }, (_, i) => 1000 + i);
    const data = (i: number) => blockContent(300 + i);
    const { id } = await client.createSequence({ id: 'decode-a' });
    const hashes: string[] = [];
    for (let b = 0; b < 5; b++) {
      const [ref] = await client.allocate(id, 1);
      assert.equal(ref!.index, b);
      const written = await client.writeBlock(id, b, data(b), tokens.slice(b * tpb, (b + 1) * tpb));
      hashes.push(written.hash!);
    }
    assert.deepEqual(hashes, chainHashes(tokens, tpb));

    // A second request with the same prompt finds it cached and attaches it.
    const lookup = await client.lookupPrefix({ tokens: [...tokens, 1, 2, 3, 4] });
    assert.equal(lookup.cached.length, 5);
    const b = await client.createSequence({ id: 'decode-b', prefix: lookup.hashes });
    assert.equal(b.attached.length, 5);
    const blocks = await client.readBlocks('decode-b', [0, 1, 2, 3, 4]);
    for (const blk of blocks) {
      if (blk.lossy) assert.ok(relativeError(data(blk.index), blk.data) < FOUR_BIT_BOUND);
      else assert.ok(data(blk.index).equals(blk.data));
    }
    // Read into a caller's (shared) buffer, the answer's blocks are views of it, the same bytes.
    const area = new Uint8Array(new SharedArrayBuffer(6 * blocks[0]!.data.byteLength + 4096));
    const into = await client.readBlocks('decode-b', [0, 1, 2, 3, 4], { promote: false, into: area });
    for (const [k, blk] of into.entries()) {
      assert.equal(blk.data.buffer, area.buffer);
      assert.ok(Buffer.from(blk.data).equals(Buffer.from(blocks[k]!.data)));
    }
    // One that does not fit is read into a buffer of its own.
    const small = new Uint8Array(1024);
    const apart = await client.readBlocks('decode-b', [0, 1], { promote: false, into: small });
    assert.notEqual(apart[0]!.data.buffer, small.buffer);

    // Its own continuation goes in as a batch.
    await client.allocate('decode-b', 2);
    const batch = await client.writeBlocks('decode-b', [{ index: 5, data: data(50) }, { index: 6, data: data(51) }]);
    assert.deepEqual(batch.map((w) => w.index), [5, 6]);
    const one = await client.readBlock('decode-b', 6, { promote: false });
    assert.equal(one.lossy, false);
    assert.ok(one.data.equals(data(51)));
    assert.deepEqual(await client.pin('decode-b', 6), { pins: 1 });
    assert.deepEqual(await client.unpin('decode-b', 6), { pins: 0 });

    const limits = await client.setLimits({ maxLiveSequences: 10 });
    assert.equal(limits.limits.maxLiveSequences, 10);
    assert.equal(limits.live.sequences, 2);

    await assert.rejects(client.readBlock('decode-b', 99), (err: unknown) => {
      assert.ok(err instanceof SpillwayError);
      assert.equal(err.code, 'BLOCK_NOT_FOUND');
      assert.equal(err.details.httpStatus, 404);
      return true;
    });
    await assert.rejects(new SpillwayClient({ baseUrl: url }).status(), { code: 'UNAUTHORIZED' });

    assert.deepEqual(await client.freeSequence('decode-a'), { released: 0, cached: 0 }, 'decode-b still holds the shared blocks');
    assert.deepEqual(await client.freeSequence('decode-b'), { released: 2, cached: 5 });
    assert.equal((await client.status()).stats.sequences, 0);
    store.checkInvariants();
  } finally {
    await app.close();
    dir.cleanup();
  }
});

test('the client holds a zero-copy lease: acquire pins in tier 0, release lets go; weights and pool answer what this backend has', async () => {
  const dir = tempDir();
  const store = await tinyStore(dir.path, { raw: 2, quantized: 2, disk: 8 });
  const app = await buildServer(store);
  try {
    const client = new SpillwayClient({ baseUrl: await app.listen({ host: '127.0.0.1', port: 0 }) });
    await client.createSequence({ id: 's' });
    await client.allocate('s', 4);
    for (let i = 0; i < 4; i++) await client.writeBlock('s', i, blockContent(700 + i));

    const lease = await client.createLease({ client: 'engine-0', ttlMs: 60_000 });
    const held = await client.acquire(lease.id, { sequence: 's', index: 0 });
    assert.equal(held.written, true);
    assert.equal(held.pins, 1);
    assert.equal((await client.heartbeat(lease.id)).blocks, 1);
    const { leases, leasedBlocks } = (await client.status()).stats;
    assert.deepEqual({ leases, leasedBlocks }, { leases: 1, leasedBlocks: 1 });
    const released = await client.release(lease.id, { blockId: held.blockId });
    assert.equal(released.pins, 0);
    assert.deepEqual(await client.endLease(lease.id), { released: 0 });
    await assert.rejects(client.heartbeat(lease.id), { code: 'LEASE_NOT_FOUND' });

    const backend = (await client.status()).backend.name;
    if (backend === 'host') await assert.rejects(client.pool(), { code: 'NO_DEVICE_MEMORY' });
    else assert.equal(Buffer.from((await client.pool()).handle, 'base64').length, 64);
    assert.deepEqual(await client.weights(), { state: 'none' });
    assert.deepEqual(await client.weightsTensors(), []);
    await assert.rejects(client.weightsIpc(), { code: 'NOT_FOUND' });
    store.checkInvariants();
  } finally {
    await app.close();
    dir.cleanup();
  }
});
