/**
 * The HTTP API: a fastify app over one BlockStore. Routes are plugins, one file per
 * resource, validated by their zod schemas (api/schemas.ts); errors go through one handler
 * (api/errors.ts). Scopes, outermost first:
 *
 *   open:       /v1/health, /v1/ready, the dashboard page, /docs (pages hold no data)
 *   guarded:    the bearer token, when one is configured: status, limits, telemetry,
 *               zero-copy pool and leases
 *   data plane: also shed with 503 + Retry-After under load: sequences, blocks, prefix
 *
 * Before any scope, every request's body is checked against its route's media types and
 * its bytes are reserved from the body byte budget (api/bodies.ts).
 *
 * The app owns its store, but nothing of the process: listening, signals and the weights
 * load are api/serve.ts's, so tests build as many apps in one process as they like.
 */
import type { Socket } from 'node:net';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import Fastify, { LogController, type FastifyInstance } from 'fastify';
import { SpillwayError } from '../runtime/errors.js';
import { version } from '../runtime/version.js';
import { memoryBudget, type MemoryBudget, type ModelWeights } from '../runtime/weights/model.js';
import type { BlockStore } from '../runtime/store.js';
import { requireBearer } from './auth.js';
import { installBodyRules } from './bodies.js';
import { BufferPool } from './buffer-pool.js';
import type { ApiContext } from './context.js';
import { answerFrameworkError, errorBody, installErrorHandler } from './errors.js';
import { BodyBudget, LoadMonitor, shedWhenSaturated } from './load.js';
import { ApiMetrics } from './metrics.js';
import { batchRoutes } from './routes/batch.js';
import { blockRoutes } from './routes/blocks.js';
import { dashboardRoutes } from './routes/dashboard.js';
import { faultRoutes } from './routes/faults.js';
import { limitsRoutes } from './routes/limits.js';
import { metricsRoutes } from './routes/metrics.js';
import { prefixRoutes } from './routes/prefix.js';
import { sequenceRoutes } from './routes/sequences.js';
import { healthRoutes, statusRoutes } from './routes/status.js';
import { telemetryRoutes } from './routes/telemetry.js';
import { weightsRoutes } from './routes/weights.js';
import { zeroCopyRoutes } from './routes/zero-copy.js';
import { TelemetrySampler } from './sampler.js';
import { jsonSerializerCompiler, openApiTransform, zodValidatorCompiler } from './validation.js';

export interface ServerOptions {
  /** Log with pino: true for stdout, or a stream to write the lines to. */
  logger?: boolean | { stream: NodeJS.WritableStream };
  /** The model's weights, planned; serve() (api/serve.ts) loads them once listening. */
  weights?: ModelWeights;
  /** The memory budget checked when the store was opened (serve() probes the device for it). */
  memory?: MemoryBudget;
}

/** How often the event loop's delay is sampled for load shedding. */
const LOAD_SAMPLE_MS = 250;

/** How long a request's headers may take to arrive, at most (node's default). */
const HEADERS_TIMEOUT_MS = 60_000;

/**
 * node's limits on receiving a request, given to its server as it is made (node 20 keeps to
 * the limits it was made with, and takes a request limit of 0 to mean no header limit too):
 * the whole request within `requestTimeoutMs` (0: no limit), its headers within 60 s or that,
 * whichever is less; checked every quarter of the shorter, from 25 ms to 1 s (node's own 30 s
 * would let a limit of seconds run long).
 */
function requestLimits(requestTimeoutMs: number): { requestTimeout: number; headersTimeout: number; connectionsCheckingInterval: number } {
  const headersTimeout = requestTimeoutMs === 0 ? HEADERS_TIMEOUT_MS : Math.min(HEADERS_TIMEOUT_MS, requestTimeoutMs);
  return { requestTimeout: requestTimeoutMs, headersTimeout, connectionsCheckingInterval: Math.min(1000, Math.max(25, headersTimeout / 4)) };
}

/**
 * Requests node's HTTP parser refuses, and those that did not arrive whole within
 * `requestTimeoutMs`, never reach fastify: answer them in the API's error shape.
 */
