/**
 * Every request and response shape of the HTTP API, as zod schemas. They are the single
 * source of validation (api/validation.ts compiles them for fastify), of the OpenAPI
 * document served at /docs, and of the types of the TypeScript client (api/client.ts).
 */
import { z } from 'zod';
import { DTYPES } from '../runtime/dtype.js';
import { TIER_NAMES } from '../runtime/layout.js';
import { LEASE_CLIENT_ID, LEASE_TTL_DEFAULT_MS, LEASE_TTL_MAX_MS, LEASE_TTL_MIN_MS } from '../runtime/leases.js';
import { DROP_REASONS, REFUSE_REASONS } from '../runtime/recovery-report.js';

const MAX_INDEX = 2 ** 31 - 1;

export const TierName = z.enum(TIER_NAMES);
export const Hash = z.string().regex(/^[0-9a-f]{32}$/, 'a block hash is 32 lowercase hex digits');
const TokenId = z.number().int().min(0).max(0xffffffff);
const Count = z.number().int().nonnegative();
/** Path segments arrive as strings; only plain decimal digits are an index. */
const IndexParam = z.string().regex(/^(0|[1-9]\d{0,9})$/, 'a block index is a non-negative integer').transform(Number)
  .pipe(z.number().max(MAX_INDEX));
const Index = z.number().int().min(0).max(MAX_INDEX);
const BoolParam = z.enum(['true', 'false']).transform((v) => v === 'true');
const ReadFormat = z.enum(['raw', 'stored']).describe("'raw' (default): the raw block layout; 'stored': the bytes as held (quantized below tier 0)");
/** Bytes inside a msgpack body (msgpack bin); documented as binary. */
const Bytes = z.custom<Uint8Array>((v) => v instanceof Uint8Array, 'expected bytes (msgpack bin)').meta({ type: 'string', format: 'binary' });
/** A whole request or response body of bytes (application/octet-stream). */
export const BlockBytes = z.custom<Buffer>((v) => Buffer.isBuffer(v), 'a block is sent as application/octet-stream')
  .meta({ type: 'string', format: 'binary', description: 'one block in the raw layout [layer][K,V][kv_head][token][head_dim], little-endian' });

// ---- errors -------------------------------------------------------------------------

export const ErrorResponse = z.object({
  error: z.looseObject({
    code: z.string().describe('stable code (runtime/errors.ts)'),
    message: z.string(),
    field: z.string().optional().describe('the offending field, where one is to blame'),
  }),
}).describe('An error; further fields say what is left or what was expected');

// ---- status, limits -----------------------------------------------------------------

export const HealthResponse = z.object({ ok: z.literal(true) });
export const ReadyResponse = z.object({
  ready: z.boolean(),
  reason: z.string().optional().describe('why not ready: weights loading (or failed), closing, or the load that sheds requests'),
});

