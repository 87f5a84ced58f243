/**
 * Every error spillway raises, defined once: a stable code, the HTTP status the API
 * answers with, and the message. Runtime and API throw these by name.
 */
export const ErrorCodes = {
  INVALID_ARGUMENT: 400,
  INVALID_CONFIG: 400,
  WRONG_SIZE: 400,
  UNAUTHORIZED: 401,
  NOT_FOUND: 404,
  SEQUENCE_NOT_FOUND: 404,
  BLOCK_NOT_FOUND: 404,
  /** A zero-copy lease that expired, was ended, or never existed. */
  LEASE_NOT_FOUND: 404,
  BLOCK_NOT_WRITTEN: 409,
  BLOCK_IMMUTABLE: 409,
  SEQUENCE_EXISTS: 409,
  /** Zero-copy export asked of a backend whose tier 0 is not device memory (the host backend). */
  NO_DEVICE_MEMORY: 409,
  /** A request that did not arrive whole within server.requestTimeoutMs. */
  REQUEST_TIMEOUT: 408,
  PAYLOAD_TOO_LARGE: 413,
  /** A request body of a media type its route does not take. */
  UNSUPPORTED_MEDIA_TYPE: 415,
  LIMIT_EXCEEDED: 429,
  TIER_BUSY: 503,
  CAPACITY_EXCEEDED: 507,
  DISK_FULL: 507,
  IO_ERROR: 500,
  CHECKSUM_MISMATCH: 500,
  SLOT_MISMATCH: 500,
  BLOCK_LOST: 500,
  QUANT_PARAMS: 400,
  QUANT_FORMAT: 500,
  QUANT_MISMATCH: 500,
  OUT_OF_MEMORY: 507,
  CLOSED: 503,
  /** Asked of something still being prepared (weights loading). */
  NOT_READY: 503,
  BUSY: 503,
  /** A safetensors file, index or split manifest is malformed or inconsistent. */
  WEIGHTS_FORMAT: 500,
  /** A tensor cannot be sharded as asked (size not divisible, slice not contiguous, wrong world). */
  WEIGHTS_SHARDING: 400,
  INTERNAL: 500,
} as const;

export type ErrorCode = keyof typeof ErrorCodes;

export class SpillwayError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  /** Structured context for clients: the offending field, what is left, and so on. */
  readonly details: Record<string, unknown>;

  constructor(code: ErrorCode, message: string, details: Record<string, unknown> = {}) {
    super(message);
    this.name = 'SpillwayError';
    this.code = code;
    this.status = ErrorCodes[code];
    this.details = details;
  }
}

export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === 'string' && Object.hasOwn(ErrorCodes, value);
}

/**
 * An error the addon raised: the addon constructs this class itself (runtime/native.ts
 * hands it over at load) with one of the table's codes, so its errors arrive with their
 * code and status. `fromNative` gives one the context of the call that failed.
 */
export class NativeError extends SpillwayError {}

/**
 * Gives an error from an addon call the context of that call. A NativeError keeps its
 * code; a SpillwayError thrown on the JS side passes unchanged; anything else is a caller
 * bug the addon's argument checks caught (a TypeError or RangeError), answered as INTERNAL
 * with its name in `details.nativeCode`.
 */
export function fromNative(err: unknown, context: string, details: Record<string, unknown> = {}): SpillwayError {
  if (err instanceof NativeError) return new SpillwayError(err.code, `${context}: ${err.message}`, details);
  if (err instanceof SpillwayError) return err;
  const message = err instanceof Error ? err.message : String(err);
  const nativeCode = err instanceof Error ? err.name : typeof err;
  return new SpillwayError('INTERNAL', `${context}: ${message}`, { ...details, nativeCode });
}

/** Runs a synchronous addon call (a constructor, a size query), turning its error into a SpillwayError with `context`. */
export function nativeSync<T>(context: string, call: () => T): T {
  try {
    return call();
  } catch (err) {
    throw fromNative(err, context);
  }
}

