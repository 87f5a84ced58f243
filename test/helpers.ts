/** Shared test fixtures: tiny geometries, seeded block contents, error measures. */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { FastifyInstance } from 'fastify';
import { parseConfig, projectRoot, type Config, type ConfigInput } from '../runtime/config.js';
import { addon } from '../runtime/native.js';
import { chooseBackend, openStore } from '../runtime/open.js';
import type { BlockStore } from '../runtime/store.js';

/** 2 layers x 2 KV heads x 4 tokens x 64 dims of bf16: 4 KiB raw, 1216 B at 4 bits. */
export const TINY_MODEL = { layers: 2, kvHeads: 2, headDim: 64, tokensPerBlock: 4, dtype: 'bf16' } as const;
export const TINY_RAW = 4096;
export const TINY_QUANT = 1216;

// Seeded contents and error measures live apart from the store fixtures, so that code
// without the native addon (the soak's verifier threads) can use them too.
import { blockContent, FOUR_BIT_BOUND, relativeError } from '../bench/block-content.js';
export { blockContent, FOUR_BIT_BOUND, relativeError, rng } from '../bench/block-content.js';

/** A read of a block written as `expected`: bit-exact where it is not lossy, within the 4-bit bound where it is. */
export function assertReadBack(expected: Buffer, read: { data: Buffer; lossy: boolean }, what: string): void {
  if (read.lossy) assert.ok(relativeError(expected, read.data) < FOUR_BIT_BOUND, `${what} corrupted`);
  else assert.ok(read.data.equals(expected), `${what} differs`);
}

export function tempDir(prefix = 'spillway-test-'): { path: string; cleanup: () => void } {
  const path = mkdtempSync(join(tmpdir(), prefix));
  return { path, cleanup: () => rmSync(path, { recursive: true, force: true }) };
}

/** Slots per tier of a tiny ladder; without `host`, the ladder has no host tier. */
export interface TinySlots {
  raw: number;
  quantized: number;
  host?: number;
  disk: number;
}

/** A metric without labels as the server's /metrics page gives it (NaN when it is absent). */
export async function metricValue(app: FastifyInstance, name: string): Promise<number> {
  return Number(new RegExp(`^${name} (\\d+)$`, 'm').exec((await app.inject({ url: '/metrics' })).body)?.[1]);
}

/** Waits up to 2 s for a metric to read `value` (a response closes a moment after its client has it), then asserts it. */
export async function metricBecomes(app: FastifyInstance, name: string, value: number, message = name): Promise<void> {
  for (let i = 0; i < 200 && (await metricValue(app, name)) !== value; i++) await sleep(10);
  assert.equal(await metricValue(app, name), value, message);
}

/** A config with the given slots of the tiny geometry in each tier. */
export function tinyConfig(dir: string, slots: TinySlots, extra: ConfigInput = {}): Config {
  return parseConfig({
    ...extra,
    // The loop's delay here is the test machine's, not the server's: only the load tests shed on it.
    server: { maxEventLoopDelayMs: 0, ...extra.server },
    model: { ...TINY_MODEL, ...extra.model },
    tiers: {
      ...extra.tiers,
      raw: { bytes: slots.raw * TINY_RAW },
      quantized: { bytes: slots.quantized * TINY_QUANT },
      host: { bytes: (slots.host ?? 0) * TINY_QUANT },
      disk: { ...extra.tiers?.disk, path: join(dir, 'tier2.slots'), bytes: slots.disk * 4096 },
    },
  });
}

export async function tinyStore(dir: string, slots: TinySlots, extra: ConfigInput = {}): Promise<BlockStore> {
  return openStore(tinyConfig(dir, slots, extra));
}

/** Creates sequence `id` with `count` blocks written with seeded contents (seed, seed + 1, ...), returned in order. */
export async function writeSequence(store: BlockStore, id: string, count: number, seed: number): Promise<Buffer[]> {
  store.createSequence(id);
  store.allocate(id, count);
  const data = Array.from({ length: count }, (_, i) => blockContent(seed + i));
  for (let i = 0; i < count; i++) await store.write(id, i, data[i]!);
  return data;
}

/** Runs `fn` over a tiny host-backend store, then checks its invariants and closes it. */
export async function withHostStore(slots: TinySlots, fn: (store: BlockStore) => Promise<void>): Promise<void> {
  const dir = tempDir();
  const store = await tinyStore(dir.path, slots, { backend: 'host' });
  try {
    await fn(store);
    store.checkInvariants();
  } finally {
    await store.close();
    dir.cleanup();
  }
}

/** The backend this machine gives an 'auto' configuration: 'gpu' where there is one. */
export async function expectedBackend(): Promise<'host' | 'gpu'> {
  return chooseBackend(parseConfig({}), await addon.probe()).name;
}

export interface HttpAnswer {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
  /** The API's error object of a non-2xx JSON answer. */
  error?: Record<string, unknown>;
}

/**
 * One request with any method, headers and body (GET and DELETE included, which fetch will
 * not send with a body). An event stream is answered by its headers, then closed. With
 * `rest`, only the first half of the body goes at once, the second once `rest` resolves:
 * requests that overlap as slow uploads do.
 */
export function httpSend(url: string, method: string, headers: Record<string, string>, body?: Buffer, rest?: Promise<void>): Promise<HttpAnswer> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(url, { method, headers: body ? { ...headers, 'content-length': String(body.length) } : headers }, (res) => {
      if (res.headers['content-type'] === 'text/event-stream') {
        res.destroy();
        return resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.alloc(0) });
      }
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', reject);
      res.on('end', () => {
        const answer: HttpAnswer = { status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks) };
        if (answer.status >= 300 && String(res.headers['content-type']).startsWith('application/json')) {
          answer.error = (JSON.parse(answer.body.toString()) as { error: Record<string, unknown> }).error;
        }
        resolve(answer);
      });
    });
    req.on('error', reject);
    if (!body || !rest) return req.end(body);
    req.write(body.subarray(0, body.length >> 1));
    void rest.then(() => req.end(body.subarray(body.length >> 1)));
  });
}

/** Builds a CUDA bench of bench/quant (build.sh) and returns its path, or skips the test where
 * there is no nvcc to build it with. */
export function quantBench(t: { skip: (message: string) => void }, name: string): string | undefined {
  const build = spawnSync('sh', [join(projectRoot, 'bench/quant/build.sh'), name], { encoding: 'utf8' });
  assert.equal(build.status, 0, build.stderr);
  if (build.stderr.includes('nvcc not found')) {
    t.skip(`no nvcc here: ${name} is CUDA C++ and needs it to build`);
    return undefined;
  }
  return join(projectRoot, 'build/bench', name);
}