const TierCapacity = z.object({ name: TierName, slots: Count, slotBytes: Count, bytes: Count, tokens: Count });
const MemoryBudget = z.object({
  memory: z.enum(['host', 'gpu']).describe('where the upper tiers and the weights live'),
  tierBytes: Count.describe('tiers 0 and 1'),
  weightsBytes: Count.describe('the weights arena, alignment padding included; 0 without weights'),
  totalBytes: Count,
  deviceFreeBytes: Count.nullable().describe('device memory free before any of it was allocated; null on the host backend'),
  fits: z.boolean().nullable().describe('whether the total fits the free device memory; null where that is not known'),
}).describe('the memory the KV tiers and the weights share');
export const Capacity = z.object({
  tokensPerBlock: Count, rawBlockBytes: Count, quantizedBlockBytes: Count, compressionRatio: z.number(),
  totalBlocks: Count, totalTokens: Count, tiers: z.array(TierCapacity), memory: MemoryBudget,
});
export const Quantization = z.object({
  bitsPerValue: z.number().describe('bits a quantized block stores per value: codes, norms, masks, padding and header'),
  classes: z.array(z.object({
    layers: z.string().describe('a layer range, "0-1"'),
    keyBits: z.number(), valueBits: z.number(),
    keyBitsStored: z.number().describe('bits per key value stored, norms and masks included'),
    valueBitsStored: z.number(),
  })).describe('the bit widths per range of layers, in layer order'),
}).describe('the quantized tiers\' bit widths per layer and per K/V');
export const Limits = z.object({
  maxTokensPerSequence: z.number().int().positive().max(Number.MAX_SAFE_INTEGER),
  maxLiveSequences: z.number().int().positive().max(Number.MAX_SAFE_INTEGER),
  maxTotalTokens: z.number().int().positive().max(Number.MAX_SAFE_INTEGER),
});
export const DeviceIndex = Count.describe('the GPU\'s index among the devices the server sees (CUDA_VISIBLE_DEVICES)');
export const PciBusId = z.string().describe('the GPU\'s PCI bus id: names the same GPU in every process, whatever its CUDA_VISIBLE_DEVICES');
export const Backend = z.object({
  name: z.enum(['host', 'gpu']),
  reason: z.string(),
  device: z.object({ index: DeviceIndex, name: z.string(), pciBusId: PciBusId }).optional().describe('the GPU holding tiers 0 and 1 (GPU backend)'),
  paths: z.object({ raw: z.string(), quantized: z.string(), host: z.string().optional(), disk: z.string() }).describe('how each tier holds and moves bytes (host: only where the ladder has a host tier)'),
  disk: z.object({ path: z.string(), direct: z.boolean(), directReason: z.string(), preallocated: z.boolean() }),
});
export const Stats = z.object({
  sequences: Count, blocks: Count, liveBlocks: Count, cachedBlocks: Count, pinnedBlocks: Count, lostBlocks: Count,
  leases: Count.describe('zero-copy leases open'), leasedBlocks: Count.describe('blocks held in tier 0 by at least one lease'),
  liveTokens: Count, diskInFlight: Count,
  tiers: z.array(z.object({ name: TierName, slots: Count, used: Count, free: Count, reserve: Count.describe('free slots kept ahead of demand (eviction.reserve)') })),
});
export const Load = z.object({
  diskQueue: Count, maxDiskQueue: Count, eventLoopDelayMs: z.number(), maxEventLoopDelayMs: z.number(),
  shedding: z.string().nullable().describe('why data-plane requests are answered 503 now, or null'),
});
const ReasonCounts = (reasons: readonly string[]) => z.object(Object.fromEntries(reasons.map((r) => [r, Count])));
export const Recovery = z.object({
  enabled: z.boolean().describe('tiers.disk.recover'),
  path: z.string(),
  slots: Count,
  bytesScanned: Count.describe('the heads of the slots, not their payloads'),
  recovered: Count.describe('committed blocks adopted as cached, disk-only blocks'),
  empty: Count,
  uncommitted: Count.describe('valid slots of blocks never committed: not recovered, by design'),
  dropped: ReasonCounts(DROP_REASONS).describe('torn (a write in flight at the end), corrupt header, stale generation, duplicate'),
  refused: ReasonCounts(REFUSE_REASONS).describe('written in another slot or block format, geometry, dtype, quantization, or a checksum this backend cannot verify'),
  examples: z.array(z.object({ slot: Count, reason: z.string(), detail: z.string() })).describe('the first slots dropped or refused'),
  scanMs: z.number(),
  totalMs: z.number().describe('the whole recovery; the server listened only after it'),
}).describe('what the start recovered from the disk tier (docs/ARCHITECTURE.md, "Warm restart")');

