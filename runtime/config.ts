/**
 * The configuration schema: the single source of truth for the config file, CLI flags,
 * environment and the API. Everything that reads configuration validates through
 * `parseConfig`, so a bad value fails the same way everywhere, naming its field.
 */
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import { DTYPES } from './dtype.js';
import { errors, SpillwayError } from './errors.js';
import { IO_MODES } from './io-mode.js';

const UNITS: Record<string, number> = {
  '': 1, b: 1,
  k: 1e3, kb: 1e3, m: 1e6, mb: 1e6, g: 1e9, gb: 1e9, t: 1e12, tb: 1e12,
  kib: 2 ** 10, mib: 2 ** 20, gib: 2 ** 30, tib: 2 ** 40,
};

/** A byte count: a number, or a string such as "512MiB" or "2 GB". */
const Bytes = z.union([
  z.number().int().nonnegative(),
  z.string().transform((s, ctx) => {
    const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(s);
    const unit = m ? UNITS[m[2]!.toLowerCase()] : undefined;
    if (!m || unit === undefined) {
      ctx.addIssue({ code: 'custom', message: `"${s}" is not a byte size (examples: 1048576, "512MiB", "2GB")` });
      return z.NEVER;
    }
    return Math.floor(Number(m[1]) * unit);
  }),
]);

const Bits = z.number().min(1).max(4).refine((b) => Number.isInteger(b * 2), 'bits must be 1 to 4 in steps of 0.5');
const PowerOfTwo = (min: number, max: number) =>
  z.number().int().min(min).max(max).refine((v) => (v & (v - 1)) === 0, `must be a power of two from ${min} to ${max}`);

/** The largest body one request may send, but for a single block (api/server.ts). */
const largestBody = (s: { maxBatchBytes: number; maxJsonBytes: number }) => Math.max(s.maxBatchBytes, s.maxJsonBytes);

