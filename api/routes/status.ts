/** Health, readiness, effective configuration, capacity and the active backend. */
import type { FastifyPluginAsync } from 'fastify';
import type { BlockStore } from '../../runtime/store.js';

export const statusRoutes: FastifyPluginAsync<{ store: BlockStore }> = async (app, { store }) => {
  app.get('/v1/health', async () => ({ ok: true }));

  app.get('/v1/status', async () => {
    const { token: _token, ...server } = store.config.server;
    return {
      backend: store.describeBackend(),
      capacity: store.capacity(),
      limits: store.limits,
      stats: store.stats(),
      config: { ...store.config, server: { ...server, auth: _token !== undefined } },
    };
  });
};
