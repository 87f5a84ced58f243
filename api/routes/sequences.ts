/** Sequences: create (optionally attaching a cached prefix), allocate blocks, free. */
import type { RoutePlugin } from '../context.js';
import { AllocateBody, AllocateResponse, CreateSequenceBody, CreateSequenceResponse, ErrorResponse, FreeResponse, SequenceParams } from '../schemas.js';

export const sequenceRoutes: RoutePlugin = async (app, { ctx }) => {
  const { store } = ctx;
  app.post('/v1/sequences', {
    schema: {
      tags: ['sequences'], summary: 'Create a sequence, attaching the cached leading blocks of a prefix',
      body: CreateSequenceBody.optional(), response: { 201: CreateSequenceResponse, default: ErrorResponse },
    },
  }, async (request, reply) => {
    reply.status(201);
    if (request.body?.prefix) await store.pullShared(request.body.prefix);
    return store.createSequence(request.body?.id, request.body?.prefix);
  });

  app.post('/v1/sequences/:id/blocks', {
    schema: {
      tags: ['sequences'], summary: 'Allocate blocks at the end of a sequence (they take no slot until written)',
      params: SequenceParams, body: AllocateBody, response: { 201: AllocateResponse, default: ErrorResponse },
    },
  }, async (request, reply) => {
    reply.status(201);
    return { blocks: store.allocate(request.params.id, request.body.count) };
  });

  app.delete('/v1/sequences/:id', {
    schema: {
      tags: ['sequences'], summary: 'Free a sequence; its committed blocks stay cached for reuse',
      params: SequenceParams, response: { 200: FreeResponse, default: ErrorResponse },
    },
  }, async (request) => store.freeSequence(request.params.id));
};