const Counts = z.record(z.string(), Count);
export const SharedTierStatus = z.object({
  path: z.string(),
  budgetBytes: Count.describe('tiers.shared.bytes: the directory\'s budget, all servers together'),
  usedBytes: Count.describe('bytes in the directory as of the last scan plus what this server wrote since'),
  files: Count.nullable().describe('block files at the last scan'),
  io: z.string().describe('how the tier reads and writes'),
  publish: z.string().describe('which blocks are published, and when'),
  hits: Count.describe('blocks prefix pulls found there'),
  misses: Counts.describe('reads that found no usable file: missing, torn, foreign, checksum'),
  published: Counts.describe('committed blocks offered: written, exists (another server had), skipped (too many waiting), failed'),
  bytesRead: Count,
  bytesWritten: Count,
  evicted: Count.describe('files this server removed for space'),
  lastError: z.string().nullable(),
}).describe('the prefix tier shared with other servers (tiers.shared); null when not configured');

export const StatusResponse = z.object({
  backend: Backend,
  recovery: Recovery.nullable(),
  shared: SharedTierStatus.nullable(),
  capacity: Capacity,
  quantization: Quantization,
  limits: Limits,
  stats: Stats,
  load: Load,
  config: z.record(z.string(), z.unknown()).describe('the effective configuration; server.auth says whether a token is set, never the token'),
});

export const LimitsResponse = z.object({
  limits: Limits,
  capacityTokens: Count.describe('token limits above this are held at it: the ladder holds no more'),
  live: z.object({ sequences: Count, tokens: Count }),
  remaining: z.object({ sequences: Count, tokens: Count }),
});
export const LimitsReplace = Limits.strict();
export const LimitsPatch = Limits.partial().strict()
  .refine((v) => Object.keys(v).length > 0, 'name at least one of maxTokensPerSequence, maxLiveSequences, maxTotalTokens');

// ---- sequences and blocks -----------------------------------------------------------

export const SequenceParams = z.object({ id: z.string() });
export const BlockParams = z.object({ id: z.string(), index: IndexParam });
const BlockRef = z.object({ index: Index, blockId: Count });

export const CreateSequenceBody = z.object({
  id: z.string().optional().describe('1-128 characters of A-Z a-z 0-9 . _ : -; generated when left out'),
  prefix: z.array(Hash).max(1 << 20).optional().describe('block hashes of a prefix: the leading ones cached are attached'),
}).strict();
export const CreateSequenceResponse = z.object({ id: z.string(), attached: z.array(BlockRef) });

export const AllocateBody = z.object({ count: z.number().int().min(1).max(1 << 20) }).strict();
export const AllocateResponse = z.object({ blocks: z.array(BlockRef) });

export const FreeResponse = z.object({
  released: Count.describe('blocks whose slots were released'),
  cached: Count.describe('committed blocks kept in the prefix cache'),
});
export const PinResponse = z.object({ pins: Count });

export const WriteQuery = z.object({
  tokens: z.string().regex(/^\d{1,10}(,\d{1,10})*$/, 'tokens is a comma-separated list of token ids')
    .transform((s) => s.split(',').map(Number))
    .optional()
    .describe('the block\'s token ids: commits it to the prefix cache under its chained hash'),
}).strict();
export const WriteResponse = z.object({
  blockId: Count,
  hash: Hash.nullable(),
  deduplicated: z.boolean().describe('the prefix was cached already: the sequence now shares that block'),
});

export const ReadQuery = z.object({
  promote: BoolParam.optional().describe('move the block up to tier 0 (default true)'),
  format: ReadFormat.optional(),
}).strict();

export const BatchReadBody = z.object({
  indices: z.array(Index).min(1).max(1 << 16),
  promote: z.boolean().optional(),
  format: ReadFormat.optional(),
}).strict();
export const BatchReadResponse = z.object({
  blocks: z.array(z.object({
    index: Index, tier: TierName, format: z.enum(['raw', 'quantized']), lossy: z.boolean(), promoted: z.boolean(), data: Bytes,
  })),
}).describe('msgpack map; data is msgpack bin');

export const BatchWriteBody = z.object({
  blocks: z.array(z.object({ index: Index, data: Bytes, tokens: z.array(TokenId).optional() }).strict()).min(1).max(1 << 16),
}).strict().describe('msgpack map; data is msgpack bin; written in order');
export const BatchWriteResponse = z.object({ blocks: z.array(WriteResponse.extend({ index: Index })) });

