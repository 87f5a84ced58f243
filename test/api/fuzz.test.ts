/**
 * Nothing a client sends crashes the server or corrupts a block. A seeded stream of bad
 * and half-good requests (malformed bodies, wrong content types, garbage query strings,
 * huge, negative and non-finite numbers, random msgpack, batch writes that fail part way,
 * raw malformed HTTP) runs against
 * a store holding known blocks; every answer must be a 4xx (or a capacity 507, or a
 * success) in the API's error shape, and afterwards every block reads back as written.
 * Each stream starts from a fresh store. `npm test` runs one, of a fixed seed;
 * SPILLWAY_FUZZ_RUNS=N runs N (the fixed one, then fresh seeds) and `npm run fuzz` 200. A
 * failure names its stream's seed: SPILLWAY_FUZZ_SEED=S runs that stream first.
 */
import assert from 'node:assert/strict';
import { randomInt } from 'node:crypto';
import { connect } from 'node:net';
import { after, test } from 'node:test';
import type { FastifyInstance } from 'fastify';
import { pack } from 'msgpackr';
import { encodeWriteBatch } from '../../api/msgpack-blocks.js';
import { buildServer } from '../../api/server.js';
import type { BlockStore } from '../../runtime/store.js';
import { blockContent, FOUR_BIT_BOUND, relativeError, rng, tempDir, tinyStore, TINY_RAW } from '../helpers.js';

const FIRST_SEED = Number(process.env.SPILLWAY_FUZZ_SEED ?? 0x5eed_f00d);
const RUNS = Number(process.env.SPILLWAY_FUZZ_RUNS ?? 1);
const REQUESTS = 1200;
const SEQUENCES = ['f0', 'f1', 'f2', 'f3'];
const BLOCKS = 4;

let app: FastifyInstance | undefined;
let store: BlockStore;
let dir: { path: string; cleanup: () => void };
/** What each block must read back as; `checked: false` for bytes that are not valid bf16 (NaN, Inf). */
const model = new Map<string, { data: Buffer; checked: boolean }>();
let next = rng(FIRST_SEED);

const pick = <T>(xs: readonly T[]): T => xs[Math.floor(next() * xs.length)]!;
const int = (n: number) => Math.floor(next() * n);
const randomBytes = (n: number) => Buffer.from(Array.from({ length: n }, () => int(256)));

/** A fresh store and server holding the known blocks, and the model of them; the previous ones closed. */
async function openFuzzed(): Promise<FastifyInstance> {
  await closeFuzzed();
  dir = tempDir();
  store = await tinyStore(dir.path, { raw: 3, quantized: 3, disk: 32 }, { server: { maxBatchBytes: 4 * TINY_RAW + 1024 } });
  app = await buildServer(store);
  model.clear();
  for (const [s, seq] of SEQUENCES.entries()) {
    store.createSequence(seq);
    store.allocate(seq, BLOCKS);
    for (let i = 0; i < BLOCKS; i++) {
      const data = blockContent(100 * s + i);
      const tokens = s === 0 ? [4 * i, 4 * i + 1, 4 * i + 2, 4 * i + 3] : undefined;
      await store.write(seq, i, data, tokens);
      model.set(`${seq}/${i}`, { data, checked: true });
    }
  }
  return app;
}

async function closeFuzzed(): Promise<void> {
  if (!app) return;
  await app.close();
  dir.cleanup();
  app = undefined;
}

after(closeFuzzed);

const blockUrl = (key: string) => `/v1/sequences/${key.replace('/', '/blocks/')}`;

/** Whether every bf16 value of a block is finite: only then is a lossy read of it held to the 4-bit bound. */
function finiteBf16(data: Buffer): boolean {
  for (let i = 0; i < data.length; i += 2) if ((data.readUInt16LE(i) & 0x7f80) === 0x7f80) return false;
  return true;
}

const WEIRD_NUMBERS = [0, -1, -0, 1.5, 2 ** 31, 2 ** 53 + 2, 1e308, -1e308, Number.MAX_SAFE_INTEGER, 4294967296, 65536];
const WEIRD_NUMBER_TEXT = ['NaN', 'Infinity', '-Infinity', '1e309', '-1e309', '0x10', '1e3', '', ' 1', '01', '١', '9'.repeat(400), '-0', '1.0'];
const WEIRD_STRINGS = ['', ' ', '..', '../etc/passwd', '%00', 'a'.repeat(300), '__proto__', 'constructor', '😀', 'f0\u0000', 'f0 ', 'F0'];

