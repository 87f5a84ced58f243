/**
 * Every operation of the served OpenAPI document under hostile requests: wrong ids,
 * malformed bodies and bodies meant for other routes in every content type the server
 * knows (and none), 1 MiB of junk of every type, bodies at and over each limit, and
 * hostile msgpack (deep nesting, huge declared lengths, many tiny values). Every answer
 * is a 2xx or the API's error shape, no 5xx but 503; every 1 MiB body is answered within
 * 50 ms of event-loop time (the CPU time of this process's main thread, which runs the
 * server); and the blocks written before are read back byte for byte after.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, test } from 'node:test';
import type { FastifyInstance } from 'fastify';
import { pack } from 'msgpackr';
import { buildServer } from '../../api/server.js';
import type { SpillwayError } from '../../runtime/errors.js';
import type { BlockStore } from '../../runtime/store.js';
import { blockContent, httpSend, rng, tempDir, tinyStore, TINY_RAW, type HttpAnswer } from '../helpers.js';

const MiB = 2 ** 20;
/** Large enough that 1 MiB of any type is read and parsed where its route takes it. */
const MAX_BATCH = 2 * MiB;
const MAX_JSON = 2 * MiB;
const BLOCK_LIMIT = TINY_RAW + 64 * 1024;
const LOOP_MS = 50;
/**
 * CPU time of this process's main thread, which runs the event loop (the server's and the
 * client's), in ms: unlike wall time, not stretched when other processes share the cores.
 * The kernel brings it up to date when the thread sleeps: read it after a timer.
 */
const loopCpuMs = () => Number(readFileSync(`/proc/self/task/${process.pid}/schedstat`, 'utf8').split(' ')[0]) / 1e6;
const TYPES = ['application/json', 'application/msgpack', 'application/x-msgpack', 'application/octet-stream', 'text/plain', 'none'] as const;
type Type = (typeof TYPES)[number];
const PROTECTED = ['p0', 'p1', 'p2', 'p3'];

let app: FastifyInstance;
let store: BlockStore;
let url: string;
let lease = '';
const dir = tempDir();
const next = rng(0xf0220a91);
const randomBytes = (n: number) => Buffer.from(Array.from({ length: n }, () => Math.floor(next() * 256)));
const written = new Map<string, Buffer>();

before(async () => {
  store = await tinyStore(dir.path, { raw: 64, quantized: 16, disk: 256 }, { server: { maxBatchBytes: MAX_BATCH, maxJsonBytes: MAX_JSON } });
  app = await buildServer(store);
  url = await app.listen({ host: '127.0.0.1', port: 0 });
  // Blocks no fuzzed request names, pinned in tier 0 so that they read back exact.
  for (const [s, seq] of PROTECTED.entries()) {
    store.createSequence(seq);
    store.allocate(seq, 4);
    for (let i = 0; i < 4; i++) {
      const data = blockContent(1000 + 10 * s + i);
      await store.write(seq, i, data, s === 0 ? [4 * i, 4 * i + 1, 4 * i + 2, 4 * i + 3] : undefined);
      store.pin(seq, i);
      written.set(`${seq}/${i}`, data);
    }
  }
});

after(async () => {
  await app.close();
  dir.cleanup();
});

/** Brings back what an earlier operation may have ended or changed: the sequence and lease good URLs name, the limits. */
async function fresh(limits: BlockStore['limits']): Promise<void> {
  store.setLimits(limits);
  try {
    store.heartbeat(lease);
  } catch {
    lease = store.createLease('fuzz', 600_000).id;
  }
  try {
    store.createSequence('z');
  } catch (err) {
    assert.equal((err as SpillwayError).code, 'SEQUENCE_EXISTS');
    return;
  }
  store.allocate('z', 8);
  await store.write('z', 0, blockContent(7));
}

interface Operation {
  method: string;
  /** With {id} and {index} in it. */
  path: string;
  consumes: string[] | null;
  /** Statuses with an answer of their own (readiness's 503), not the error shape. */
  documented: string[];
}

/** The route's body limit for a body of `type`; null for a type the route does not take. */
function limitFor(op: Operation, type: Type): number | null {
  if (!op.consumes?.includes(type)) return null;
  return type === 'application/octet-stream' ? BLOCK_LIMIT : type === 'application/json' ? MAX_JSON : MAX_BATCH;
}

/** The operation's URL with good ids, then wrong ones. */
function urls(op: Operation): string[] {
  const good = op.path.replace('{id}', op.path.includes('/leases/') ? lease : 'z').replace('{index}', '0');
  const wrongIds = op.path.includes('/leases/') ? ['lease-000000000000000000000000', '%00'] : ['nope', encodeURIComponent('a'.repeat(300))];
  const wrong = op.path.includes('{id}') ? wrongIds.map((id) => op.path.replace('{id}', id).replace('{index}', '0')) : [];
  const badIndex = op.path.includes('{index}') ? ['-1', '99999999999', '7'].map((i) => good.replace(/\/0(?=\/|$)/, `/${i}`)) : [];
  return [good, ...wrong, ...badIndex];
}