/** Awaits an addon call, turning its error into a SpillwayError with `context`. */
export async function nativeCall<T>(context: string, call: () => Promise<T>, details: Record<string, unknown> = {}): Promise<T> {
  try {
    return await call();
  } catch (err) {
    throw fromNative(err, context, details);
  }
}

/** The prefix-cache state that makes a block read-only, for messages. */
const immutableBecause = (committed: boolean) => (committed ? 'committed to the prefix cache' : 'shared');

/** The characters and length an identifier (a sequence id, a lease's client) may have, as said to a caller. */
const IDENTIFIER_RULE = '1-128 characters of A-Z a-z 0-9 . _ : -';

/**
 * Every error message the block store and its ladder raise, and those raised in more than
 * one place elsewhere, built here once; callers `throw errors.sequenceNotFound(id)` and never
 * build messages of their own.
 */
export const errors = {
  /** A configuration value that cannot be used; the details name its field unless given. */
  badConfig: (field: string, problem: string, details: Record<string, unknown> = { field }) =>
    new SpillwayError('INVALID_CONFIG', `config ${field}: ${problem}`, details),
  badRulesFile: (file: string, problem: string) => new SpillwayError('INVALID_CONFIG', `split rules ${file}: ${problem}`, { file }),
  badBody: (problem: string) => new SpillwayError('INVALID_ARGUMENT', `body: ${problem}`, { field: 'body' }),
  badIdentifier: (name: string, field: string) => new SpillwayError('INVALID_ARGUMENT', `${name} must be ${IDENTIFIER_RULE}`, { field }),
  tiersTooSmall: (rawBlockBytes: number, quantizedBlockBytes: number) =>
    new SpillwayError('INVALID_CONFIG', 'tiers.raw and tiers.quantized must each hold at least one block', { rawBlockBytes, quantizedBlockBytes }),
  badLimit: (field: string) => new SpillwayError('INVALID_ARGUMENT', `limits.${field} must be a positive integer`, { field: `limits.${field}` }),
  storeClosed: () => new SpillwayError('CLOSED', 'the store is closed'),
  recoveryIntoNonEmptyStore: () => new SpillwayError('INTERNAL', 'recovered blocks are adopted only into an empty store'),

  liveSequenceLimit: (limit: number) =>
    new SpillwayError('LIMIT_EXCEEDED', `live sequence limit of ${limit} reached`, { limit: 'maxLiveSequences', value: limit, remaining: 0 }),
  sequenceTokenLimit: (tokens: number, limit: number, remainingBlocks: number) =>
    new SpillwayError('LIMIT_EXCEEDED', `sequence would hold ${tokens} tokens, over the limit of ${limit}`, { limit: 'maxTokensPerSequence', value: limit, remainingBlocks }),
  totalTokenLimit: (tokens: number, limit: number, remainingBlocks: number) =>
    new SpillwayError('LIMIT_EXCEEDED', `live sequences would hold ${tokens} tokens, over the limit of ${limit}`, { limit: 'maxTotalTokens', value: limit, remainingBlocks }),
  ladderFull: (capacityBlocks: number, inUse: number) =>
    new SpillwayError('CAPACITY_EXCEEDED', `the ladder holds ${capacityBlocks} blocks and ${inUse} are in use`, { capacityBlocks, remainingBlocks: Math.max(0, capacityBlocks - inUse) }),
  tierFull: (tier: string, slots: number) =>
    new SpillwayError('CAPACITY_EXCEEDED', `tier ${tier} is full: all ${slots} slots hold pinned or referenced blocks that cannot move down`, { tier, slots, remaining: 0 }),
  tierBusy: (tier: string) => new SpillwayError('TIER_BUSY', `tier ${tier} has no free slot and every candidate is busy; try again`, { tier }),

  badSequenceId: () => errors.badIdentifier('sequence id', 'id'),
  sequenceExists: (id: string) => new SpillwayError('SEQUENCE_EXISTS', `sequence ${id} already exists`, { id }),
  sequenceNotFound: (id: string) => new SpillwayError('SEQUENCE_NOT_FOUND', `sequence ${id} does not exist`, { id }),
  badCount: () => new SpillwayError('INVALID_ARGUMENT', 'count must be a positive integer', { field: 'count' }),
  noBlockAt: (sequenceId: string, blocks: number, index: number, field: string) =>
    new SpillwayError('BLOCK_NOT_FOUND', `sequence ${sequenceId} has ${blocks} blocks; there is no block ${index}`, { field, blocks }),
  wrongBlockSize: (expected: number, got: number) =>
    new SpillwayError('WRONG_SIZE', `a block is ${expected} bytes for this geometry, got ${got}`, { field: 'data', expected, got }),
  badTokens: (expected: number) =>
    new SpillwayError('INVALID_ARGUMENT', `tokens must be ${expected} integer token ids from 0 to 2^32-1`, { field: 'tokens', expected }),
  parentNotCommitted: (sequenceId: string, index: number) =>
    new SpillwayError('INVALID_ARGUMENT', `block ${index - 1} of ${sequenceId} is not committed with tokens, so block ${index} cannot be`, { field: 'tokens' }),
  notPinned: (sequenceId: string, index: number, heldByLeases: boolean) =>
    new SpillwayError('INVALID_ARGUMENT', `block ${index} of ${sequenceId} is not pinned${heldByLeases ? ' (zero-copy leases hold it: release it under them)' : ''}`, { field: 'index', index }),

  blockNotFound: (blockId: number) => new SpillwayError('BLOCK_NOT_FOUND', `block ${blockId} does not exist`, { blockId }),
  blockReleased: (blockId: number) => new SpillwayError('BLOCK_NOT_FOUND', `block ${blockId} was released`, { blockId }),
  blockNotWritten: (blockId: number) => new SpillwayError('BLOCK_NOT_WRITTEN', `block ${blockId} has not been written`, { blockId }),
  blockLost: (blockId: number) => new SpillwayError('BLOCK_LOST', `block ${blockId} failed verification on disk and must be written again`, { blockId }),
  immutableInSequence: (sequenceId: string, index: number, committed: boolean) =>
    new SpillwayError('BLOCK_IMMUTABLE', `block ${index} of ${sequenceId} is ${immutableBecause(committed)} and cannot be rewritten`, { index }),
  immutableUnderLease: (blockId: number, committed: boolean) =>
    new SpillwayError('BLOCK_IMMUTABLE', `block ${blockId} is ${immutableBecause(committed)} and cannot be rewritten; release it without written`, { field: 'written', blockId }),

  noDeviceMemory: (backend: string) =>
    new SpillwayError('NO_DEVICE_MEMORY', `the ${backend} backend keeps tier 0 in host memory: there is no device memory to share; zero-copy access needs the GPU backend`, { backend }),
  leaseDoesNotFit: (requested: number, max: number, tier0Slots: number) =>
    new SpillwayError('INVALID_ARGUMENT', `${requested} blocks do not fit tier 0 for this lease: at most ${max} can be held now (${tier0Slots} slots, the rest pinned by others)`, { field: 'indices', max, requested }),
  leaseAllocationDoesNotFit: (cached: number, allocate: number, max: number) =>
    new SpillwayError('INVALID_ARGUMENT', `${cached} cached and ${allocate} new blocks do not fit tier 0 for this lease: at most ${max} can be held now`, { field: 'allocate', max, requested: cached + allocate }),
  notHeldByLease: (blockId: number, lease: string) =>
    new SpillwayError('INVALID_ARGUMENT', `block ${blockId} is not held by lease ${lease}: it was released already, or acquired under another lease, or never`, { field: 'blockId', blockId }),

};

/** The one way a weights problem is reported: the file, the tensor when there is one, the problem. */
export function weightsError(file: string, tensor: string | undefined, problem: string, code: ErrorCode = 'WEIGHTS_FORMAT'): SpillwayError {
  const where = tensor === undefined ? file : `${file}: tensor "${tensor}"`;
  return new SpillwayError(code, `${where}: ${problem}`, { file, ...(tensor === undefined ? {} : { tensor }), problem });
}
