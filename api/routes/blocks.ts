/**
 * One block's bytes: PUT writes application/octet-stream (optionally committing it to the
 * prefix cache with its token ids), GET reads them, pin/unpin keep it in place.
 */
import type { RoutePlugin } from '../context.js';
import { BlockBytes, BlockParams, ErrorResponse, PinResponse, ReadQuery, WriteQuery, WriteResponse } from '../schemas.js';

export const blockRoutes: RoutePlugin = async (app, { ctx }) => {
  const { store, buffers } = ctx;
  app.put('/v1/sequences/:id/blocks/:index', {
    schema: {
      tags: ['blocks'], summary: 'Write one block; with tokens, commit it to the prefix cache',
      params: BlockParams, querystring: WriteQuery, body: BlockBytes, consumes: ['application/octet-stream'],
      response: { 200: WriteResponse, default: ErrorResponse },
    },
  }, async (request) => store.write(request.params.id, request.params.index, request.body, request.query.tokens));

  app.get('/v1/sequences/:id/blocks/:index', {
    schema: {
      tags: ['blocks'], summary: 'Read one block; headers say the tier it was found in, its format and whether it is lossy',
      params: BlockParams, querystring: ReadQuery,
      response: {
        200: { description: 'the block; headers spillway-tier, spillway-format, spillway-lossy', content: { 'application/octet-stream': { schema: BlockBytes } } },
        default: ErrorResponse,
      },
    },
  }, async (request, reply) => {
    const into = buffers.take(store.layout.rawBlockBytes);
    let result;
    try {
      result = await store.read(request.params.id, request.params.index, { ...request.query, into });
    } catch (err) {
      buffers.give(into);
      throw err;
    }
    if (result.data === into) buffers.giveWhenSent(reply.raw, [into]);
    else buffers.give(into);
    reply.header('content-type', 'application/octet-stream');
    reply.header('spillway-tier', result.tier);
    reply.header('spillway-format', result.format);
    reply.header('spillway-lossy', String(result.lossy));
    reply.header('spillway-promoted', String(result.promoted));
    return result.data;
  });

  const pinSchema = { tags: ['blocks'], params: BlockParams, response: { 200: PinResponse, default: ErrorResponse } };
  app.post('/v1/sequences/:id/blocks/:index/pin', { schema: { ...pinSchema, summary: 'Pin a block: it never moves until unpinned' } },
    async (request) => store.pin(request.params.id, request.params.index));
  app.post('/v1/sequences/:id/blocks/:index/unpin', { schema: { ...pinSchema, summary: 'Undo one pin' } },
    async (request) => store.unpin(request.params.id, request.params.index));
};
