/** The OpenAPI document at /docs, generated from the same zod schemas that validate requests. */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { FastifyInstance } from 'fastify';
import { buildServer } from '../../api/server.js';
import { tempDir, tinyStore } from '../helpers.js';

let app: FastifyInstance;
const dir = tempDir();

before(async () => {
  app = await buildServer(await tinyStore(dir.path, { raw: 2, quantized: 2, disk: 4 }));
});

after(async () => {
  await app.close();
  dir.cleanup();
});

interface Operation {
  requestBody?: { content: Record<string, { schema: Record<string, unknown> }> };
  parameters?: Array<{ name: string; in: string; schema: Record<string, unknown> }>;
  responses: Record<string, { content?: Record<string, unknown> }>;
  security?: unknown[];
}

test('the OpenAPI document lists every API route with its schemas', async () => {
  const res = await app.inject({ url: '/docs/json' });
  assert.equal(res.statusCode, 200);
  const doc = res.json() as { openapi: string; paths: Record<string, Record<string, Operation>> };
  assert.match(doc.openapi, /^3\.0/);
  const operations = Object.entries(doc.paths).flatMap(([path, ops]) => Object.keys(ops).map((m) => `${m.toUpperCase()} ${path}`));
  const expected = [
    'GET /v1/health', 'GET /v1/ready', 'GET /v1/status', 'GET /v1/limits', 'PUT /v1/limits', 'PATCH /v1/limits',
    'GET /metrics', 'GET /v1/metrics', 'GET /v1/telemetry', 'GET /v1/events',
    'GET /v1/weights', 'GET /v1/weights/tensors', 'GET /v1/weights/ipc',
    'POST /v1/sequences', 'POST /v1/sequences/{id}/blocks', 'DELETE /v1/sequences/{id}',
    'PUT /v1/sequences/{id}/blocks/{index}', 'GET /v1/sequences/{id}/blocks/{index}',
    'POST /v1/sequences/{id}/blocks/{index}/pin', 'POST /v1/sequences/{id}/blocks/{index}/unpin',
    'POST /v1/sequences/{id}/blocks/read', 'POST /v1/sequences/{id}/blocks/write', 'POST /v1/prefix/lookup',
    'GET /v1/zero-copy/pool', 'POST /v1/zero-copy/leases', 'POST /v1/zero-copy/leases/{id}/heartbeat', 'DELETE /v1/zero-copy/leases/{id}',
    'POST /v1/zero-copy/leases/{id}/acquire', 'POST /v1/zero-copy/leases/{id}/release', 'POST /v1/zero-copy/leases/{id}/acquire-many',
    'POST /v1/zero-copy/leases/{id}/release-many', 'POST /v1/zero-copy/leases/{id}/attach',
  ];
  assert.deepEqual(operations.sort(), expected.sort());

  const allocate = doc.paths['/v1/sequences/{id}/blocks']!.post!;
  const count = (allocate.requestBody!.content['application/json']!.schema.properties as Record<string, Record<string, unknown>>).count!;
  assert.equal(count.type, 'integer');
  assert.equal(count.minimum, 1, 'the zod constraint is in the document');
  assert.ok(allocate.responses['201']?.content?.['application/json']);

  const write = doc.paths['/v1/sequences/{id}/blocks/{index}']!.put!;
  assert.deepEqual(Object.keys(write.requestBody!.content), ['application/octet-stream']);
  assert.equal(write.requestBody!.content['application/octet-stream']!.schema.format, 'binary');
  assert.ok(write.parameters!.some((p) => p.in === 'query' && p.name === 'tokens'));
  assert.ok(doc.paths['/v1/sequences/{id}/blocks/{index}']!.get!.responses['200']!.content!['application/octet-stream']);
  assert.deepEqual(Object.keys(doc.paths['/v1/sequences/{id}/blocks/write']!.post!.requestBody!.content), ['application/msgpack', 'application/x-msgpack']);
  assert.ok(doc.paths['/v1/sequences/{id}/blocks/read']!.post!.responses['200']!.content!['application/msgpack']);
  assert.deepEqual(doc.paths['/v1/health']!.get!.security, [], 'health needs no token');
});

test('the docs UI is served from the package, not a CDN', async () => {
  const ui = await app.inject({ url: '/docs' });
  assert.equal(ui.statusCode, 200);
  assert.doesNotMatch(ui.body, /(src|href)="https?:/);
  for (const asset of ui.body.matchAll(/(?:src|href)="([^"]+)"/g)) {
    assert.equal((await app.inject({ url: asset[1]! })).statusCode, 200, asset[1]);
  }
});

test('the dashboard page and its chart library are served locally', async () => {
  const page = await app.inject({ url: '/' });
  assert.equal(page.statusCode, 200);
  assert.match(String(page.headers['content-type']), /text\/html/);
  assert.doesNotMatch(page.body, /(src|href)="https?:/);
  for (const url of ['/dashboard/app.js', '/dashboard/uplot.js', '/dashboard/uplot.css', '/dashboard/style.css']) {
    const res = await app.inject({ url });
    assert.equal(res.statusCode, 200, url);
    assert.ok(res.body.length > 500, url);
  }
});
