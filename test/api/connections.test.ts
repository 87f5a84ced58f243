/**
 * What a client holds by connecting: a request that does not arrive whole within
 * server.requestTimeoutMs is answered 408 and its connection closed, giving back what its
 * body held of the body byte budget; past server.maxConnections, a new connection is closed
 * as it arrives and counted, and the server keeps serving.
 */
import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, test } from 'node:test';
import type { FastifyInstance } from 'fastify';
import { buildServer } from '../../api/server.js';
import { blockContent, httpSend, metricBecomes, metricValue, tempDir, tinyStore } from '../helpers.js';

const REQUEST_TIMEOUT_MS = 300;
const MAX_CONNECTIONS = 3;

let app: FastifyInstance;
let url: string;
const dir = tempDir();

before(async () => {
  const store = await tinyStore(dir.path, { raw: 4, quantized: 4, disk: 8 }, { server: { requestTimeoutMs: REQUEST_TIMEOUT_MS, maxConnections: MAX_CONNECTIONS } });
  store.createSequence('s');
  store.allocate('s', 2);
  app = await buildServer(store);
  url = await app.listen({ host: '127.0.0.1', port: 0 });
});

after(async () => {
  await app.close();
  dir.cleanup();
});

test('an upload that stalls is answered 408 REQUEST_TIMEOUT once server.requestTimeoutMs pass, and gives back what it held', async () => {
  const started = performance.now();
  // Half the block goes, the rest never does.
  const stalled = await httpSend(`${url}/v1/sequences/s/blocks/0`, 'PUT', { 'content-type': 'application/octet-stream' }, blockContent(1), new Promise(() => {}));
  assert.ok(performance.now() - started >= REQUEST_TIMEOUT_MS - 10, 'answered only once its time was up');
  assert.equal(stalled.status, 408);
  assert.equal(stalled.error?.code, 'REQUEST_TIMEOUT');
  assert.match(String(stalled.error?.message), /server\.requestTimeoutMs/);
  await metricBecomes(app, 'spillway_http_body_bytes_in_flight', 0);
  // A whole upload in time is written.
  assert.equal((await httpSend(`${url}/v1/sequences/s/blocks/0`, 'PUT', { 'content-type': 'application/octet-stream' }, blockContent(2))).status, 200);
});

/** A connection, open once connected; `closed` resolves when the server ends it. */
function open(): Promise<{ socket: Socket; closed: Promise<void> }> {
  return new Promise((resolve, reject) => {
    const socket = connect(Number(new URL(url).port), '127.0.0.1');
    const closed = new Promise<void>((r) => socket.once('close', () => r()));
    socket.once('connect', () => resolve({ socket, closed }));
    socket.once('error', reject);
  });
}

test('past server.maxConnections a new connection is closed as it arrives and counted; the open ones are served', async () => {
  // Connections other tests left open (kept alive) count too.
  const openNow = await new Promise<number>((resolve, reject) => app.server.getConnections((err, n) => (err ? reject(err) : resolve(n))));
  assert.ok(openNow < MAX_CONNECTIONS, `${openNow} connections open already`);
  const held = await Promise.all(Array.from({ length: MAX_CONNECTIONS - openNow }, open));
  try {
    await sleep(50); // the server has taken them
    const dropped = await metricValue(app, 'spillway_http_connections_dropped_total');
    const extra = await open();
    await extra.closed;
    assert.equal(await metricValue(app, 'spillway_http_connections_dropped_total'), dropped + 1);
    // One of those held asks for something, and is answered.
    const { socket } = held[0]!;
    const answer = new Promise<string>((resolve) => {
      let text = '';
      socket.on('data', (d: Buffer) => (text += d.toString()));
      socket.once('end', () => resolve(text));
    });
    socket.end('GET /v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
    assert.match(await answer, /^HTTP\/1\.1 200/);
  } finally {
    for (const { socket } of held) socket.destroy();
  }
  // With the held connections gone, new ones are served again.
  let status = 0;
  for (let i = 0; i < 100 && status !== 200; i++) {
    status = (await httpSend(`${url}/v1/health`, 'GET', {}).catch(() => ({ status: 0 }))).status;
    if (status !== 200) await sleep(10);
  }
  assert.equal(status, 200);
});
