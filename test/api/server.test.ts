/** The HTTP API over a real store: through fastify.inject and through a listening server. */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { FastifyInstance } from 'fastify';
import { pack, unpack } from 'msgpackr';
import { buildServer } from '../../api/server.js';
import { chainHashes } from '../../runtime/prefix.js';
import { blockContent, expectedBackend, FOUR_BIT_BOUND, relativeError, tempDir, tinyStore, TINY_RAW } from '../helpers.js';

let app: FastifyInstance;
const dir = tempDir();

before(async () => {
  app = await buildServer(await tinyStore(dir.path, { raw: 2, quantized: 2, disk: 8 }));
});

after(async () => {
  await app.close();
  dir.cleanup();
});

test('status reports tier capacities, the active backend and why', async () => {
  const res = await app.inject({ method: 'GET', url: '/v1/status' });
  assert.equal(res.statusCode, 200);
  const body = res.json();
  assert.equal(body.backend.name, await expectedBackend());
  assert.ok(body.backend.reason.length > 0);
  assert.deepEqual(body.capacity.tiers.map((t: { name: string; slots: number }) => [t.name, t.slots]), [['raw', 2], ['quantized', 2], ['disk', 8]]);
  assert.equal(body.capacity.totalTokens, 48);
  // 5% of 2 slots, rounded down: these tiers keep no slot free ahead of demand.
  assert.equal(body.config.eviction.reserve, 0.05);
  assert.deepEqual(body.stats.tiers.map((t: { reserve: number }) => t.reserve), [0, 0, 0]);
  assert.equal(body.config.server.auth, false);
  // bits stored per value, the whole block's: its quantized bytes over its values
  const values = body.capacity.rawBlockBytes / { fp32: 4, fp16: 2, bf16: 2 }[body.config.model.dtype as 'fp32'];
  assert.ok(Math.abs(body.quantization.bitsPerValue - (body.capacity.quantizedBlockBytes * 8) / values) < 1e-9);
  assert.equal(body.quantization.classes.length, 1);
});

test('a block written over HTTP reads back, bit-exact while raw and within bound once quantized', async () => {
  const seq = (await app.inject({ method: 'POST', url: '/v1/sequences', payload: { id: 'http-1' } })).json();
  assert.equal(seq.id, 'http-1');
  const alloc = await app.inject({ method: 'POST', url: '/v1/sequences/http-1/blocks', payload: { count: 5 } });
  assert.equal(alloc.statusCode, 201);
  const blocks = Array.from({ length: 5 }, (_, i) => blockContent(500 + i));
  for (let i = 0; i < 5; i++) {
    const put = await app.inject({ method: 'PUT', url: `/v1/sequences/http-1/blocks/${i}`, headers: { 'content-type': 'application/octet-stream' }, payload: blocks[i] });
    assert.equal(put.statusCode, 200, put.body);
  }
  const last = await app.inject({ method: 'GET', url: '/v1/sequences/http-1/blocks/4' });
  assert.equal(last.headers['spillway-lossy'], 'false');
  assert.ok(last.rawPayload.equals(blocks[4]!));
  const first = await app.inject({ method: 'GET', url: '/v1/sequences/http-1/blocks/0?promote=false' });
  assert.equal(first.statusCode, 200);
  assert.equal(first.headers['spillway-tier'], 'disk');
  assert.equal(first.headers['spillway-lossy'], 'true');
  assert.equal(first.rawPayload.length, TINY_RAW);
  const stored = await app.inject({ method: 'GET', url: '/v1/sequences/http-1/blocks/0?format=stored' });
  assert.equal(stored.headers['spillway-format'], 'quantized');
  assert.equal(stored.rawPayload.subarray(0, 4).toString('latin1'), 'SWTQ');
});