function answerClientError(err: Error & { code?: string }, socket: Socket, requestTimeoutMs: number): void {
  if (err.code === 'ECONNRESET' || socket.destroyed) return;
  // The client ended its side mid-request: it sends nothing more, and may have its answer
  // already (a body refused before it was read), which a second one would garble.
  if (err.code === 'HPE_INVALID_EOF_STATE') {
    socket.destroy();
    return;
  }
  const timedOut = err.code === 'ERR_HTTP_REQUEST_TIMEOUT';
  const [status, text, message] = err.code === 'HPE_HEADER_OVERFLOW'
    ? [431, 'Request Header Fields Too Large', 'request headers are too large']
    : timedOut
      ? [408, 'Request Timeout', `the request did not arrive whole within ${requestTimeoutMs} ms (server.requestTimeoutMs)`]
      : [400, 'Bad Request', 'malformed HTTP request'];
  const body = JSON.stringify(errorBody(new SpillwayError(timedOut ? 'REQUEST_TIMEOUT' : 'INVALID_ARGUMENT', message)));
  if (socket.writable) {
    socket.write(`HTTP/1.1 ${status} ${text}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
  }
  socket.destroy();
}

export async function buildServer(store: BlockStore, options: ServerOptions = {}): Promise<FastifyInstance> {
  const config = store.config.server;
  const app = Fastify({
    logger: options.logger
      ? { ...(options.logger === true ? {} : options.logger), redact: { paths: ['req.headers.authorization'], censor: '[redacted]' } }
      : false,
    // An engine makes many small requests: log failures (errors.ts), not each request.
    logController: new LogController({ disableRequestLogging: true }),
    // One block and room to spare, for the single-block PUT; JSON routes and batch writes
    // have their own limits (server.maxJsonBytes, server.maxBatchBytes), other routes take no body.
    bodyLimit: store.layout.rawBlockBytes + 64 * 1024,
    clientErrorHandler: (err, socket) => answerClientError(err, socket, config.requestTimeoutMs),
    frameworkErrors: answerFrameworkError,
    // fastify sets the request limit on node's server after making it; node keeps to the one in `http`.
    requestTimeout: config.requestTimeoutMs,
    http: requestLimits(config.requestTimeoutMs),
  });
  app.server.maxConnections = config.maxConnections;
  app.setValidatorCompiler(zodValidatorCompiler);
  app.setSerializerCompiler(jsonSerializerCompiler);
  installErrorHandler(app);

  const metrics = new ApiMetrics(store.telemetry.registry);
  app.server.on('drop', () => metrics.connectionsDropped.inc());
  const budget = new BodyBudget(config.maxBodyBytesInFlight, config.maxBodyWaitMs, metrics);
  // Idle buffers kept for reuse: at most half of what request bodies in flight may hold.
  const buffers = new BufferPool(store.layout.rawBlockBytes, config.maxBodyBytesInFlight / 2);
  installBodyRules(app, budget, config.maxJsonBytes, buffers);
  const load = new LoadMonitor(store);
  load.start(LOAD_SAMPLE_MS, metrics);
  const sampler = new TelemetrySampler(store, load, metrics, config.telemetryIntervalMs);
  await sampler.start();
  let closing = false;
  const { weights } = options;
  const memory = options.memory ?? memoryBudget(store.config, store.describeBackend().name, undefined, weights?.bytes ?? 0);
  const ctx: ApiContext = { store, load, budget, buffers, sampler, metrics, weights, memory, closing: () => closing };

  app.addHook('onResponse', (request, reply, done) => {
    metrics.observeRequest(request.method, request.routeOptions.url ?? 'unmatched', reply.statusCode, reply.elapsedTime / 1000);
    done();
  });
  app.addHook('preClose', async () => {
    closing = true;
  });
  app.addHook('onClose', async () => {
    sampler.stop();
    load.stop();
    metrics.remove();
    weights?.free();
    await store.close();
  });

  await app.register(swagger, {
    openapi: {
      info: { title: 'spillway', version, description: 'KV-cache tiering runtime: blocks on raw, quantized and disk tiers' },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
      security: [{ bearer: [] }],
    },
    transform: openApiTransform,
  });
  await app.register(swaggerUi, { routePrefix: '/docs' });
  await app.register(healthRoutes, { ctx });
  await app.register(dashboardRoutes, { ctx });
  await app.register(async (guarded) => {
    if (config.token !== undefined) guarded.addHook('onRequest', requireBearer(config.token));
    await guarded.register(statusRoutes, { ctx });
    await guarded.register(limitsRoutes, { ctx });
    await guarded.register(metricsRoutes, { ctx });
    await guarded.register(telemetryRoutes, { ctx });
    await guarded.register(weightsRoutes, { ctx });
    if (config.faults) await guarded.register(faultRoutes, { ctx });
    // Sheds only its acquire route: leases must be renewable under load (routes/zero-copy.ts).
    await guarded.register(zeroCopyRoutes, { ctx });
    await guarded.register(async (data) => {
      data.addHook('onRequest', shedWhenSaturated(load, metrics));
      await data.register(sequenceRoutes, { ctx });
      await data.register(blockRoutes, { ctx });
      await data.register(batchRoutes, { ctx });
      await data.register(prefixRoutes, { ctx });
    });
  });
  return app;
}
