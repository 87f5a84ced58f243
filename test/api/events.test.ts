/** Telemetry an operator watches: the /v1/telemetry snapshot and the /v1/events stream. */
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { test } from 'node:test';
import { SpillwayClient } from '../../api/client.js';
import { buildServer } from '../../api/server.js';
import type { MoveEvent } from '../../runtime/telemetry.js';
import { blockContent, tempDir, tinyStore } from '../helpers.js';

async function listening(slots: { raw: number; quantized: number; disk: number }, server: object = {}) {
  const dir = tempDir();
  const store = await tinyStore(dir.path, slots, { server });
  const app = await buildServer(store);
  const url = await app.listen({ host: '127.0.0.1', port: 0 });
  return {
    store, app, url, client: new SpillwayClient({ baseUrl: url }),
    close: async () => {
      await app.close();
      dir.cleanup();
    },
  };
}

test('the telemetry snapshot shows blocks per tier, move and disk rates, hit rates and the path over time', async () => {
  const s = await listening({ raw: 2, quantized: 2, disk: 16 }, { telemetryIntervalMs: 100 });
  try {
    const { client } = s;
    await client.createSequence({ id: 't' });
    await client.allocate('t', 12);
    for (let i = 0; i < 12; i++) await client.writeBlock('t', i, blockContent(i));
    for (let i = 0; i < 12; i++) await client.readBlock('t', i);
    await client.lookupPrefix({ tokens: [1, 2, 3, 4] });
    await sleep(350);
    const snap = await client.telemetry(0);
    assert.ok(snap.history && snap.history.length >= 3, 'samples every interval');
    const busiest = snap.history.reduce((a, b) => (b.movesPerSecond.demote > a.movesPerSecond.demote ? b : a));
    assert.ok(busiest.movesPerSecond.demote > 0);
    assert.ok(snap.history.some((h) => h.movesPerSecond.promote > 0));
    assert.ok(snap.history.some((h) => h.diskBytesPerSecond.write > 0));
    assert.ok(snap.history.some((h) => h.hitRate !== null && h.hitRate < 1), 'reads that missed tier 0 lower the hit rate');
    assert.ok(snap.history.some((h) => h.prefixHitRate === 0));
    assert.equal(snap.blocks.raw + snap.blocks.quantized + snap.blocks.disk >= 12, true);
    assert.deepEqual(snap.slots, { raw: 2, quantized: 2, disk: 16 });
    assert.ok(snap.totals.demotions > 0 && snap.totals.promotions > 0 && snap.totals.diskBytes.write > 0);
    assert.equal(snap.totals.reads, 12);
    assert.ok(snap.path.disk.length > 0 && snap.path.raw.length > 0);
    const later = await client.telemetry(snap.history.at(-1)!.at);
    assert.ok((later.history ?? []).every((h) => h.at > snap.history!.at(-1)!.at), 'since returns only newer samples');
    assert.equal((await client.telemetry()).history, undefined);
  } finally {
    await s.close();
  }
});

