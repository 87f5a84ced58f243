/**
 * The block routes' reused buffers: the pool's rules, that reuse never mixes two requests' bytes, and
 * that a client hanging up in the middle of a streamed answer leaves the server whole.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { request as httpRequest } from 'node:http';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import type { FastifyInstance } from 'fastify';
import { BufferPool } from '../../api/buffer-pool.js';
import { SpillwayClient } from '../../api/client.js';
import { buildServer } from '../../api/server.js';
import { parseConfig } from '../../runtime/config.js';
import { openStore } from '../../runtime/open.js';
import { blockContent, metricBecomes, tempDir, tinyStore } from '../helpers.js';

test('the pool lends a buffer once, reuses it by size class, and keeps no more than its cap idle', () => {
  const pool = new BufferPool(1024, 3 * 1024);
  const a = pool.take(1024);
  assert.equal(a.length, 1024);
  pool.give(a);
  pool.give(a); // a second give is ignored: the buffer must not be lent twice
  assert.equal(pool.idleBytes, 1024);
  const b = pool.take(1000);
  assert.equal(b.buffer, a.buffer, 'the same size class is reused');
  assert.equal(b.length, 1000);
  assert.notEqual(pool.take(1024).buffer, a.buffer, 'a lent buffer is not lent again');
  // Two units: a class of its own, rounded up.
  const big = pool.take(1025);
  assert.equal(big.buffer.byteLength, 2048);
  pool.give(b);
  pool.give(big);
  assert.equal(pool.idleBytes, 3072);
  const c = pool.take(1024);
  pool.give(pool.take(2048));
  pool.give(c);
  assert.ok(pool.idleBytes <= 3072);
  // Buffers the pool did not lend, and small ones, are never pooled.
  const idle = pool.idleBytes;
  pool.give(Buffer.alloc(1024));
  pool.give(pool.take(100));
  assert.equal(pool.idleBytes, idle);
});

let app: FastifyInstance;
let client: SpillwayClient;
const dir = tempDir();

before(async () => {
  app = await buildServer(await tinyStore(dir.path, { raw: 64, quantized: 8, disk: 64 }));
  const url = await app.listen({ host: '127.0.0.1', port: 0 });
  client = new SpillwayClient({ baseUrl: url });
});

after(async () => {
  client.close();
  await app.close();
  dir.cleanup();
});

test('concurrent block reads and writes over HTTP each get their own bytes, failing batches among them', async () => {
  const sequences = 8;
  const blocks = 6;
  for (let s = 0; s < sequences; s++) {
    await client.createSequence({ id: `pool-${s}` });
    await client.allocate(`pool-${s}`, blocks);
  }
  const seed = (s: number, i: number, round: number) => 1000 * round + 10 * s + i;
  for (let round = 0; round < 4; round++) {
    await Promise.all(Array.from({ length: sequences }, async (_, s) => {
      // Single writes and a batch write, then reads of every kind, all in flight at once.
      await Promise.all([
        ...[0, 1, 2].map((i) => client.writeBlock(`pool-${s}`, i, blockContent(seed(s, i, round)))),
        client.writeBlocks(`pool-${s}`, [3, 4, 5].map((i) => ({ index: i, data: blockContent(seed(s, i, round)) }))),
      ]);
      const [singles, batch, failed] = await Promise.all([
        Promise.all([0, 1, 2, 3, 4, 5].map((i) => client.readBlock(`pool-${s}`, i))),
        client.readBlocks(`pool-${s}`, [5, 4, 3, 2, 1, 0]),
        // Fails at its last entry while the others are read into pooled buffers.
        client.readBlocks(`pool-${s}`, [0, 1, 99]).then(() => null, (err: Error) => err),
      ]);
      singles.forEach((r, i) => assert.ok(Buffer.from(r.data).equals(blockContent(seed(s, i, round))), `pool-${s} block ${i} round ${round}`));
      for (const b of batch) assert.ok(Buffer.from(b.data).equals(blockContent(seed(s, b.index, round))), `pool-${s} batch block ${b.index} round ${round}`);
      assert.match(String(failed?.message), /body\.indices\.2/);
    }));
  }
});

test("the client reads a block into the caller's buffer when it is the answer's size, and into a fresh one otherwise", async () => {
  await client.createSequence({ id: 'into' });
  await client.allocate('into', 1);
  await client.writeBlock('into', 0, blockContent(77));
  const into = new Uint8Array(blockContent(0).length);
  const r = await client.readBlock('into', 0, { into });
  assert.equal(r.data.buffer, into.buffer);
  assert.ok(Buffer.from(into).equals(blockContent(77)));
  const small = new Uint8Array(16);
  const other = await client.readBlock('into', 0, { into: small });
  assert.notEqual(other.data.buffer, small.buffer);
  assert.ok(Buffer.from(other.data).equals(blockContent(77)));
});

test('a batch read of many blocks gives every pooled buffer back at once, with no listener-leak warning', async () => {
  const warnings: Error[] = [];
  const onWarning = (w: Error) => warnings.push(w);
  process.on('warning', onWarning);
  try {
    await client.createSequence({ id: 'many' });
    await client.allocate('many', 24);
    await client.writeBlocks('many', Array.from({ length: 24 }, (_, i) => ({ index: i, data: blockContent(500 + i) })));
    const blocks = await client.readBlocks('many', Array.from({ length: 24 }, (_, i) => 23 - i));
    blocks.forEach((b, k) => assert.ok(Buffer.from(b.data).equals(blockContent(500 + 23 - k)), `block ${23 - k}`));
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(warnings.map((w) => w.name), []);
  } finally {
    process.off('warning', onWarning);
  }
});

/** Posts `body` to `url`, takes the answer's first bytes, then goes away. */
function readThenHangUp(url: string, body: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(url, { method: 'POST', headers: { 'content-type': 'application/json' } }, (res) => {
      res.once('data', () => {
        req.destroy();
        resolve();
      });
    });
    req.on('error', (err) => (req.destroyed ? resolve() : reject(err)));
    req.end(body);
  });
}