function randomValue(depth = 0): unknown {
  const choice = int(depth > 3 ? 6 : 9);
  switch (choice) {
    case 0: return pick(WEIRD_NUMBERS);
    case 1: return pick(WEIRD_STRINGS);
    case 2: return next() < 0.5;
    case 3: return null;
    case 4: return randomBytes(int(64));
    case 5: return pick([TINY_RAW - 1, TINY_RAW, TINY_RAW + 1]);
    case 6: return Array.from({ length: int(5) }, () => randomValue(depth + 1));
    case 7: return Object.fromEntries(Array.from({ length: int(4) }, () => [pick(['index', 'indices', 'data', 'tokens', 'blocks', 'count', 'id', 'prefix', 'hashes', '__proto__', 'promote']), randomValue(depth + 1)]));
    default: return { blocks: Array.from({ length: int(3) }, () => ({ index: pick([0, 1, 3, 4, -1, 1.5]), data: pick([randomBytes(16), blockContent(int(1e6)), 'x', 5]), tokens: randomValue(depth + 1) })) };
  }
}

function randomQuery(): string {
  const parts = Array.from({ length: int(4) }, () => pick([
    `promote=${pick(['true', 'false', '1', '', 'TRUE', 'true&promote=false'])}`,
    `format=${pick(['raw', 'stored', 'x', ''])}`,
    `tokens=${pick(['1,2,3,4', '1,2,3', '-1,2,3,4', '1,,2', '4294967296,1,2,3', WEIRD_NUMBER_TEXT.join(','), '%ZZ', Array(5000).fill(7).join(',')])}`,
    `since=${pick(WEIRD_NUMBER_TEXT)}`,
    `kinds=${pick(['demote', 'nope', 'demote,,promote', ''])}`,
    `${pick(['__proto__[x]', 'constructor', 'a[]', 'promote[]'])}=1`,
  ]));
  return parts.length ? `?${parts.join('&')}` : '';
}

function randomPath(): string {
  const seq = next() < 0.6 ? pick(SEQUENCES) : encodeURIComponent(pick(WEIRD_STRINGS)) || 'x';
  const index = next() < 0.6 ? String(int(BLOCKS + 1)) : encodeURIComponent(pick(WEIRD_NUMBER_TEXT)) || '0';
  return pick([
    `/v1/sequences/${seq}/blocks/${index}`, `/v1/sequences/${seq}/blocks`, `/v1/sequences/${seq}`,
    `/v1/sequences/${seq}/blocks/${index}/pin`, `/v1/sequences/${seq}/blocks/${index}/unpin`,
    `/v1/sequences/${seq}/blocks/read`, `/v1/sequences/${seq}/blocks/write`, '/v1/sequences', '/v1/prefix/lookup',
    '/v1/limits', '/v1/status', '/v1/telemetry', '/v1/metrics', `/v1/sequences/${seq}/blocks/${index}/%E0%A4%A`,
  ]);
}

interface FuzzRequest {
  method: string;
  url: string;
  headers: Record<string, string>;
  payload?: Buffer | string;
  /** When the request writes whole blocks and may succeed: what it writes, in order. */
  writes?: BlockWrite[];
}

interface BlockWrite {
  key: string;
  data: Buffer;
  /** Whether the data is valid bf16, held to the 4-bit bound when read back lossy. */
  checked: boolean;
  /** Whether the write commits the block (tokens given), so that it may share a cached one instead. */
  commits: boolean;
}

/** Token lists a write may commit under: shared by several blocks, and one (0-3) by a known block of f0. */
const TOKENS = [[0, 1, 2, 3], [1, 2, 3, 4], [5, 6, 7, 8]];

