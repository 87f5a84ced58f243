/**
 * Request bodies before they are read: each route's own media types (415 otherwise), no
 * body where none is taken, an empty body accepted whatever its content-type, the body
 * byte budget (503 past it, given back when a response closes, aborted or not), the
 * batch-read answer held from the same budget, the JSON limit and the msgpack bounds.
 */
import assert from 'node:assert/strict';
import { request as httpRequest, type ClientRequest } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, test } from 'node:test';
import type { FastifyInstance } from 'fastify';
import { pack } from 'msgpackr';
import { buildServer } from '../../api/server.js';
import type { BlockStore } from '../../runtime/store.js';
import { blockContent, httpSend, metricBecomes, tempDir, tinyStore, TINY_RAW } from '../helpers.js';

const MAX_BATCH = 4 * TINY_RAW + 1024;
const MAX_JSON = 8 * 1024;
const BUDGET = MAX_BATCH + 3 * 1024;
/** How long a request past the budget waits for room before its 503. */
const WAIT_MS = 300;
/** Every media type the server has a parser for, and some it has not. */
const TYPES = ['application/json', 'application/msgpack', 'application/x-msgpack', 'application/octet-stream', 'text/plain', 'x/y'];

let app: FastifyInstance;
let store: BlockStore;
let url: string;
const dir = tempDir();

before(async () => {
  store = await tinyStore(dir.path, { raw: 8, quantized: 8, disk: 16 }, { server: { maxBatchBytes: MAX_BATCH, maxJsonBytes: MAX_JSON, maxBodyBytesInFlight: BUDGET, maxBodyWaitMs: WAIT_MS } });
  app = await buildServer(store);
  url = await app.listen({ host: '127.0.0.1', port: 0 });
  store.createSequence('s');
  store.allocate('s', 4);
  await store.write('s', 0, blockContent(1));
});

after(async () => {
  await app.close();
  dir.cleanup();
});

/** The answer, with its body as text. */
async function send(method: string, path: string, headers: Record<string, string>, body?: Buffer) {
  const answer = await httpSend(url + path, method, headers, body);
  return { ...answer, text: answer.body.toString() };
}

const heldBecomes = (bytes: number) => metricBecomes(app, 'spillway_http_body_bytes_in_flight', bytes);

interface Operation {
  requestBody?: { content: Record<string, unknown> };
}

async function operations(): Promise<Array<{ method: string; path: string; consumes: string[] | null }>> {
  const doc = (await app.inject({ url: '/docs/json' })).json() as { paths: Record<string, Record<string, Operation>> };
  return Object.entries(doc.paths).flatMap(([path, ops]) => Object.entries(ops).map(([method, op]) => ({
    method: method.toUpperCase(),
    path: path.replace('{id}', path.includes('leases') ? 'lease-000000000000000000000000' : 's').replace('{index}', '0'),
    consumes: op.requestBody ? Object.keys(op.requestBody.content) : null,
  })));
}

test('routes without a body take an empty one whatever its content type; POST /v1/sequences takes an empty JSON body', async () => {
  const created = await send('POST', '/v1/sequences', { 'content-type': 'application/json' });
  assert.equal(created.status, 201, created.text);
  const id = (JSON.parse(created.text) as { id: string }).id;
  for (const type of TYPES) {
    const empty = { 'content-type': type, 'content-length': '0' };
    const pin = await send('POST', '/v1/sequences/s/blocks/0/pin', empty);
    assert.equal(pin.status, 200, `pin [${type}] ${pin.text}`);
    assert.equal((await send('POST', '/v1/sequences/s/blocks/0/unpin', empty)).status, 200);
    assert.equal((await send('GET', '/v1/limits', empty)).status, 200);
  }
  const freed = await send('DELETE', `/v1/sequences/${id}`, { 'content-type': 'application/json' });
  assert.equal(freed.status, 200, freed.text);
  // The same through inject, which sends content-length: 0.
  assert.equal((await app.inject({ method: 'POST', url: '/v1/sequences', headers: { 'content-type': 'application/json' }, payload: '' })).statusCode, 201);
  const second = (await app.inject({ method: 'POST', url: '/v1/sequences', headers: { 'content-type': 'application/json' } })).json() as { id: string };
  assert.equal((await app.inject({ method: 'DELETE', url: `/v1/sequences/${second.id}`, headers: { 'content-type': 'application/json' } })).statusCode, 200);
  // A route whose body is required says so, naming the body.
  const limits = await send('PUT', '/v1/limits', { 'content-type': 'application/json' });
  assert.equal(limits.status, 400);
  assert.equal(limits.error!.field, 'body');
});