test('prefix commits are found by lookup and attached to a new sequence', async () => {
  await app.inject({ method: 'POST', url: '/v1/sequences', payload: { id: 'p-1' } });
  await app.inject({ method: 'POST', url: '/v1/sequences/p-1/blocks', payload: { count: 2 } });
  const tokens = [1, 2, 3, 4, 5, 6, 7, 8];
  for (let i = 0; i < 2; i++) {
    const res = await app.inject({ method: 'PUT', url: `/v1/sequences/p-1/blocks/${i}?tokens=${tokens.slice(i * 4, i * 4 + 4).join(',')}`, headers: { 'content-type': 'application/octet-stream' }, payload: blockContent(900 + i) });
    assert.equal(res.statusCode, 200, res.body);
  }
  const hashes = chainHashes([...tokens, 9, 9, 9, 9], 4);
  const lookup = (await app.inject({ method: 'POST', url: '/v1/prefix/lookup', payload: { tokens: [...tokens, 9, 9, 9, 9] } })).json();
  assert.deepEqual(lookup.hashes, hashes);
  assert.equal(lookup.cached.length, 2);
  const attached = (await app.inject({ method: 'POST', url: '/v1/sequences', payload: { id: 'p-2', prefix: hashes } })).json();
  assert.equal(attached.attached.length, 2);
  const shared = await app.inject({ method: 'GET', url: '/v1/sequences/p-2/blocks/1' });
  const original = await app.inject({ method: 'GET', url: '/v1/sequences/p-1/blocks/1' });
  assert.ok(shared.rawPayload.equals(original.rawPayload));
  const rewrite = await app.inject({ method: 'PUT', url: '/v1/sequences/p-2/blocks/0', headers: { 'content-type': 'application/octet-stream' }, payload: blockContent(1) });
  assert.equal(rewrite.statusCode, 409);
  assert.equal(rewrite.json().error.code, 'BLOCK_IMMUTABLE');
});

test('bad input gets a 4xx naming the field, never a crash', async () => {
  const cases: Array<[string, string, unknown, number, string, RegExp?]> = [
    ['POST', '/v1/sequences/nope/blocks', { count: 1 }, 404, 'SEQUENCE_NOT_FOUND'],
    ['POST', '/v1/sequences/http-1/blocks', { count: 0 }, 400, 'INVALID_ARGUMENT', /body\.count/],
    ['POST', '/v1/sequences/http-1/blocks', { count: 1, extra: 1 }, 400, 'INVALID_ARGUMENT', /body/],
    ['POST', '/v1/sequences', { id: 'bad id with spaces' }, 400, 'INVALID_ARGUMENT', /sequence id/],
    ['GET', '/v1/sequences/http-1/blocks/99', undefined, 404, 'BLOCK_NOT_FOUND'],
    ['GET', '/v1/sequences/http-1/blocks/-1', undefined, 400, 'INVALID_ARGUMENT', /params\.index/],
    ['GET', '/v1/sequences/http-1/blocks/0?promote=maybe', undefined, 400, 'INVALID_ARGUMENT', /query\.promote/],
    ['POST', '/v1/prefix/lookup', { hashes: ['xyz'] }, 400, 'INVALID_ARGUMENT'],
    ['GET', '/v1/nothing-here', undefined, 404, 'NOT_FOUND'],
  ];
  for (const [method, url, payload, status, code, message] of cases) {
    const res = await app.inject({ method: method as 'GET', url, payload: payload as object });
    assert.equal(res.statusCode, status, `${method} ${url}: ${res.body}`);
    assert.equal(res.json().error.code, code, `${method} ${url}`);
    if (message) assert.match(res.json().error.message, message);
  }
  const wrongSize = await app.inject({ method: 'PUT', url: '/v1/sequences/http-1/blocks/0', headers: { 'content-type': 'application/octet-stream' }, payload: Buffer.alloc(100) });
  assert.equal(wrongSize.statusCode, 400);
  assert.equal(wrongSize.json().error.code, 'WRONG_SIZE');
  assert.equal(wrongSize.json().error.expected, TINY_RAW);
  const tooLarge = await app.inject({ method: 'PUT', url: '/v1/sequences/http-1/blocks/0', headers: { 'content-type': 'application/octet-stream' }, payload: Buffer.alloc(TINY_RAW + 200_000) });
  assert.equal(tooLarge.statusCode, 413);
  assert.equal(tooLarge.json().error.code, 'PAYLOAD_TOO_LARGE');
});

test('metrics come out as Prometheus text with spillway_ names', async () => {
  const res = await app.inject({ method: 'GET', url: '/metrics' });
  assert.equal(res.statusCode, 200);
  assert.match(res.body, /spillway_moves_total\{kind="demote",from="raw",to="quantized"\} \d+/);
  assert.match(res.body, /spillway_tier_slots\{tier="disk",state="used"\} \d+/);
});

test('a real listening server answers status', async () => {
  const dir2 = tempDir();
  const server = await buildServer(await tinyStore(dir2.path, { raw: 2, quantized: 2, disk: 4 }));
  try {
    const address = await server.listen({ host: '127.0.0.1', port: 0 });
    const res = await fetch(`${address}/v1/status`);
    assert.equal(res.status, 200);
    assert.equal(((await res.json()) as { backend: { name: string } }).backend.name, await expectedBackend());
  } finally {
    await server.close();
    dir2.cleanup();
  }
});