function randomRequest(): FuzzRequest {
  const kind = int(8);
  const type = pick(['application/json', 'application/msgpack', 'application/octet-stream', 'text/plain', 'application/x-www-form-urlencoded',
    'multipart/form-data; boundary=x', 'application/json; charset=utf-16', 'application/msgpack; charset=binary', '', 'x/y']);
  const headers: Record<string, string> = type ? { 'content-type': type } : {};
  if (kind === 0) {
    // A block write, sometimes whole and valid.
    const seq = pick(SEQUENCES);
    const index = int(BLOCKS);
    const whole = next() < 0.5;
    const valid = next() < 0.8;
    const data = whole ? (valid ? blockContent(int(1e6)) : randomBytes(TINY_RAW)) : randomBytes(pick([0, 1, TINY_RAW - 2, TINY_RAW + 2, 100]));
    const query = next() < 0.3 ? randomQuery() : '';
    const octet = next() < 0.8;
    return {
      method: 'PUT', url: `/v1/sequences/${seq}/blocks/${index}${query}`, headers: octet ? { 'content-type': 'application/octet-stream' } : headers, payload: data,
      writes: [{ key: `${seq}/${index}`, data, checked: valid, commits: query.includes('tokens=') }],
    };
  }
  if (kind === 6) {
    // A batch write of one to five entries, most of them whole blocks, some committing.
    const seq = pick(SEQUENCES);
    const entries = Array.from({ length: 1 + int(5) }, () => {
      const data = next() < 0.85 ? blockContent(int(1e6)) : randomBytes(pick([TINY_RAW - 2, 10]));
      return { index: int(BLOCKS + 1), data, ...(next() < 0.3 ? { tokens: pick(TOKENS) } : {}) };
    });
    return {
      method: 'POST', url: `/v1/sequences/${seq}/blocks/write`, headers: { 'content-type': 'application/msgpack' }, payload: Buffer.concat(encodeWriteBatch(entries)),
      writes: entries.map((e) => ({ key: `${seq}/${e.index}`, data: e.data, checked: true, commits: e.tokens !== undefined })),
    };
  }
  if (kind === 1) return { method: 'POST', url: `/v1/sequences/${pick(SEQUENCES)}/blocks/write`, headers: { 'content-type': 'application/msgpack' }, payload: pack(randomValue()) };
  if (kind === 2) return { method: 'POST', url: randomPath(), headers: { 'content-type': 'application/msgpack' }, payload: randomBytes(int(200)) };
  if (kind === 3) {
    const body = JSON.stringify(randomValue()) ?? 'null';
    const mangled = pick([body, body.slice(0, int(body.length + 1)), `${body}}`, body.replace(/\d+/, pick(WEIRD_NUMBER_TEXT)), '[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[', '{"__proto__":{"x":1}}', `{"count":${pick(WEIRD_NUMBER_TEXT)}}`]);
    return { method: pick(['POST', 'PUT', 'PATCH']), url: randomPath() + randomQuery(), headers: { 'content-type': 'application/json' }, payload: mangled };
  }
  if (kind === 4) return { method: pick(['GET', 'HEAD', 'DELETE', 'OPTIONS']), url: randomPath() + randomQuery(), headers };
  if (kind === 5) return { method: pick(['POST', 'PUT', 'PATCH', 'DELETE']), url: randomPath(), headers, payload: randomBytes(int(64)) };
  return { method: 'POST', url: `/v1/sequences/${pick(SEQUENCES)}/blocks/read`, headers: { 'content-type': 'application/json' }, payload: JSON.stringify({ indices: Array.from({ length: int(6) }, () => pick([0, 1, 2, 3, 4, -1, 1.5, 1e20])), promote: pick([true, false, 'yes']) }) };
}

/**
 * Takes what a write request wrote into the model: every block of a 200, the entries before
 * the failing one of a refused batch (its answer's `written`). A block that commits under a
 * prefix cached already shares that block, so it holds the cached bytes, not these: the model
 * takes them from a read. (A refused batch does not say which of its written entries did.)
 */
async function followWrites(app: FastifyInstance, writes: BlockWrite[], status: number, answer: unknown, what: string): Promise<void> {
  const ok = answer as { deduplicated?: boolean; blocks?: Array<{ deduplicated?: boolean }> };
  const written = status === 200 ? writes.length : (answer as { error?: { written?: number } }).error?.written ?? 0;
  for (const [k, w] of writes.slice(0, written).entries()) {
    const shared = status === 200 ? (ok.blocks?.[k] ?? ok).deduplicated === true : w.commits;
    if (!shared) {
      model.set(w.key, { data: w.data, checked: w.checked });
      continue;
    }
    const now = await app.inject({ url: `${blockUrl(w.key)}?promote=false` });
    assert.equal(now.statusCode, 200, `${what}: then ${now.body}`);
    model.set(w.key, { data: now.rawPayload, checked: finiteBf16(now.rawPayload) });
  }
}

