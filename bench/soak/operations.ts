/** The soak's operations on the server: their kinds, and how a failed one is named. */
import { SpillwayError } from '../../runtime/errors.js';

export const OPS = ['create', 'allocate', 'write', 'writeBatch', 'read', 'readBatch', 'free'] as const;
export type OpKind = (typeof OPS)[number];

/** An operation cut short by a restart: the worker drops its sequence and starts anew. */
export const ABANDON = new Error('abandoned by a restart');

/** The server's error code of a failed operation; NETWORK when no answer came. */
export function codeOf(err: unknown): string {
  return err instanceof SpillwayError ? ((err.details.serverCode as string | undefined) ?? err.code) : 'NETWORK';
}

/** How many entries of a batch write refused part way were written before the failing one. */
export function writtenBefore(err: unknown): number {
  return err instanceof SpillwayError ? Number(err.details.written ?? 0) : 0;
}