export const ConfigSchema = z.object({
  model: z.object({
    layers: z.number().int().min(1).max(1024).default(32),
    kvHeads: z.number().int().min(1).max(1024).default(8),
    headDim: PowerOfTwo(16, 512).default(128),
    dtype: z.enum(DTYPES).default('bf16'),
    tokensPerBlock: z.number().int().min(1).max(1024).default(16),
  }).strict().prefault({}),
  tiers: z.object({
    raw: z.object({ bytes: Bytes.default(512 * 2 ** 20) }).strict().prefault({}),
    quantized: z.object({ bytes: Bytes.default(512 * 2 ** 20) }).strict().prefault({}),
    /**
     * Quantized blocks in host memory (pinned on the GPU backend), between the memory tiers
     * and the disk. None by default: it takes memory from the engine's host and the page
     * cache, so its size is the operator's call (README: twice the HBM tiers is a start).
     */
    host: z.object({ bytes: Bytes.default(0) }).strict().prefault({}),
    disk: z.object({
      path: z.string().min(1).default('data/tier2.slots'),
      bytes: Bytes.default(2 * 2 ** 30),
      direct: z.boolean().default(true),
      /** GPU backend only: cuFile where it works ('auto'), cuFile or fail, or the POSIX path. */
      io: z.enum(IO_MODES).default('auto'),
      /** Recover the committed blocks found in the file at start (runtime/recovery.ts); false starts empty. */
      recover: z.boolean().default(true),
      /**
       * Disk operations run at once: the threads of the backend's disk queue; more wait their
       * turn there. A disk past its best queue depth reads slower, not faster: the spill-fill
       * bench sweeps 4-32 and names this disk's best.
       */
      inFlight: z.number().int().min(1).max(1024).default(16),
    }).strict().prefault({}),
    /**
     * Committed blocks shared by every server pointed at one directory of a shared mount
     * (runtime/shared-tier.ts). Off without a path; `bytes` bounds the directory, all
     * servers together.
     */
    shared: z.object({
      path: z.string().min(1).optional(),
      bytes: Bytes.refine((b) => b > 0, 'must be positive').default(64 * 2 ** 30),
    }).strict().prefault({}),
  }).strict().prefault({}),
  quantization: z.object({
    keyBits: Bits.default(4),
    valueBits: Bits.default(4),
    /**
     * The first `first` and the last `last` layers at their own bit widths, the most sensitive
     * ones (e.g. { first: 2, last: 2, keyBits: 4, valueBits: 4 } with keyBits 3, valueBits 2.5).
     */
    outerLayers: z.object({
      first: z.number().int().min(0).max(1024),
      last: z.number().int().min(0).max(1024),
      keyBits: Bits,
      valueBits: Bits,
    }).strict().refine((o) => o.first + o.last > 0, { message: 'name at least one outer layer (first or last above 0)', path: ['first'] })
      .optional(),
    variant: z.enum(['mse', 'prod']).default('mse'),
    seed: z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER).default(0x5eed),
  }).strict().prefault({}),
  limits: z.object({
    maxTokensPerSequence: z.number().int().positive().default(131072),
    maxLiveSequences: z.number().int().positive().default(256),
    maxTotalTokens: z.number().int().positive().default(Number.MAX_SAFE_INTEGER),
  }).strict().prefault({}),
  eviction: z.object({
    policy: z.enum(['lru', 'fifo']).default('lru'),
    /** How long an operation waits for in-flight moves to free a slot before TIER_BUSY. */
    waitMs: z.number().int().nonnegative().default(5000),
    /**
     * The fraction of each memory tier's slots kept free ahead of demand (rounded down per
     * tier): below it, blocks move down in the background, so that a write or a promotion
     * takes a free slot instead of waiting for an eviction. 0 evicts only on demand.
     */
    reserve: z.number().min(0).max(0.5).default(0.05),
  }).strict().prefault({}),
  backend: z.enum(['auto', 'host', 'gpu']).default('auto'),
  gpu: z.object({
    /**
     * The GPU this runtime's tiers, kernels and weights use: an index within the visible
     * devices (CUDA_VISIBLE_DEVICES=2,3 makes physical GPU 3 index 1).
     */
    device: z.number().int().min(0).max(1023).default(0),
  }).strict().prefault({}),
  /** Model weights loaded before serving (docs/WEIGHTS.md); none when `source` is unset. */
  weights: z.object({
    /** A directory (plain, or split by `spillway weights split`), an index JSON, or a list of files. */
    source: z.union([z.string().min(1), z.array(z.string().min(1)).min(1)]).optional(),
    rank: z.number().int().nonnegative().default(0),
    world: z.number().int().min(1).max(4096).default(1),
    /** Split rules (JSON) for slicing an unsplit checkpoint; Llama-style defaults otherwise. */
    rules: z.string().min(1).optional(),
    /** Reads in flight across all files. */
    concurrency: z.number().int().min(1).max(1024).default(16),
    /** Largest single read; a multiple of 4 KiB so O_DIRECT sinks can use it as is. */
    requestBytes: Bytes.refine((b) => b >= 4096 && b % 4096 === 0 && b <= 2 ** 30, 'must be a multiple of 4 KiB from 4 KiB to 1 GiB').default(16 * 2 ** 20),
  }).strict().refine((w) => w.rank < w.world, { message: 'must be below weights.world', path: ['rank'] }).prefault({}),
  server: z.object({
    host: z.string().default('127.0.0.1'),
    port: z.number().int().min(0).max(65535).default(8420),
    token: z.string().min(16).optional(),
    /** Largest batch request body (msgpack batch writes); a batch read returns at most this much. */
    maxBatchBytes: Bytes.default(64 * 2 ** 20),
    /** Largest JSON request body: a prefix lookup of 131072 token ids of ten digits is 1.4 MB. */
    maxJsonBytes: Bytes.refine((b) => b > 0, 'must be positive').default(2 * 2 ** 20),
    /**
     * Request bodies and batch-read answers held at once, all requests together: a request
     * past it gets 503. Four of the largest body (maxBatchBytes or maxJsonBytes) by default.
     */
    maxBodyBytesInFlight: Bytes.optional(),
    /**
     * How long a request past that budget waits for room, its body unread (TCP holds the
     * client's upload back), before it gets 503: refused at once, a client would send its
     * whole body only to have it thrown away, and again on every retry.
     */
    maxBodyWaitMs: z.number().int().min(0).max(60_000).default(1000),
    /**
     * How long a request may take to arrive whole, headers and body: past it the client gets
     * 408 and the connection closes, so that an upload that stalls gives back its share of
     * maxBodyBytesInFlight instead of holding it for good. 0: no limit.
     */
    requestTimeoutMs: z.number().int().min(0).max(3_600_000).default(60_000),
    /** Connections open at once; one more is closed as it arrives (and counted). */
    maxConnections: z.number().int().min(1).max(1_000_000).default(1024),
    /** Data-plane requests get 503 while more disk operations than this are in flight. */
    maxDiskQueue: z.number().int().nonnegative().default(256),
    /** ... or while the event loop's mean delay over a sample exceeds this; 0 turns this check off. */
    maxEventLoopDelayMs: z.number().nonnegative().default(200),
    /** Bytes an event-stream client may lag behind before its events are dropped (and counted). */
    eventBufferBytes: Bytes.default(2 ** 20),
    /** How often telemetry is sampled for /v1/telemetry and the dashboard. */
    telemetryIntervalMs: z.number().int().min(50).max(60_000).default(1000),
    /** Serves POST /v1/faults/disk (api/routes/faults.ts) for soak tests; never in production. */
    faults: z.boolean().default(false),
  }).strict()
    .transform((s) => ({ ...s, maxBodyBytesInFlight: s.maxBodyBytesInFlight ?? 4 * largestBody(s) }))
    .refine((s) => s.maxBodyBytesInFlight >= largestBody(s), {
      message: 'must be at least the largest request body (server.maxBatchBytes, server.maxJsonBytes)', path: ['maxBodyBytesInFlight'],
    })
    .prefault({}),
}).strict().refine((c) => !c.quantization.outerLayers || c.quantization.outerLayers.first + c.quantization.outerLayers.last <= c.model.layers, {
  message: 'outer layers first + last must not exceed model.layers', path: ['quantization', 'outerLayers', 'last'],
});