/** One stream of REQUESTS requests from `seed`; then every block the model holds reads back as written. */
async function fuzzStream(seed: number): Promise<void> {
  next = rng(seed);
  const app = await openFuzzed();
  const statuses = new Map<number, number>();
  for (let n = 0; n < REQUESTS; n++) {
    const req = randomRequest();
    const res = await app.inject({ method: req.method as 'GET', url: req.url, headers: req.headers, payload: req.payload });
    statuses.set(res.statusCode, (statuses.get(res.statusCode) ?? 0) + 1);
    const what = `SPILLWAY_FUZZ_SEED=${seed} #${n} ${req.method} ${req.url.slice(0, 120)} [${req.headers['content-type'] ?? ''}] -> ${res.statusCode} ${res.body.slice(0, 200)}`;
    assert.ok(res.statusCode < 500 || res.statusCode === 507, what);
    if (res.statusCode >= 400 && req.method !== 'HEAD') {
      const body = res.json() as { error?: { code?: unknown; message?: unknown } };
      assert.equal(typeof body.error?.code, 'string', what);
      assert.equal(typeof body.error?.message, 'string', what);
    }
    if (req.writes) await followWrites(app, req.writes, res.statusCode, res.json(), what);
    if (res.statusCode === 200 && req.method === 'DELETE') {
      const seq = /^\/v1\/sequences\/([^/?]+)(?:\?|$)/.exec(req.url)?.[1];
      for (const key of [...model.keys()]) if (key.startsWith(`${seq}/`)) model.delete(key);
    }
  }
  assert.ok((statuses.get(200) ?? 0) > 0 && [...statuses.keys()].some((s) => s >= 400), `SPILLWAY_FUZZ_SEED=${seed}: a mix of outcomes: ${[...statuses]}`);

  store.checkInvariants();
  // What the stream left (it may have deleted every sequence) reads back as written.
  for (const [key, expected] of model) {
    const res = await app.inject({ url: blockUrl(key) });
    assert.equal(res.statusCode, 200, `SPILLWAY_FUZZ_SEED=${seed} ${key}: ${res.body}`);
    assert.equal(res.rawPayload.length, TINY_RAW);
    if (!expected.checked) continue;
    const what = `SPILLWAY_FUZZ_SEED=${seed} ${key}`;
    if (res.headers['spillway-lossy'] === 'true') assert.ok(relativeError(expected.data, res.rawPayload) < FOUR_BIT_BOUND, what);
    else assert.ok(expected.data.equals(res.rawPayload), what);
  }
  store.checkInvariants();
}

test(`${RUNS} stream(s) of ${REQUESTS} seeded bad and half-good requests are answered without a crash or a corrupted block`, { timeout: RUNS * 120_000 }, async () => {
  for (let run = 1; run <= RUNS; run++) {
    const seed = run === 1 ? FIRST_SEED : randomInt(2 ** 31);
    await fuzzStream(seed);
    if (RUNS > 1) process.stdout.write(`# fuzz stream ${run}/${RUNS} passed (seed ${seed})\n`);
  }
});

/** Sends raw bytes on a fresh connection; resolves with what came back before close or timeout. */
function raw(port: number, bytes: string | Buffer): Promise<string> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    let got = '';
    const done = () => {
      socket.destroy();
      resolve(got);
    };
    socket.setTimeout(1000, done);
    socket.on('data', (d) => (got += d.toString('latin1')));
    socket.on('close', done);
    socket.on('error', done);
    socket.on('connect', () => socket.end(bytes));
  });
}

test('malformed HTTP on the wire is refused in the API error shape and the server keeps serving', async () => {
  const url = await (await openFuzzed()).listen({ host: '127.0.0.1', port: 0 });
  const port = Number(new URL(url).port);
  const cases: Array<string | Buffer> = [
    'GARBAGE\r\n\r\n',
    'GET /v1/health HTTP/9.9\r\n\r\n',
    'GET /v1/health HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n',
    'GET /v1/health HTTP/1.1\r\nHost: x\r\nX: \u0001\r\n\r\n',
    `GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(70_000)}\r\n\r\n`,
    'POST /v1/sequences HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n{}',
    'POST /v1/sequences HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n{}',
    'POST /v1/sequences HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n',
    'POST /v1/sequences HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: -1\r\n\r\n',
    'POST /v1/sequences HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"id":',
    `PUT /v1/sequences/f1/blocks/0 HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: ${TINY_RAW}\r\n\r\n${'x'.repeat(100)}`,
    `PUT /v1/sequences/f1/blocks/0 HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: 99999999999\r\n\r\n`,
    'GET /v1/sequences/f0/blocks/%ZZ HTTP/1.1\r\nHost: x\r\n\r\n',
    'GET /../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n',
    'GET * HTTP/1.1\r\nHost: x\r\n\r\n',
    Buffer.from([0x16, 0x03, 0x01, 0x00, 0xa5, 0x01, 0x00, 0x00, 0xa1, 0x03, 0x03]), // a TLS hello
    randomBytes(512),
  ];
  for (const c of cases) {
    const answer = await raw(port, c);
    const status = /^HTTP\/1\.1 (\d{3})/.exec(answer)?.[1];
    const label = JSON.stringify(String(c).slice(0, 80));
    assert.ok(status === undefined || Number(status) < 500, `${label} -> ${answer.slice(0, 200)}`);
    if (status && Number(status) >= 400) {
      const body = answer.slice(answer.indexOf('\r\n\r\n') + 4);
      assert.equal(typeof (JSON.parse(body) as { error: { code: string } }).error.code, 'string', `${label} -> ${answer.slice(0, 300)}`);
    }
  }
  const health = await fetch(`${url}/v1/health`);
  assert.equal(health.status, 200);
  for (const key of model.keys()) assert.equal((await fetch(url + blockUrl(key))).status, 200, key);
  store.checkInvariants();
});