test('every body route refuses other content types with 415 before reading; bodyless routes refuse a body; unknown routes answer 404', async () => {
  const ops = await operations();
  assert.ok(ops.filter((o) => o.consumes).length >= 12, 'the document lists the body routes');
  for (const { method, path, consumes } of ops) {
    for (const type of [...TYPES, 'none']) {
      const headers: Record<string, string> = type === 'none' ? {} : { 'content-type': type };
      const res = await send(method, path, headers, Buffer.from('{}'));
      const what = `${method} ${path} [${type}] -> ${res.status} ${res.text.slice(0, 200)}`;
      if (consumes === null) {
        assert.equal(res.status, 400, what);
        assert.equal(res.error!.field, 'body', what);
        assert.match(String(res.error!.message), /takes no body/, what);
      } else if (!consumes.includes(type)) {
        assert.equal(res.status, 415, what);
        assert.equal(res.error!.code, 'UNSUPPORTED_MEDIA_TYPE', what);
        assert.equal(res.error!.field, 'content-type', what);
        assert.deepEqual(res.error!.accepted, consumes, what);
      } else {
        assert.notEqual(res.status, 415, what);
      }
    }
  }
  // A body over every limit, of a type its route does not take: 415, not 413 (it is not read).
  const big = await send('PUT', '/v1/limits', { 'content-type': 'application/octet-stream' }, Buffer.alloc(4 * MAX_BATCH, 'x'));
  assert.equal(big.status, 415);
  const nowhere = await send('POST', '/v1/nowhere', { 'content-type': 'application/json' }, Buffer.alloc(64 * 1024, 'x'));
  assert.equal(nowhere.status, 404);
  assert.equal(nowhere.error!.code, 'NOT_FOUND');
  await heldBecomes(0);
});

/** Starts a chunked upload and leaves it open: the server holds its route's body limit. */
function openUpload(method: string, path: string, type: string): { req: ClientRequest; status: Promise<number> } {
  const req = httpRequest(url + path, { method, headers: { 'content-type': type, 'transfer-encoding': 'chunked' } });
  const status = new Promise<number>((resolve) => {
    req.on('response', (res) => {
      res.resume();
      resolve(res.statusCode!);
    });
    req.on('error', () => resolve(0));
  });
  req.write(Buffer.from([0x81]));
  return { req, status };
}

test('past the body byte budget requests wait, then get 503 BUSY with Retry-After; what a request held comes back when its response closes', async () => {
  const upload = openUpload('POST', '/v1/sequences/s/blocks/write', 'application/msgpack');
  await heldBecomes(MAX_BATCH);

  const started = performance.now();
  const block = await send('PUT', '/v1/sequences/s/blocks/1', { 'content-type': 'application/octet-stream' }, blockContent(2));
  assert.ok(performance.now() - started >= WAIT_MS - 20, 'answered only after waiting for room');
  assert.equal(block.status, 503, block.text);
  assert.equal(block.headers['retry-after'], '1');
  assert.equal(block.error!.code, 'BUSY');
  assert.equal(block.error!.reason, 'body-bytes');
  assert.equal(block.error!.limit, BUDGET);
  assert.match((await app.inject({ url: '/metrics' })).body, /spillway_http_shed_total\{reason="body-bytes"\} [1-9]/);
  // A batch read holds its answer's bytes from the same budget.
  const read = await send('POST', '/v1/sequences/s/blocks/read', { 'content-type': 'application/json' }, Buffer.from('{"indices":[0]}'));
  assert.equal(read.status, 503, read.text);
  assert.equal(read.error!.reason, 'body-bytes');
  // Small bodies still fit, and requests without a body hold nothing.
  assert.equal((await send('POST', '/v1/sequences', { 'content-type': 'application/json' }, Buffer.from('{"id":"small"}'))).status, 201);
  assert.equal((await send('GET', '/v1/status', {})).status, 200);
  await heldBecomes(MAX_BATCH);

  // The client goes away mid-body: its share comes back once.
  upload.req.destroy();
  await upload.status;
  await heldBecomes(0);
  assert.equal((await send('PUT', '/v1/sequences/s/blocks/1', { 'content-type': 'application/octet-stream' }, blockContent(2))).status, 200);
  const answer = await fetch(`${url}/v1/sequences/s/blocks/read`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"indices":[0,1]}' });
  assert.equal(answer.status, 200);
  assert.equal((await answer.arrayBuffer()).byteLength > 2 * TINY_RAW, true);

  // A chunked body that could be larger than the whole budget (one block and 64 KiB to spare) never fits.
  const never = openUpload('PUT', '/v1/sequences/s/blocks/1', 'application/octet-stream');
  never.req.end();
  assert.equal(await never.status, 413);
  // Answers of every kind, errors included, give back exactly what they held.
  for (const [path, type, body] of [
    ['/v1/sequences/s/blocks/write', 'application/msgpack', Buffer.from([0xc1])],
    ['/v1/sequences/s/blocks/write', 'application/msgpack', Buffer.alloc(MAX_BATCH + 1)],
    ['/v1/prefix/lookup', 'application/json', Buffer.from('{"tokens":[1,2,3,4]}')],
    ['/v1/sequences/nope/blocks/read', 'application/json', Buffer.from('{"indices":[0]}')],
    ['/v1/sequences/s/blocks/read', 'application/json', Buffer.from('{"indices":[3]}')],
  ] as const) {
    assert.ok((await send('POST', path, { 'content-type': type }, body)).status < 500, path);
  }
  await heldBecomes(0);
});

