/**
 * Many large bodies at once do not grow the server without bound: `spillway serve` in its
 * own process, with 2 MiB batches and an 8 MiB body byte budget, takes 48 maximal batch
 * writes and 48 junk bodies of 2 MiB, all at once. The budget sheds what it has no room
 * for (503, not a crash), the process answers afterwards, and its resident memory, read
 * from /proc during the burst, stays under a ceiling derived from the budget.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { pack } from 'msgpackr';
import { ServerProcess } from '../../api/process.js';
import { blockContent, httpSend, tempDir, TINY_MODEL, TINY_RAW } from '../helpers.js';

const MiB = 2 ** 20;
const MAX_BATCH = 2 * MiB;
const BUDGET = 4 * MAX_BATCH;
const EACH = 48;
/**
 * What the burst may add to the server's resident memory. A body the server reads is held
 * twice at most (its chunks, then their concatenation): 2 x BUDGET; V8 frees the buffers of
 * finished requests once external memory has grown by 64 MiB; 32 MiB more for the heap's
 * and the allocator's own growth. Without the budget the burst's 96 bodies are all read at
 * once (some 180 MiB more, measured).
 */
const CEILING_OVER_BASELINE = 2 * BUDGET + 64 * MiB + 32 * MiB;

test('a burst of maximal batches and junk bodies is shed past the body budget; the server lives and its memory stays bounded', { timeout: 120_000 }, async (t) => {
  const dir = tempDir();
  const set = (path: string, value: string | number) => ['--set', `${path}=${value}`];
  const server = await ServerProcess.start({
    args: [
      ...Object.entries(TINY_MODEL).flatMap(([k, v]) => set(`model.${k}`, v)),
      ...set('backend', 'host'), ...set('server.port', 0),
      ...set('tiers.raw.bytes', 1024 * TINY_RAW), ...set('tiers.quantized.bytes', '256KiB'),
      ...set('tiers.disk.path', join(dir.path, 'tier2.slots')), ...set('tiers.disk.bytes', '4MiB'),
      ...set('server.maxBatchBytes', MAX_BATCH), ...set('server.maxBodyBytesInFlight', BUDGET),
      // The burst's parsing may lag the loop; this test is about the body budget alone.
      ...set('server.maxEventLoopDelayMs', 0),
    ],
  });
  let exited = false;
  void server.exited.then(() => (exited = true));
  try {
    const json = { 'content-type': 'application/json' };
    assert.equal((await httpSend(`${server.url}/v1/sequences`, 'POST', json, Buffer.from('{"id":"h"}'))).status, 201);
    const blocks = Math.floor(MAX_BATCH / (TINY_RAW + 64)); // each block's msgpack takes a few bytes more
    assert.equal((await httpSend(`${server.url}/v1/sequences/h/blocks`, 'POST', json, Buffer.from(`{"count":${blocks}}`))).status, 201);
    const batch = pack({ blocks: Array.from({ length: blocks }, (_, i) => ({ index: i, data: blockContent(i) })) });
    assert.ok(batch.length <= MAX_BATCH && batch.length > 0.98 * MAX_BATCH, `a maximal batch: ${batch.length} bytes`);
    const msgpack = { 'content-type': 'application/msgpack' };
    const junk: Array<[string, Record<string, string>, Buffer]> = [
      ['/v1/sequences/h/blocks/write', msgpack, Buffer.alloc(MAX_BATCH, 0x91)],
      ['/v1/sequences/h/blocks/write', { 'content-type': 'application/octet-stream' }, Buffer.alloc(MAX_BATCH, 'x')],
      ['/v1/prefix/lookup', json, Buffer.alloc(MAX_BATCH, '[')],
      ['/v1/limits', { 'content-type': 'text/plain' }, Buffer.alloc(MAX_BATCH, 'x')],
    ];

    // Warm: one of each, one at a time, so that the baseline has the code paths loaded.
    const warm = await httpSend(`${server.url}/v1/sequences/h/blocks/write`, 'POST', msgpack, batch);
    assert.equal(warm.status, 200, warm.body.toString().slice(0, 300));
    for (const [path, headers, body] of junk) await httpSend(server.url + path, path === '/v1/limits' ? 'PUT' : 'POST', headers, body);
    const baseline = server.rssBytes()!;

    let peak = baseline;
    const sampler = setInterval(() => (peak = Math.max(peak, server.rssBytes() ?? 0)), 5);
    const statuses = new Map<number, number>();
    try {
      // Every request's first half now, the second halves once all have started: 96 uploads in flight at once.
      let go!: () => void;
      const rest = new Promise<void>((resolve) => (go = resolve));
      const burst = [
        ...Array.from({ length: EACH }, () => httpSend(`${server.url}/v1/sequences/h/blocks/write`, 'POST', msgpack, batch, rest)),
        ...Array.from({ length: EACH }, (_, i) => {
          const [path, headers, body] = junk[i % junk.length]!;
          return httpSend(server.url + path, path === '/v1/limits' ? 'PUT' : 'POST', headers, body, rest);
        }),
      ];
      // Those the budget has no room for are answered at once; the rest wait for their second half.
      let answered = 0;
      for (const p of burst) void p.then(() => answered++, () => answered++);
      const admitted = Math.floor(BUDGET / batch.length);
      for (let waited = 0; answered < burst.length - admitted && waited < 30_000; waited += 10) await new Promise((r) => setTimeout(r, 10));
      go();
      for (const answer of await Promise.all(burst)) {
        statuses.set(answer.status, (statuses.get(answer.status) ?? 0) + 1);
        assert.ok([200, 400, 415, 503].includes(answer.status), `${answer.status} ${answer.body.toString().slice(0, 300)}`);
        if (answer.status === 503) {
          assert.equal(answer.error!.reason, 'body-bytes');
          assert.equal(answer.headers['retry-after'], '1');
        }
      }
    } finally {
      clearInterval(sampler);
    }
    const summary = `statuses ${[...statuses].map(([s, n]) => `${s}:${n}`).join(' ')}; RSS ${(baseline / MiB).toFixed(0)} MiB before, peak ${(peak / MiB).toFixed(0)} MiB, ceiling ${((baseline + CEILING_OVER_BASELINE) / MiB).toFixed(0)} MiB`;
    assert.ok((statuses.get(503) ?? 0) > 0, `the budget shed some: ${summary}`);
    assert.ok((statuses.get(200) ?? 0) > 0, `and admitted some: ${summary}`);
    assert.ok(peak < baseline + CEILING_OVER_BASELINE, summary);
    assert.equal(exited, false, server.output());

    assert.equal((await httpSend(`${server.url}/v1/health`, 'GET', {})).status, 200);
    const after = await httpSend(`${server.url}/v1/sequences/h/blocks/write`, 'POST', msgpack, batch);
    assert.equal(after.status, 200, after.body.toString().slice(0, 300));
    const metrics = (await httpSend(`${server.url}/metrics`, 'GET', {})).body.toString();
    assert.match(metrics, /^spillway_http_body_bytes_in_flight 0$/m);
    assert.match(metrics, /^spillway_http_shed_total\{reason="body-bytes"\} [1-9]/m);
    t.diagnostic(summary);
  } finally {
    const exit = await server.stop();
    dir.cleanup();
    assert.equal(exit.code, 0, server.output());
  }
});