test('demotions and promotions stream as Server-Sent Events, and a client leaving removes its listener', async () => {
  const s = await listening({ raw: 2, quantized: 2, disk: 16 });
  try {
    const { client, store } = s;
    const abort = new AbortController();
    const seen: MoveEvent[] = [];
    const reading = (async () => {
      for await (const e of client.events({ kinds: ['demote', 'promote'], signal: abort.signal })) {
        if (e.event === 'move') seen.push(e.data as MoveEvent);
      }
    })();
    for (let i = 0; i < 50 && store.telemetry.moves.listenerCount('move') === 0; i++) await sleep(10);
    assert.equal(store.telemetry.moves.listenerCount('move'), 1);
    await client.createSequence({ id: 'ev' });
    await client.allocate('ev', 6);
    for (let i = 0; i < 6; i++) await client.writeBlock('ev', i, blockContent(i));
    await client.readBlock('ev', 0);
    await client.freeSequence('ev');
    for (let i = 0; i < 100 && !seen.some((e) => e.kind === 'promote'); i++) await sleep(10);
    assert.ok(seen.some((e) => e.kind === 'demote' && e.from === 'raw' && e.to === 'quantized'));
    assert.ok(seen.some((e) => e.kind === 'demote' && e.from === 'quantized' && e.to === 'disk'));
    assert.ok(seen.some((e) => e.kind === 'promote' && e.to === 'raw'));
    assert.ok(seen.every((e) => e.kind !== 'drop'), 'the kinds filter holds');
    assert.ok(seen.every((e) => typeof e.blockId === 'number' && typeof e.at === 'number'));
    abort.abort();
    await reading;
    for (let i = 0; i < 100 && store.telemetry.moves.listenerCount('move') > 0; i++) await sleep(10);
    assert.equal(store.telemetry.moves.listenerCount('move'), 0);
    assert.match(await client.metrics(), /spillway_event_clients 0/);
  } finally {
    await s.close();
  }
});

test('a client that stops reading has events dropped and counted, not buffered without bound', async () => {
  const s = await listening({ raw: 2, quantized: 2, disk: 4 }, { eventBufferBytes: 64 * 1024 });
  try {
    const { store, url } = s;
    const { port } = new URL(url);
    const socket = connect(Number(port), '127.0.0.1');
    await new Promise((resolve) => socket.once('connect', resolve));
    socket.write('GET /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n');
    socket.pause();
    for (let i = 0; i < 50 && store.telemetry.moves.listenerCount('move') === 0; i++) await sleep(10);
    const sequences = Array.from({ length: 20 }, (_, k) => `sequence-with-a-long-name-${k}`);
    // Far more than the socket's buffers hold: ~30 MB of events while the client reads nothing.
    for (let i = 0; i < 50_000; i++) {
      store.telemetry.recordMove({ kind: 'demote', blockId: i, sequences, from: 'raw', to: 'quantized', bytes: 1216, durationMs: 0.1, copied: true });
      if (i % 5000 === 0) await sleep(1);
    }
    const metrics = await s.client.metrics();
    const dropped = Number(/spillway_events_dropped_total (\d+)/.exec(metrics)?.[1]);
    assert.ok(dropped > 10_000, `dropped ${dropped}`);
    assert.ok(process.memoryUsage().rss < 1.5 * 2 ** 30);
    // Once the client reads again it is told how many it missed.
    let text = '';
    socket.on('data', (d: Buffer) => {
      text = (text + d.toString('latin1')).slice(-200_000);
    });
    socket.resume();
    await sleep(300);
    store.telemetry.recordMove({ kind: 'promote', blockId: 1, sequences: [], from: 'disk', to: 'quantized', bytes: 1216, durationMs: 0.1, copied: true });
    for (let i = 0; i < 100 && !/event: dropped\ndata: \{"dropped":\d+\}/.test(text); i++) await sleep(20);
    assert.match(text, /event: dropped\ndata: \{"dropped":\d+\}/);
    socket.destroy();
    for (let i = 0; i < 100 && store.telemetry.moves.listenerCount('move') > 0; i++) await sleep(10);
    assert.equal(store.telemetry.moves.listenerCount('move'), 0, 'the listener goes with the client');
  } finally {
    await s.close();
  }
});

test('closing the server ends open event streams', async () => {
  const s = await listening({ raw: 2, quantized: 2, disk: 4 });
  const abort = new AbortController();
  const reading = (async () => {
    for await (const _ of s.client.events({ signal: abort.signal })) {
      // nothing arrives
    }
  })();
  for (let i = 0; i < 50 && s.store.telemetry.moves.listenerCount('move') === 0; i++) await sleep(10);
  const closed = s.close();
  const outcome = await Promise.race([closed.then(() => 'closed'), sleep(5000).then(() => 'hung')]);
  assert.equal(outcome, 'closed');
  await reading.catch(() => undefined);
  abort.abort();
});