/** Bodies meant for some route, each in the encoding that route takes. */
const WELL_FORMED: Array<[Type, Buffer]> = [
  ...['{"count":1}', '{"id":"m1"}', '{"indices":[0]}', '{"indices":[0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0]}', '{"hashes":[]}', '{"tokens":[1,2,3,4]}',
    '{"client":"fuzz"}', '{"blockId":0}', '{"sequence":"z","index":0}', '{"maxTokensPerSequence":64}', 'null', '[]', '"x"', '1e400',
    '{"__proto__":{"x":1}}', '{"constructor":{"prototype":{}}}'].map((j): [Type, Buffer] => ['application/json', Buffer.from(j)]),
  ['application/msgpack', pack({ blocks: [{ index: 1, data: blockContent(3) }] })],
  ['application/msgpack', pack({ blocks: [{ index: 1, data: Buffer.alloc(3) }] })],
  ['application/msgpack', pack({ count: 1 })],
  ['application/octet-stream', blockContent(4)],
];

/** 1 MiB of junk of any type; to a route that takes the type, random bytes and hostile bodies of its kind too. */
function bigBodies(type: Type, taken: boolean): Array<[string, Buffer]> {
  const junk: Array<[string, Buffer]> = [['x', Buffer.alloc(MiB, 'x')]];
  if (!taken) return junk;
  junk.push(['random', randomBytes(MiB)]);
  if (type === 'application/json') {
    const zeros = `0,`.repeat(MiB / 2 - 16);
    junk.push(
      ['deep', Buffer.from('['.repeat(MiB))],
      ['array', Buffer.from(`[${zeros}0]`)],
      ['bad items', Buffer.from(`{"hashes":[${zeros}0]}`)],
      ['many keys', Buffer.from(`{${Array.from({ length: MiB / 16 }, (_, i) => `"k${i}":0`).join(',')}}`)],
    );
  }
  if (type === 'application/msgpack' || type === 'application/x-msgpack') {
    const declared = Buffer.alloc(MiB);
    declared.writeUInt8(0xdd, 0);
    declared.writeUInt32BE(MiB - 5, 1);
    junk.push(['deep', Buffer.alloc(MiB, 0x91)], ['many values', declared], ['many arrays', Buffer.alloc(MiB, 0x9f)],
      ['big bin', Buffer.concat([Buffer.from([0x81, 0xa6, ...Buffer.from('blocks'), 0xc6]), Buffer.from([0x00, 0x10, 0x00, 0x00]), Buffer.alloc(MiB)])]);
  }
  return junk;
}

/** Tiny msgpack that declares far more than it holds. */
const HUGE_DECLARED = [[0xdd, 0xff, 0xff, 0xff, 0xff], [0xdf, 0xff, 0xff, 0xff, 0xff, 0x01], [0xdb, 0xff, 0xff, 0xff, 0xff, 0x61], [0xc6, 0xff, 0xff, 0xff, 0xff],
  [0x81, 0xa6, ...Buffer.from('blocks'), 0xdc, 0xff, 0xff, 0x80]].map((b) => Buffer.from(b));

function check(answer: HttpAnswer, op: Operation, what: string): void {
  const { status } = answer;
  assert.ok(status < 500 || status === 503, `${what} -> ${status} ${answer.body.toString().slice(0, 300)}`);
  if (status < 300 || op.documented.includes(String(status))) return;
  assert.equal(typeof answer.error?.code, 'string', `${what} -> ${status} ${answer.body.toString().slice(0, 300)}`);
  assert.equal(typeof answer.error?.message, 'string', what);
  if (status === 415) assert.equal(answer.error!.field, 'content-type', what);
  if (status === 503) assert.equal(answer.headers['retry-after'], '1', what);
}

const send = (method: string, path: string, type: Type, body?: Buffer) =>
  httpSend(url + path, method, type === 'none' ? {} : { 'content-type': type }, body);

