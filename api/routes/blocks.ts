/**
 * One block's bytes: PUT writes application/octet-stream (optionally committing it to the
 * prefix cache with its token ids), GET reads them, pin/unpin keep it in place.
 */
import type { FastifyPluginAsync } from 'fastify';
import { z } from 'zod';
import type { BlockStore } from '../../runtime/store.js';
import { SpillwayError } from '../../runtime/errors.js';
import { parse } from '../errors.js';

const BlockParams = z.object({ id: z.string(), index: z.coerce.number().int().min(0) });
const Bool = z.enum(['true', 'false']).transform((v) => v === 'true');
const ReadQuery = z.object({ promote: Bool.optional(), format: z.enum(['raw', 'stored']).optional() }).strict();
const WriteQuery = z.object({ tokens: z.string().regex(/^\d+(,\d+)*$/, 'tokens is a comma-separated list of token ids').optional() }).strict();

export const blockRoutes: FastifyPluginAsync<{ store: BlockStore }> = async (app, { store }) => {
  app.put('/v1/sequences/:id/blocks/:index', async (request) => {
    const { id, index } = parse(BlockParams, request.params, 'params');
    const query = parse(WriteQuery, request.query, 'query');
    if (!Buffer.isBuffer(request.body)) {
      throw new SpillwayError('INVALID_ARGUMENT', 'a block is sent as application/octet-stream', { field: 'body' });
    }
    const tokens = query.tokens?.split(',').map(Number);
    return store.write(id, index, request.body, tokens);
  });

  app.get('/v1/sequences/:id/blocks/:index', async (request, reply) => {
    const { id, index } = parse(BlockParams, request.params, 'params');
    const query = parse(ReadQuery, request.query, 'query');
    const result = await store.read(id, index, query);
    reply.header('content-type', 'application/octet-stream');
    reply.header('spillway-tier', result.tier);
    reply.header('spillway-format', result.format);
    reply.header('spillway-lossy', String(result.lossy));
    return result.data;
  });

  app.post('/v1/sequences/:id/blocks/:index/pin', async (request) => {
    const { id, index } = parse(BlockParams, request.params, 'params');
    return store.pin(id, index);
  });

  app.post('/v1/sequences/:id/blocks/:index/unpin', async (request) => {
    const { id, index } = parse(BlockParams, request.params, 'params');
    return store.unpin(id, index);
  });
};