test('a request past the body byte budget is admitted, first come first served, once room frees within its wait', async () => {
  const upload = openUpload('POST', '/v1/sequences/s/blocks/write', 'application/msgpack');
  await heldBecomes(MAX_BATCH);
  const order: string[] = [];
  const first = send('PUT', '/v1/sequences/s/blocks/1', { 'content-type': 'application/octet-stream' }, blockContent(3)).then((r) => (order.push('first'), r));
  await sleep(20);
  const second = send('PUT', '/v1/sequences/s/blocks/2', { 'content-type': 'application/octet-stream' }, blockContent(4)).then((r) => (order.push('second'), r));
  await sleep(50);
  assert.match((await app.inject({ url: '/metrics' })).body, /^spillway_http_body_waiting 2$/m);
  // The holder goes away within the wait: both fit now, and go in the order they came.
  upload.req.destroy();
  await upload.status;
  assert.equal((await first).status, 200);
  assert.equal((await second).status, 200);
  assert.deepEqual(order, ['first', 'second']);
  assert.match((await app.inject({ url: '/metrics' })).body, /^spillway_http_body_waiting 0$/m);
  const back = await send('GET', '/v1/sequences/s/blocks/2', {});
  assert.ok(Buffer.from(back.body).equals(blockContent(4)));
  await heldBecomes(0);
});

test('JSON bodies are limited to server.maxJsonBytes, 8 levels and 64 members an object; msgpack batch bodies to their route bounds', async () => {
  const over = await send('PATCH', '/v1/limits', { 'content-type': 'application/json' }, Buffer.from(`{"maxLiveSequences":1${' '.repeat(MAX_JSON)}}`));
  assert.equal(over.status, 413, over.text);
  assert.equal(over.error!.limitBytes, MAX_JSON);
  assert.equal(over.headers.connection, 'keep-alive', 'refused before it is read: no reset to race the answer');
  const deep = await send('POST', '/v1/prefix/lookup', { 'content-type': 'application/json' }, Buffer.from(`${'['.repeat(9)}${']'.repeat(9)}`));
  assert.equal(deep.status, 400);
  assert.match(String(deep.error!.message), /JSON nested deeper than 8/);
  const quoted = await send('POST', '/v1/prefix/lookup', { 'content-type': 'application/json' }, Buffer.from(`{"hashes":["${'[{'.repeat(20)}\\"x"]}`));
  assert.equal(quoted.status, 400);
  assert.equal(quoted.error!.field, 'body.hashes.0', 'brackets inside strings are not nesting');
  const wide = await send('PATCH', '/v1/limits', { 'content-type': 'application/json' }, Buffer.from(JSON.stringify(Object.fromEntries(Array.from({ length: 65 }, (_, i) => [`k${i}:`, i])))));
  assert.equal(wide.status, 400);
  assert.match(String(wide.error!.message), /JSON object of more than 64 members/);

  // maxBatchBytes holds 4 blocks: 3 around the list, 11 a block (4 tokens), 64 to spare.
  const write = (blocks: unknown[]) => send('POST', '/v1/sequences/s/blocks/write', { 'content-type': 'application/msgpack' }, pack({ blocks }));
  const full = await write([0, 1, 2, 3].map((i) => ({ index: i, data: blockContent(10 + i) })));
  assert.equal(full.status, 200, full.text);
  const many = await write(Array.from({ length: 16 }, (_, i) => ({ index: i, data: Buffer.alloc(1), tokens: [1, 2] })));
  assert.equal(many.status, 400);
  assert.match(String(many.error!.message), /more than 111 msgpack values/);
  const nested = await send('POST', '/v1/sequences/s/blocks/write', { 'content-type': 'application/x-msgpack' }, Buffer.alloc(1000, 0x91));
  assert.equal(nested.status, 400);
  assert.match(String(nested.error!.message), /nested deeper than 4/);
  assert.equal(nested.error!.field, 'body');
  await heldBecomes(0);
});