test('every operation of the OpenAPI document answers hostile requests in the error shape, quickly, and corrupts nothing', async (t) => {
  type Documented = { requestBody?: { content: Record<string, unknown> }; responses: Record<string, unknown> };
  const doc = (await app.inject({ url: '/docs/json' })).json() as { paths: Record<string, Record<string, Documented>> };
  const ops: Operation[] = Object.entries(doc.paths).flatMap(([path, methods]) => Object.entries(methods).map(([method, op]) => ({
    method: method.toUpperCase(), path, consumes: op.requestBody ? Object.keys(op.requestBody.content) : null,
    documented: Object.keys(op.responses).filter((s) => s !== 'default' && Number(s) >= 300),
  })));
  assert.ok(ops.length >= 29 && ops.some((o) => o.consumes?.includes('application/msgpack')) && ops.some((o) => o.consumes?.includes('application/octet-stream')));

  const statuses = new Map<number, number>();
  const slowest: Array<{ ms: number; what: string }> = [];
  let requests = 0;
  const run = async (op: Operation, path: string, type: Type, body: Buffer | undefined, label: string) => {
    const { method } = op;
    const answer = await send(method, path, type, body);
    requests++;
    statuses.set(answer.status, (statuses.get(answer.status) ?? 0) + 1);
    check(answer, op, `${method} ${path.slice(0, 100)} [${type}] ${label}`);
    return answer;
  };
  /** A 1 MiB body: the event loop's CPU time while it is sent and answered, best of three (a collection may fall in one). */
  const timed = async (op: Operation, path: string, type: Type, body: Buffer, label: string) => {
    let best = Infinity;
    for (let attempt = 0; attempt < 3 && best > LOOP_MS; attempt++) {
      await sleep(1);
      const start = loopCpuMs();
      await run(op, path, type, body, label);
      await sleep(1);
      best = Math.min(best, loopCpuMs() - start);
    }
    const what = `${op.method} ${path} [${type}] ${label}`;
    slowest.push({ ms: best, what });
    assert.ok(best <= LOOP_MS, `${what}: ${best.toFixed(1)} ms of event-loop CPU time`);
  };

  const limits = store.limits;
  for (const op of ops) {
    await fresh(limits);
    const [good, ...wrong] = urls(op);
    for (const path of [good!, ...wrong]) {
      for (const type of TYPES) {
        await run(op, path, type, undefined, 'empty');
        await run(op, path, type, randomBytes(1 + Math.floor(next() * 64)), 'malformed');
      }
      for (const body of HUGE_DECLARED) for (const type of ['application/msgpack', 'application/x-msgpack'] as const) await run(op, path, type, body, 'huge declared');
    }
    for (const [own, body] of WELL_FORMED) for (const type of TYPES) await run(op, good!, type, body, `meant as ${own}`);
    for (const type of TYPES) {
      for (const [label, body] of bigBodies(type, op.consumes?.includes(type) ?? false)) await timed(op, good!, type, body, `1 MiB ${label}`);
      const limit = limitFor(op, type);
      if (limit === null) continue;
      const at = await run(op, good!, type, Buffer.alloc(limit, 'x'), 'at the limit');
      assert.notEqual(at.status, 413, `${op.method} ${op.path} [${type}] at its limit of ${limit}`);
      const over = await run(op, good!, type, Buffer.alloc(limit + 1, 'x'), 'over the limit');
      assert.equal(over.status, 413, `${op.method} ${op.path} [${type}] over its limit of ${limit}`);
      assert.equal(over.error!.limitBytes, limit);
    }
    // Over the batch limit, of a type the route does not take: refused unread.
    const foreign = TYPES.find((type) => type !== 'none' && !op.consumes?.includes(type))!;
    const beyond = await run(op, good!, foreign, Buffer.alloc(MAX_BATCH + 1, 'x'), 'beyond every limit');
    assert.equal(beyond.status, op.consumes ? 415 : 400);
  }

  slowest.sort((a, b) => b.ms - a.ms);
  t.diagnostic(`${requests} requests; statuses ${[...statuses].sort(([a], [b]) => a - b).map(([s, n]) => `${s}:${n}`).join(' ')}`);
  t.diagnostic(`1 MiB bodies: ${slowest.length}, event-loop CPU time: 90th percentile ${slowest[Math.floor(slowest.length / 10)]!.ms.toFixed(1)} ms, slowest ${slowest.slice(0, 3).map((s) => `${s.ms.toFixed(1)} ms (${s.what})`).join('; ')}`);
  assert.ok((statuses.get(200) ?? 0) + (statuses.get(201) ?? 0) > 0, 'some requests succeed');

  assert.equal((await send('GET', '/v1/health', 'none')).status, 200);
  store.checkInvariants();
  for (const [key, data] of written) {
    const answer = await send('GET', `/v1/sequences/${key.replace('/', '/blocks/')}`, 'none');
    assert.equal(answer.status, 200, key);
    assert.equal(answer.headers['spillway-lossy'], 'false', key);
    assert.ok(answer.body.equals(data), key);
  }
  assert.match((await app.inject({ url: '/metrics' })).body, /^spillway_http_body_bytes_in_flight 0$/m);
});