export type Config = z.infer<typeof ConfigSchema>;
export type ConfigInput = z.input<typeof ConfigSchema>;

/** Validates raw input; throws INVALID_CONFIG naming the first bad field. */
export function parseConfig(input: unknown): Config {
  const result = ConfigSchema.safeParse(input ?? {});
  if (!result.success) {
    const issue = result.error.issues[0]!;
    const path = issue.path.join('.') || '(root)';
    throw errors.badConfig(path, issue.message, {
      path,
      issues: result.error.issues.map((i) => ({ path: i.path.join('.'), message: i.message })),
    });
  }
  return result.data;
}

/** The project root, where relative data paths of the embedded default resolve. */
export const projectRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

/** Sets a dotted path ("tiers.disk.bytes") in a nested object. */
function setPath(target: Record<string, unknown>, path: string, value: unknown): void {
  const keys = path.split('.');
  let node = target;
  for (const key of keys.slice(0, -1)) {
    if (typeof node[key] !== 'object' || node[key] === null) node[key] = {};
    node = node[key] as Record<string, unknown>;
  }
  node[keys[keys.length - 1]!] = value;
}

/** CLI values arrive as strings; numbers and booleans are recognised, the schema checks the rest. */
function coerce(value: string): unknown {
  if (value === 'true' || value === 'false') return value === 'true';
  if (/^-?\d+(\.\d+)?$/.test(value)) return Number(value);
  return value;
}

/** Where a configuration comes from on the command line: `--config FILE`, `--set path=value ...`. */
export interface ConfigSources {
  file?: string;
  sets?: readonly string[];
}

/**
 * Builds the effective configuration: the config file (JSON), then the `path=value`
 * settings in order, then HOST/PORT/SPILLWAY_TOKEN from the environment. The disk tier's
 * relative path resolves against the config file's folder, or the project root.
 */
export function loadConfig(sources: ConfigSources, env: NodeJS.ProcessEnv = process.env): Config {
  let raw: Record<string, unknown> = {};
  let base = projectRoot;
  if (sources.file !== undefined) {
    const file = resolve(sources.file);
    try {
      raw = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
    } catch (err) {
      throw new SpillwayError('INVALID_CONFIG', `cannot read config file ${file}: ${(err as Error).message}`);
    }
    base = dirname(file);
  }
  for (const pair of sources.sets ?? []) {
    const eq = pair.indexOf('=');
    if (eq <= 0) throw new SpillwayError('INVALID_CONFIG', `--set wants path=value, got "${pair}"`);
    setPath(raw, pair.slice(0, eq), coerce(pair.slice(eq + 1)));
  }
  if (env.HOST) setPath(raw, 'server.host', env.HOST);
  if (env.PORT) setPath(raw, 'server.port', coerce(env.PORT));
  if (env.SPILLWAY_TOKEN) setPath(raw, 'server.token', env.SPILLWAY_TOKEN);
  const config = parseConfig(raw);
  config.tiers.disk.path = resolve(base, config.tiers.disk.path);
  if (config.tiers.shared.path !== undefined) config.tiers.shared.path = resolve(base, config.tiers.shared.path);
  const weights = config.weights;
  if (weights.source !== undefined) {
    weights.source = typeof weights.source === 'string' ? resolve(base, weights.source) : weights.source.map((p) => resolve(base, p));
  }
  if (weights.rules !== undefined) weights.rules = resolve(base, weights.rules);
  return config;
}
