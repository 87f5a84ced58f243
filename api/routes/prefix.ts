/** Prefix cache: which leading blocks of a hash chain are cached, and where. */
import type { FastifyPluginAsync } from 'fastify';
import { z } from 'zod';
import type { BlockStore } from '../../runtime/store.js';
import { chainHashes } from '../../runtime/prefix.js';
import { parse } from '../errors.js';

const LookupBody = z.union([
  z.object({ hashes: z.array(z.string().regex(/^[0-9a-f]{32}$/)).max(1 << 20) }).strict(),
  z.object({ tokens: z.array(z.number().int().min(0).max(0xffffffff)).max(1 << 24) }).strict(),
]);

export const prefixRoutes: FastifyPluginAsync<{ store: BlockStore }> = async (app, { store }) => {
  app.post('/v1/prefix/lookup', async (request) => {
    const body = parse(LookupBody, request.body, 'body');
    const hashes = 'hashes' in body ? body.hashes : chainHashes(body.tokens, store.layout.tokensPerBlock);
    const cached = store.lookupPrefix(hashes);
    return { requested: hashes.length, cached, hashes };
  });
};