test('health and readiness answer without a token', async () => {
  assert.deepEqual((await app.inject({ url: '/v1/health' })).json(), { ok: true });
  const ready = await app.inject({ url: '/v1/ready' });
  assert.equal(ready.statusCode, 200);
  assert.deepEqual(ready.json(), { ready: true });
});

test('status names the I/O path of each tier and the capacity in blocks, bytes and tokens', async () => {
  const body = (await app.inject({ url: '/v1/status' })).json();
  for (const tier of ['raw', 'quantized', 'disk']) assert.ok(body.backend.paths[tier].length > 0, tier);
  for (const t of body.capacity.tiers) {
    assert.equal(t.bytes, t.slots * t.slotBytes);
    assert.equal(t.tokens, t.slots * 4);
  }
  assert.equal(body.load.shedding, null);
  assert.equal(typeof body.load.maxDiskQueue, 'number');
  assert.equal(body.config.model.tokensPerBlock, 4);
  assert.equal(body.config.server.token, undefined);
});

test('limits are read and changed at run time, held to capacity, and bad values name the field', async () => {
  const before = (await app.inject({ url: '/v1/limits' })).json();
  assert.equal(before.capacityTokens, 48);
  assert.equal(before.limits.maxTotalTokens, 48, 'a limit above capacity is held at capacity');

  const patched = await app.inject({ method: 'PATCH', url: '/v1/limits', payload: { maxTokensPerSequence: 8 } });
  assert.equal(patched.statusCode, 200, patched.body);
  assert.equal(patched.json().limits.maxTokensPerSequence, 8);
  assert.equal(patched.json().limits.maxLiveSequences, before.limits.maxLiveSequences);
  await app.inject({ method: 'POST', url: '/v1/sequences', payload: { id: 'lim-1' } });
  const over = await app.inject({ method: 'POST', url: '/v1/sequences/lim-1/blocks', payload: { count: 3 } });
  assert.equal(over.statusCode, 429);
  assert.equal(over.json().error.limit, 'maxTokensPerSequence');
  assert.equal(over.json().error.remainingBlocks, 2);

  const live = (await app.inject({ url: '/v1/limits' })).json().live.sequences;
  await app.inject({ method: 'PATCH', url: '/v1/limits', payload: { maxLiveSequences: live } });
  const full = await app.inject({ method: 'POST', url: '/v1/sequences', payload: {} });
  assert.equal(full.statusCode, 429);
  assert.equal(full.json().error.limit, 'maxLiveSequences');
  assert.equal(full.json().error.remaining, 0);

  const bad: Array<[string, unknown, RegExp]> = [
    ['PATCH', {}, /name at least one/],
    ['PATCH', { maxTotalTokens: 0 }, /body\.maxTotalTokens/],
    ['PATCH', { maxTotalTokens: 1.5 }, /body\.maxTotalTokens/],
    ['PATCH', { maxLiveSequences: -1 }, /body\.maxLiveSequences/],
    ['PATCH', { maxLiveSequences: 2, surprise: 1 }, /body/],
    ['PUT', { maxLiveSequences: 2 }, /body\.maxTokensPerSequence/],
  ];
  for (const [method, payload, message] of bad) {
    const res = await app.inject({ method: method as 'PUT', url: '/v1/limits', payload: payload as object });
    assert.equal(res.statusCode, 400, JSON.stringify(payload));
    assert.match(res.json().error.message, message);
    assert.ok(res.json().error.field.startsWith('body'));
  }
  const restored = await app.inject({ method: 'PUT', url: '/v1/limits', payload: before.limits });
  assert.deepEqual(restored.json().limits, before.limits);
  await app.inject({ method: 'DELETE', url: '/v1/sequences/lim-1' });
});

test('batch write and batch read carry many blocks as msgpack, committing a prefix chain in order', async () => {
  await app.inject({ method: 'POST', url: '/v1/sequences', payload: { id: 'batch-1' } });
  await app.inject({ method: 'POST', url: '/v1/sequences/batch-1/blocks', payload: { count: 3 } });
  const tokens = [11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22];
  const blocks = [0, 1, 2].map((i) => ({ index: i, data: blockContent(7000 + i), tokens: tokens.slice(i * 4, i * 4 + 4) }));
  const write = await app.inject({ method: 'POST', url: '/v1/sequences/batch-1/blocks/write', headers: { 'content-type': 'application/msgpack' }, payload: pack({ blocks }) });
  assert.equal(write.statusCode, 200, write.body);
  assert.deepEqual(write.json().blocks.map((b: { hash: string }) => b.hash), chainHashes(tokens, 4));

  const read = await app.inject({ method: 'POST', url: '/v1/sequences/batch-1/blocks/read', payload: { indices: [2, 0, 1], promote: false } });
  assert.equal(read.statusCode, 200, read.body);
  assert.equal(read.headers['content-type'], 'application/msgpack');
  const got = unpack(read.rawPayload) as { blocks: Array<{ index: number; tier: string; lossy: boolean; data: Buffer }> };
  assert.deepEqual(got.blocks.map((b) => b.index), [2, 0, 1]);
  for (const b of got.blocks) {
    const expected = blocks[b.index]!.data;
    if (b.lossy) assert.ok(relativeError(expected, b.data) < FOUR_BIT_BOUND, `block ${b.index} from ${b.tier}`);
    else assert.ok(expected.equals(b.data), `block ${b.index} from ${b.tier}`);
  }
  await app.inject({ method: 'DELETE', url: '/v1/sequences/batch-1' });
});

