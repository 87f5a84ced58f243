/** Prometheus text at /metrics and the same metrics as JSON. */
import type { FastifyPluginAsync } from 'fastify';
import type { BlockStore } from '../../runtime/store.js';

export const metricsRoutes: FastifyPluginAsync<{ store: BlockStore }> = async (app, { store }) => {
  const registry = store.telemetry.registry;
  app.get('/metrics', async (_request, reply) => {
    reply.header('content-type', registry.contentType);
    return registry.metrics();
  });
  app.get('/v1/metrics', async () => registry.getMetricsAsJSON());
};