// ---- prefix cache -------------------------------------------------------------------

export const LookupBody = z.union([
  z.object({ hashes: z.array(Hash).max(1 << 20) }).strict(),
  z.object({ tokens: z.array(TokenId).max(1 << 24) }).strict(),
]);
export const LookupResponse = z.object({
  requested: Count,
  cached: z.array(z.object({ hash: Hash, blockId: Count, tier: TierName })),
  hashes: z.array(Hash),
});

// ---- telemetry ----------------------------------------------------------------------

const PerTier = z.object({ raw: Count, quantized: Count, host: Count.optional().describe('only where the ladder has a host tier'), disk: Count });
export const TelemetrySample = z.object({
  at: z.number().describe('ms since the epoch'),
  blocks: PerTier.describe('slots in use per tier'),
  movesPerSecond: z.object({ demote: z.number(), promote: z.number(), drop: z.number() }),
  readsPerSecond: z.number(),
  hitRate: z.number().nullable().describe('share of reads served from tier 0 over the interval; null without reads'),
  prefixHitRate: z.number().nullable().describe('share of looked-up prefix blocks found cached; null without lookups'),
  diskBytesPerSecond: z.object({ read: z.number(), write: z.number() }),
  diskQueue: Count,
  eventLoopDelayMs: z.number(),
});
export const TelemetryQuery = z.object({
  since: z.string().regex(/^\d{1,16}$/, 'since is ms since the epoch').transform(Number).optional()
    .describe('also return the samples taken after this time (ms since the epoch)'),
}).strict();
export const TelemetryResponse = TelemetrySample.extend({
  intervalMs: Count,
  slots: PerTier,
  totals: z.object({
    demotions: Count, promotions: Count, drops: Count, reads: Count, hits: Count,
    diskBytes: z.object({ read: Count, write: Count }), eventsDropped: Count,
  }),
  path: z.object({ backend: z.string(), raw: z.string(), quantized: z.string(), host: z.string().optional(), disk: z.string(), direct: z.boolean() }),
  shared: z.object({
    path: z.string(), io: z.string(), hits: Count, misses: Count, published: Count.describe('blocks this server wrote there'),
    bytesRead: Count, bytesWritten: Count, usedBytes: Count, budgetBytes: Count,
  }).nullable().describe('the shared tier, totals since start; null when not configured'),
  history: z.array(TelemetrySample).optional(),
});

const MoveKind = z.enum(['demote', 'promote', 'drop']);
export const EventsQuery = z.object({
  kinds: z.string().regex(/^(demote|promote|drop)(,(demote|promote|drop))*$/, 'kinds is a comma-separated list of demote, promote, drop')
    .transform((s) => new Set(s.split(',') as Array<z.infer<typeof MoveKind>>))
    .optional()
    .describe('only these kinds of move (default all)'),
}).strict();

// ---- zero-copy ----------------------------------------------------------------------

const Dtype = z.enum(DTYPES);
export const PoolResponse = z.object({
  handle: z.string().describe('cudaIpcMemHandle_t of the tier-0 arena, base64; map it once with cudaIpcOpenMemHandle'),
  handleBytes: Count,
  device: z.string().describe('the GPU the arena lives on: map it from a process on the same GPU'),
  deviceIndex: DeviceIndex,
  pciBusId: PciBusId,
  slotBytes: Count.describe('bytes of one slot (one raw block): slot i starts at byte i * slotBytes of the mapping'),
  slots: Count,
  dtype: Dtype,
  elementBytes: Count,
  layout: z.literal('[layer][kv][kv_head][token][head_dim]').describe('row-major; kv 0 = K, 1 = V; little-endian'),
  shape: z.array(Count).length(5).describe('[layers, 2, kvHeads, tokensPerBlock, headDim]'),
  layers: Count, kvHeads: Count, tokensPerBlock: Count, headDim: Count,
});

