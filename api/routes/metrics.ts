/** Prometheus text at /metrics and the same metrics as JSON. */
import { z } from 'zod';
import type { RoutePlugin } from '../context.js';

export const metricsRoutes: RoutePlugin = async (app, { ctx }) => {
  const registry = ctx.store.telemetry.registry;
  app.get('/metrics', {
    schema: {
      tags: ['telemetry'], summary: 'Prometheus text exposition (spillway_* metrics)',
      response: { 200: { content: { 'text/plain': { schema: z.string() } } } },
    },
  }, async (_request, reply) => {
    reply.header('content-type', registry.contentType);
    return registry.metrics();
  });
  app.get('/v1/metrics', {
    schema: { tags: ['telemetry'], summary: 'The same metrics as JSON (prom-client format)', response: { 200: z.array(z.unknown()) } },
  }, async () => registry.getMetricsAsJSON());
};
