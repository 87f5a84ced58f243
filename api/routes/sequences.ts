/** Sequences: create (optionally attaching a cached prefix), allocate blocks, free. */
import type { FastifyPluginAsync } from 'fastify';
import { z } from 'zod';
import type { BlockStore } from '../../runtime/store.js';
import { parse } from '../errors.js';

const Hash = z.string().regex(/^[0-9a-f]{32}$/, 'a block hash is 32 lowercase hex digits');
const CreateBody = z.object({ id: z.string().optional(), prefix: z.array(Hash).max(1 << 20).optional() }).strict();
const AllocateBody = z.object({ count: z.number().int().min(1).max(1 << 20) }).strict();
const SeqParams = z.object({ id: z.string() });

export const sequenceRoutes: FastifyPluginAsync<{ store: BlockStore }> = async (app, { store }) => {
  app.post('/v1/sequences', async (request, reply) => {
    const body = parse(CreateBody, request.body ?? {}, 'body');
    reply.status(201);
    return store.createSequence(body.id, body.prefix);
  });

  app.post('/v1/sequences/:id/blocks', async (request, reply) => {
    const { id } = parse(SeqParams, request.params, 'params');
    const body = parse(AllocateBody, request.body, 'body');
    reply.status(201);
    return { blocks: store.allocate(id, body.count) };
  });

  app.delete('/v1/sequences/:id', async (request) => {
    const { id } = parse(SeqParams, request.params, 'params');
    return store.freeSequence(id);
  });
};