const LeaseId = z.string().regex(/^lease-[0-9a-f]{24}$/, 'a lease id is lease- and 24 hex digits');
export const LeaseParams = z.object({ id: LeaseId });
export const CreateLeaseBody = z.object({
  client: z.string().regex(LEASE_CLIENT_ID, 'client is 1-128 characters of A-Z a-z 0-9 . _ : -').describe('who holds the lease, for logs'),
  ttlMs: z.number().int().min(LEASE_TTL_MIN_MS).max(LEASE_TTL_MAX_MS).optional()
    .describe(`how long the lease lives without a heartbeat or a call naming it (default ${LEASE_TTL_DEFAULT_MS} ms)`),
}).strict();
export const LeaseResponse = z.object({
  id: z.string(), client: z.string(), ttlMs: Count,
  expiresAt: z.number().describe('ms since the epoch, unless renewed'),
  blocks: Count.describe('blocks held under the lease'),
});
export const EndLeaseResponse = z.object({ released: Count.describe('blocks the lease held, now released') });

export const AcquireBody = z.object({ sequence: z.string(), index: Index }).strict();
export const AcquireResponse = z.object({
  slot: Count.describe('the block\'s tier-0 slot, pinned until released; its data is there when this answer comes'),
  blockId: Count.describe('names the block in release'),
  written: z.boolean().describe('false: a new block; write it in place and release it with written: true'),
  lossy: z.boolean().describe('the bytes went through quantization (within the quantizer\'s error bound)'),
  tier: TierName.nullable().describe('where the block was found; null for a block not yet written'),
  promoted: z.boolean().describe('brought up into tier 0 by this call'),
  pins: Count,
});
export const ReleaseBody = z.object({
  blockId: Count,
  written: z.boolean().optional().describe('the engine wrote the slot and synchronized: its contents become the block, exact, as a PUT would'),
}).strict();
export const ReleaseResponse = z.object({
  blockId: Count, pins: Count, written: z.boolean(),
  generation: Count.describe('bumped by a release with written: true, as by a write'),
});

// ---- zero-copy batches --------------------------------------------------------------

/** One error that one entry of a batch met; the other entries stand. */
const EntryError = z.object({ code: z.string(), message: z.string() });
/** Most entries one batch may name (tier 0 bounds it further: see acquire-many). */
const MAX_BATCH_ENTRIES = 1 << 16;

export const AcquireManyBody = z.union([
  z.object({ sequence: z.string(), indices: z.array(Index).min(1).max(MAX_BATCH_ENTRIES) }).strict(),
  z.object({ sequence: z.string(), start: Index, count: z.number().int().min(1).max(MAX_BATCH_ENTRIES) }).strict(),
]).describe('the blocks by index, or a range of `count` indices from `start`');
export const AcquireEntry = z.union([
  AcquireResponse.extend({ index: Index }),
  z.object({ index: Index, error: EntryError }),
]);
export const AcquireManyResponse = z.object({
  blocks: z.array(AcquireEntry).describe('in the order asked; an entry with `error` failed alone (lost, corrupt, no room)'),
});
export const ReleaseManyBody = z.object({ blocks: z.array(ReleaseBody).min(1).max(MAX_BATCH_ENTRIES) }).strict();
export const ReleaseManyResponse = z.object({
  blocks: z.array(z.union([ReleaseResponse, z.object({ blockId: Count, error: EntryError })])),
});
export const AttachBody = z.object({
  id: z.string().optional().describe('the new sequence\'s id (generated if absent)'),
  prefix: z.array(Hash).max(1 << 20).describe('block hashes of the prefix; its cached leading blocks are attached'),
  allocate: z.number().int().min(0).max(MAX_BATCH_ENTRIES).optional().describe('new blocks after the prefix, acquired unwritten'),
}).strict();
export const AttachResponse = z.object({
  id: z.string(),
  attached: Count.describe('leading blocks of the prefix found cached, now blocks 0..attached-1'),
  blocks: z.array(AcquireEntry),
});
