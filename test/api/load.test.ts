/** Load shedding: 503 with Retry-After while the disk queue or the event loop is saturated. */
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { test } from 'node:test';
import { buildServer } from '../../api/server.js';
import { blockContent, tempDir, tinyStore } from '../helpers.js';

function busyWait(ms: number): void {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    // hold the event loop
  }
}

test('a lagging event loop sheds data-plane requests with 503 and Retry-After, then recovers', async () => {
  const dir = tempDir();
  // 20 ms: far below the lag made here (the loop blocked 50 ms in every 60), far above an idle
  // loop's delay on a machine whose other processes take its cores.
  const app = await buildServer(await tinyStore(dir.path, { raw: 2, quantized: 2, disk: 4 }, { server: { maxEventLoopDelayMs: 20 } }));
  try {
    await sleep(600); // start-up lag has left the sample window
    // The loop lags in every sample while this runs, not once: after a single stall the next
    // sample could already read clear between two of the requests below.
    const lag = setInterval(() => busyWait(50), 10);
    try {
      // The monitor sees the lag at its next sample, within one sample interval.
      for (let i = 0; i < 30 && (await app.inject({ url: '/v1/ready' })).statusCode === 200; i++) await sleep(20);
      const shed = await app.inject({ method: 'POST', url: '/v1/sequences', payload: {} });
      assert.equal(shed.statusCode, 503, shed.body);
      assert.equal(shed.headers['retry-after'], '1');
      assert.equal(shed.json().error.code, 'BUSY');
      assert.equal(shed.json().error.reason, 'event-loop');
      assert.ok(shed.json().error.value > 20);
      assert.equal((await app.inject({ url: '/v1/ready' })).statusCode, 503, 'not ready while shedding');
      assert.equal((await app.inject({ url: '/v1/status' })).statusCode, 200, 'status stays served');
      assert.match((await app.inject({ url: '/metrics' })).body, /spillway_http_shed_total\{reason="event-loop"\} [1-9]/);
    } finally {
      clearInterval(lag);
    }

    let recovered = false;
    for (let i = 0; i < 40 && !recovered; i++) {
      await sleep(100);
      recovered = (await app.inject({ method: 'POST', url: '/v1/sequences', payload: {} })).statusCode === 201;
    }
    assert.ok(recovered, 'requests are accepted again once the loop keeps up');
  } finally {
    await app.close();
    dir.cleanup();
  }
});

test('with server.maxEventLoopDelayMs 0 a lagging event loop sheds nothing', async () => {
  const dir = tempDir();
  const app = await buildServer(await tinyStore(dir.path, { raw: 2, quantized: 2, disk: 4 }, { server: { maxEventLoopDelayMs: 0 } }));
  try {
    busyWait(400);
    let seen = false;
    for (let i = 0; i < 30 && !seen; i++) {
      const load = (await app.inject({ url: '/v1/status' })).json().load;
      assert.equal(load.maxEventLoopDelayMs, 0);
      seen = load.eventLoopDelayMs > 0;
      if (!seen) await sleep(20);
    }
    assert.ok(seen, 'the lag was measured');
    assert.equal((await app.inject({ method: 'POST', url: '/v1/sequences', payload: {} })).statusCode, 201);
    assert.equal((await app.inject({ url: '/v1/ready' })).statusCode, 200);
  } finally {
    await app.close();
    dir.cleanup();
  }
});

test('a disk queue over its limit sheds data-plane requests with 503 and Retry-After', async () => {
  const dir = tempDir();
  const store = await tinyStore(dir.path, { raw: 1, quantized: 1, disk: 64 }, { server: { maxDiskQueue: 0 } });
  const app = await buildServer(store);
  try {
    store.createSequence('load');
    store.allocate('load', 40);
    // Each write pushes an older block down the ladder and onto disk, off the HTTP path.
    let writing = true;
    let shed;
    const writer = (async () => {
      try {
        for (let i = 0; i < 400 && !shed; i++) await store.write('load', i % 40, blockContent(i));
      } finally {
        writing = false;
      }
    })();
    while (writing && !shed) {
      const res = await app.inject({ method: 'POST', url: '/v1/prefix/lookup', payload: { hashes: [] } });
      if (res.statusCode === 503) shed = res;
      else assert.equal(res.statusCode, 200, res.body);
    }
    await writer;
    assert.ok(shed, 'a request arriving while disk operations were in flight was shed');
    assert.equal(shed.headers['retry-after'], '1');
    assert.equal(shed.json().error.reason, 'disk-queue');
    assert.equal(shed.json().error.limit, 0);
    assert.equal((await app.inject({ method: 'POST', url: '/v1/prefix/lookup', payload: { hashes: [] } })).statusCode, 200, 'idle again');
    store.checkInvariants();
  } finally {
    await app.close();
    dir.cleanup();
  }
});
