/**
 * Fault injection through a running server, for soak tests and drills: the next disk reads
 * or writes fail as a failing or full disk would. Registered only when `server.faults` is
 * true (off by default), in the guarded scope (behind the token); never in production.
 */
import { constants } from 'node:os';
import { z } from 'zod';
import type { RoutePlugin } from '../context.js';
import { ErrorResponse } from '../schemas.js';

/** The errors a disk gives that spillway answers differently: DISK_FULL or IO_ERROR. */
const ERRNO = { ENOSPC: constants.errno.ENOSPC, EIO: constants.errno.EIO } as const;

export const DiskFaultBody = z.object({
  op: z.enum(['read', 'write']).describe('which disk operations fail'),
  error: z.enum(['ENOSPC', 'EIO']).describe('ENOSPC answers DISK_FULL, EIO answers IO_ERROR'),
  count: z.number().int().min(0).max(1 << 20).describe('how many of the next operations fail; 0 disarms'),
}).strict();
export const DiskFaultResponse = DiskFaultBody;

export const faultRoutes: RoutePlugin = async (app, { ctx }) => {
  app.post('/v1/faults/disk', {
    schema: {
      tags: ['faults'], summary: 'Arm a disk fault: the next `count` disk reads or writes fail with `error` (server.faults only)',
      body: DiskFaultBody, response: { 200: DiskFaultResponse, default: ErrorResponse },
    },
  }, async (request) => {
    const { op, error, count } = request.body;
    ctx.store.injectDiskFault(op, ERRNO[error], count);
    return request.body;
  });
};
