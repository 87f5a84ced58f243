/**
 * Context limits at run time: tokens per sequence, live sequences, live tokens. A change
 * is checked by the store against the ladder's capacity; the answer says what is in use
 * and what is left.
 */
import type { BlockStore } from '../../runtime/store.js';
import type { RoutePlugin } from '../context.js';
import { ErrorResponse, LimitsPatch, LimitsReplace, LimitsResponse } from '../schemas.js';

function limitsView(store: BlockStore) {
  const limits = store.limits;
  const { sequences, liveTokens } = store.occupancy();
  return {
    limits,
    capacityTokens: store.layout.totalTokens,
    live: { sequences, tokens: liveTokens },
    remaining: {
      sequences: Math.max(0, limits.maxLiveSequences - sequences),
      tokens: Math.max(0, limits.maxTotalTokens - liveTokens),
    },
  };
}

export const limitsRoutes: RoutePlugin = async (app, { ctx }) => {
  const { store } = ctx;
  const response = { 200: LimitsResponse, default: ErrorResponse };

  app.get('/v1/limits', { schema: { tags: ['limits'], summary: 'Context limits, what is in use and what is left', response } }, async () => limitsView(store));

  app.put('/v1/limits', {
    schema: { tags: ['limits'], summary: 'Replace all three limits', body: LimitsReplace, response },
  }, async (request) => {
    store.setLimits(request.body);
    return limitsView(store);
  });

  app.patch('/v1/limits', {
    schema: { tags: ['limits'], summary: 'Change some limits', body: LimitsPatch, response },
  }, async (request) => {
    store.setLimits(request.body);
    return limitsView(store);
  });
};
