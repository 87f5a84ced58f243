/** Prefix cache: which leading blocks of a hash chain are cached, and where. */
import { chainHashes } from '../../runtime/prefix.js';
import type { RoutePlugin } from '../context.js';
import { ErrorResponse, LookupBody, LookupResponse } from '../schemas.js';

export const prefixRoutes: RoutePlugin = async (app, { ctx }) => {
  const { store } = ctx;
  app.post('/v1/prefix/lookup', {
    schema: {
      tags: ['prefix'], summary: 'Which leading blocks of a prefix (block hashes, or token ids to hash) are cached, and in which tier',
      body: LookupBody, response: { 200: LookupResponse, default: ErrorResponse },
    },
  }, async (request) => {
    const body = request.body;
    const hashes = 'hashes' in body ? body.hashes : chainHashes(body.tokens, store.layout.tokensPerBlock);
    await store.pullShared(hashes);
    return { requested: hashes.length, cached: store.lookupPrefix(hashes), hashes };
  });
};
