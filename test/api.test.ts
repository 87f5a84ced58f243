/** The HTTP API over a real store: through fastify.inject and through a listening server. */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { FastifyInstance } from 'fastify';
import { buildServer } from '../api/server.js';
import { chainHashes } from '../runtime/prefix.js';
import { blockContent, tempDir, tinyStore, TINY_RAW } from './helpers.js';

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
  assert.equal(body.backend.name, 'host');
  assert.ok(body.backend.reason.length > 0);
  assert.deepEqual(body.capacity.tiers.map((t: { name: string; slots: number }) => [t.name, t.slots]), [['raw', 2], ['quantized', 2], ['disk', 8]]);
  assert.equal(body.capacity.totalTokens, 48);
  assert.equal(body.config.server.auth, false);
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
    assert.equal(((await res.json()) as { backend: { name: string } }).backend.name, 'host');
  } finally {
    await server.close();
    dir2.cleanup();
  }
});
