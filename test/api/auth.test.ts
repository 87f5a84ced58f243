/** The optional bearer token: what it guards, how it is compared, and that it never leaks. */
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { test } from 'node:test';
import { buildServer } from '../../api/server.js';
import { blockContent, tempDir, tinyStore } from '../helpers.js';

const TOKEN = 'tok-3f9a1c7e5b2d4086a1';

async function withServer(fn: (app: Awaited<ReturnType<typeof buildServer>>, logs: () => string) => Promise<void>): Promise<void> {
  const dir = tempDir();
  let log = '';
  const stream = new Writable({ write(chunk, _enc, cb) { log += String(chunk); cb(); } });
  const app = await buildServer(await tinyStore(dir.path, { raw: 2, quantized: 2, disk: 4 }, { server: { token: TOKEN } }), { logger: { stream } });
  try {
    await fn(app, () => log);
  } finally {
    await app.close();
    dir.cleanup();
  }
}

test('with a token, every API route wants it; health, readiness and the static pages do not', async () => {
  await withServer(async (app) => {
    const guarded: Array<[string, string, object?]> = [
      ['GET', '/v1/status'], ['GET', '/v1/limits'], ['PATCH', '/v1/limits', { maxLiveSequences: 3 }], ['GET', '/metrics'], ['GET', '/v1/metrics'],
      ['GET', '/v1/telemetry'], ['GET', '/v1/events'], ['POST', '/v1/sequences', {}], ['POST', '/v1/sequences/x/blocks', { count: 1 }],
      ['GET', '/v1/sequences/x/blocks/0'], ['PUT', '/v1/sequences/x/blocks/0'], ['DELETE', '/v1/sequences/x'],
      ['POST', '/v1/sequences/x/blocks/read', { indices: [0] }], ['POST', '/v1/prefix/lookup', { hashes: [] }],
    ];
    const wrong = ['', 'Bearer', `Bearer ${TOKEN}x`, `Bearer ${TOKEN.slice(0, -1)}X`, `Basic ${Buffer.from(`u:${TOKEN}`).toString('base64')}`, TOKEN];
    for (const [method, url, payload] of guarded) {
      for (const authorization of wrong) {
        const res = await app.inject({ method: method as 'GET', url, payload, headers: authorization ? { authorization } : {} });
        assert.equal(res.statusCode, 401, `${method} ${url} with "${authorization}"`);
        assert.equal(res.json().error.code, 'UNAUTHORIZED');
        assert.match(String(res.headers['www-authenticate']), /^Bearer/);
      }
    }
    for (const url of ['/v1/health', '/v1/ready', '/', '/dashboard/app.js', '/docs/json']) {
      assert.equal((await app.inject({ url })).statusCode, 200, url);
    }
    const ok = await app.inject({ url: '/v1/status', headers: { authorization: `Bearer ${TOKEN}` } });
    assert.equal(ok.statusCode, 200);
    assert.equal(ok.json().config.server.auth, true);
    const lower = await app.inject({ url: '/v1/limits', headers: { authorization: `bearer ${TOKEN}` } });
    assert.equal(lower.statusCode, 200, 'the scheme name is case-insensitive');
  });
});

test('the token appears in no answer and no log line', async () => {
  await withServer(async (app, logs) => {
    const auth = { authorization: `Bearer ${TOKEN}` };
    await app.inject({ method: 'POST', url: '/v1/sequences', headers: auth, payload: { id: 's' } });
    await app.inject({ method: 'POST', url: '/v1/sequences/s/blocks', headers: auth, payload: { count: 1 } });
    const answers = [
      await app.inject({ url: '/v1/status', headers: auth }),
      await app.inject({ url: '/v1/status', headers: { authorization: `Bearer ${TOKEN}-wrong` } }),
      await app.inject({ method: 'PUT', url: '/v1/sequences/s/blocks/0', headers: { ...auth, 'content-type': 'application/octet-stream' }, payload: blockContent(1) }),
      await app.inject({ url: '/docs/json' }),
      await app.inject({ url: '/metrics', headers: auth }),
    ];
    for (const res of answers) assert.ok(!res.body.includes(TOKEN), res.body.slice(0, 200));
    // A request logged with its headers still leaves the token out (serializer and redaction).
    app.log.error({ req: { method: 'GET', url: '/v1/status', headers: { authorization: `Bearer ${TOKEN}` } } }, 'a request');
    assert.match(logs(), /a request/);
    assert.ok(!logs().includes(TOKEN));
  });
});
