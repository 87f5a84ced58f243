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

/** Wraps an error from the addon (an Error with a string `code`) as a SpillwayError. */
export function fromNative(err: unknown, context: string, details: Record<string, unknown> = {}): SpillwayError {
  if (err instanceof SpillwayError) return err;
  const e = err as { code?: unknown; message?: unknown };
  const code = typeof e?.code === 'string' && e.code in ErrorCodes ? (e.code as ErrorCode) : 'INTERNAL';
  const message = typeof e?.message === 'string' ? e.message : String(err);
  return new SpillwayError(code, `${context}: ${message}`, details);
}

/** Awaits an addon call, turning its error into a SpillwayError with `context`. */
export async function nativeCall<T>(context: string, call: () => Promise<T>, details: Record<string, unknown> = {}): Promise<T> {
  try {
    return await call();
  } catch (err) {
    throw fromNative(err, context, details);
  }
}