test('batches refuse malformed msgpack, wrong sizes, unknown blocks and oversize bodies, naming the entry', async () => {
  const dir2 = tempDir();
  const server = await buildServer(await tinyStore(dir2.path, { raw: 4, quantized: 4, disk: 8 }, { server: { maxBatchBytes: 2 * TINY_RAW + 1024 } }));
  try {
    await server.inject({ method: 'POST', url: '/v1/sequences', payload: { id: 'b' } });
    await server.inject({ method: 'POST', url: '/v1/sequences/b/blocks', payload: { count: 3 } });
    const post = (url: string, payload: Buffer | object, type = 'application/msgpack') =>
      server.inject({ method: 'POST', url, headers: { 'content-type': type }, payload: payload as Buffer });
    const cases: Array<[string, Buffer | object, number, string, RegExp, string?]> = [
      ['/v1/sequences/b/blocks/write', Buffer.from([0xc1, 0xff, 0x00]), 400, 'INVALID_ARGUMENT', /not valid msgpack/],
      ['/v1/sequences/b/blocks/write', Buffer.from([0x92]), 400, 'INVALID_ARGUMENT', /not valid msgpack/],
      ['/v1/sequences/b/blocks/write', pack({ blocks: [{ index: 0, data: Buffer.alloc(10) }] }), 400, 'WRONG_SIZE', /body\.blocks\.0\.data/],
      ['/v1/sequences/b/blocks/write', pack({ blocks: [{ index: 0, data: 'text' }] }), 400, 'INVALID_ARGUMENT', /body\.blocks\.0\.data/],
      ['/v1/sequences/b/blocks/write', pack({ blocks: [{ index: 7, data: blockContent(1) }] }), 404, 'BLOCK_NOT_FOUND', /body\.blocks\.0/],
      ['/v1/sequences/b/blocks/write', pack({ blocks: [0, 1, 2].map((i) => ({ index: i, data: blockContent(i) })) }), 413, 'PAYLOAD_TOO_LARGE', /too large/],
      ['/v1/sequences/nope/blocks/write', pack({ blocks: [{ index: 0, data: blockContent(1) }] }), 404, 'SEQUENCE_NOT_FOUND', /nope/],
      ['/v1/sequences/b/blocks/read', { indices: [0, 1, 2] }, 400, 'INVALID_ARGUMENT', /at most 2 blocks/, 'application/json'],
      // Of several failing entries, the first in the list is named.
      ['/v1/sequences/b/blocks/read', { indices: [9, 0] }, 404, 'BLOCK_NOT_FOUND', /body\.indices\.0/, 'application/json'],
      ['/v1/sequences/b/blocks/read', { indices: [0] }, 409, 'BLOCK_NOT_WRITTEN', /body\.indices\.0/, 'application/json'],
      ['/v1/sequences/b/blocks/read', { indices: [] }, 400, 'INVALID_ARGUMENT', /body\.indices/, 'application/json'],
    ];
    for (const [url, payload, status, code, message, type] of cases) {
      const res = await post(url, Buffer.isBuffer(payload) ? payload : type ? Buffer.from(JSON.stringify(payload)) : payload, type);
      assert.equal(res.statusCode, status, `${url} ${res.body}`);
      assert.equal(res.json().error.code, code, url);
      assert.match(res.json().error.message, message);
    }
    // A failure part way names the entry and says how many were written before it.
    const partial = await post('/v1/sequences/b/blocks/write', pack({ blocks: [{ index: 0, data: blockContent(1), tokens: [1, 2, 3, 4] }, { index: 0, data: blockContent(2) }] }));
    assert.equal(partial.statusCode, 409, partial.body);
    assert.equal(partial.json().error.field, 'body.blocks.1');
    assert.equal(partial.json().error.written, 1);
  } finally {
    await server.close();
    dir2.cleanup();
  }
});
