/** Liveness, readiness, and status: backend, I/O paths, capacity, limits, load, configuration. */
import type { z } from 'zod';
import type { BackendDescription } from '../../runtime/backends/backend.js';
import type { RoutePlugin } from '../context.js';
import { ErrorResponse, HealthResponse, ReadyResponse, StatusResponse } from '../schemas.js';

/** Liveness and readiness: answered without a token, for orchestrators' probes. */
export const healthRoutes: RoutePlugin = async (app, { ctx }) => {
  app.get('/v1/health', {
    schema: { tags: ['status'], summary: 'Liveness: the process answers', security: [], response: { 200: HealthResponse } },
  }, async () => ({ ok: true as const }));

  app.get('/v1/ready', {
    schema: {
      tags: ['status'], summary: 'Readiness: 200 while data-plane requests are accepted and the weights are loaded, 503 while they load, while closing or shedding load',
      security: [], response: { 200: ReadyResponse, 503: ReadyResponse },
    },
  }, async (_request, reply) => {
    const pressure = ctx.load.pressure();
    const weights = ctx.weights?.state;
    const reason = ctx.closing() ? 'closing'
      : weights === 'loading' ? 'weights loading'
        : weights === 'failed' ? 'weights load failed'
          : pressure ? `${pressure.reason} ${pressure.value} over ${pressure.limit}` : undefined;
    if (reason) reply.status(503);
    return reason ? { ready: false, reason } : { ready: true };
  });
};

export const statusRoutes: RoutePlugin = async (app, { ctx }) => {
  const { store, load, sampler } = ctx;
  const { token, ...server } = store.config.server;
  const capacity = { ...store.capacity(), memory: ctx.memory };
  const config = { ...store.config, server: { ...server, auth: token !== undefined } };

  // Capacity and configuration never change while serving, and the backend's description
  // only once a telemetry sample: their JSON (most of the answer) is kept and spliced in,
  // so that a status request serializes only what moves.
  let keptFor: BackendDescription | undefined;
  let keptJson = '';
  const steadyJson = () => {
    if (keptFor !== sampler.backend) {
      keptFor = sampler.backend;
      keptJson = JSON.stringify({ backend: keptFor, capacity, quantization: store.layout.quantization, config, recovery: store.recovery }).slice(1, -1);
    }
    return keptJson;
  };
  type Status = z.input<typeof StatusResponse>;
  const serialize = (s: Status) => `${JSON.stringify({ limits: s.limits, stats: s.stats, load: s.load, shared: s.shared }).slice(0, -1)},${steadyJson()}}`;

  app.get('/v1/status', {
    schema: {
      tags: ['status'], summary: 'Backend and I/O path per tier (as of the last telemetry sample), capacity per tier, limits, live stats, load, effective configuration',
      response: { 200: StatusResponse, default: ErrorResponse },
    },
    serializerCompiler: ({ httpStatus }) => (httpStatus === '200' ? (data) => serialize(data as Status) : (data) => JSON.stringify(data)),
  }, async () => {
    const pressure = load.pressure();
    return {
      backend: sampler.backend,
      recovery: store.recovery,
      shared: store.sharedStatus(),
      capacity,
      quantization: store.layout.quantization,
      limits: store.limits,
      stats: store.stats(),
      load: {
        diskQueue: store.diskQueueDepth, maxDiskQueue: load.maxDiskQueue,
        eventLoopDelayMs: load.eventLoopDelayMs, maxEventLoopDelayMs: load.maxEventLoopDelayMs,
        shedding: pressure ? pressure.reason : null,
      },
      config,
    };
  });
};