test('a client gone in the middle of a streamed batch answer takes nothing down: what the answer held comes back, and later answers are whole', async () => {
  const MiB = 1024 * 1024;
  const blocks = 24;
  const dir = tempDir();
  // Blocks of 1 MiB: an answer of 24 of them is more than the sockets can hold, so a hang-up cuts it short.
  const store = await openStore(parseConfig({
    server: { maxEventLoopDelayMs: 0, maxBatchBytes: 32 * MiB, maxBodyBytesInFlight: 128 * MiB },
    model: { layers: 4, kvHeads: 8, headDim: 128, tokensPerBlock: 64, dtype: 'bf16' },
    tiers: { raw: { bytes: 32 * MiB }, quantized: { bytes: 16 * MiB }, disk: { path: join(dir.path, 'tier2.slots'), bytes: 64 * MiB } },
  }));
  const server = await buildServer(store);
  // For each answer, whether it closed before its last byte went out.
  const cutShort: boolean[] = [];
  server.server.on('request', (_req, res) => res.once('close', () => cutShort.push(!res.writableFinished)));
  const url = await server.listen({ host: '127.0.0.1', port: 0 });
  const bigClient = new SpillwayClient({ baseUrl: url });
  try {
    // Random bytes: they stay in the raw tier, read back bit for bit.
    const data = Array.from({ length: blocks }, () => randomBytes(store.layout.rawBlockBytes));
    await bigClient.createSequence({ id: 'cut' });
    await bigClient.allocate('cut', blocks);
    await bigClient.writeBlocks('cut', data.map((d, i) => ({ index: i, data: d })));
    const all = data.map((_, i) => i);
    for (let round = 0; round < 3; round++) {
      cutShort.length = 0;
      await readThenHangUp(`${url}/v1/sequences/cut/blocks/read`, JSON.stringify({ indices: all }));
      const back = await bigClient.readBlocks('cut', all);
      back.forEach((b, i) => assert.ok(Buffer.from(b.data).equals(data[i]!), `round ${round}: block ${i}`));
      assert.deepEqual([...cutShort].sort(), [false, true], `round ${round}: the hung-up answer was cut short, the next one sent whole`);
    }
    await metricBecomes(server, 'spillway_http_body_bytes_in_flight', 0, 'every answer gave back the bytes it held');
  } finally {
    bigClient.close();
    await server.close();
    dir.cleanup();
  }
});
