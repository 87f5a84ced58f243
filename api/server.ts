/**
 * The HTTP API: a fastify app over one BlockStore. Routes are plugins, one file per
 * resource; errors go through one handler (api/errors.ts).
 */
import Fastify, { type FastifyInstance } from 'fastify';
import type { Config } from '../runtime/config.js';
import { openStore } from '../runtime/open.js';
import type { BlockStore } from '../runtime/store.js';
import { installErrorHandler } from './errors.js';
import { blockRoutes } from './routes/blocks.js';
import { metricsRoutes } from './routes/metrics.js';
import { prefixRoutes } from './routes/prefix.js';
import { sequenceRoutes } from './routes/sequences.js';
import { statusRoutes } from './routes/status.js';

export interface ServerOptions {
  logger?: boolean;
}

export async function buildServer(store: BlockStore, options: ServerOptions = {}): Promise<FastifyInstance> {
  const app = Fastify({
    logger: options.logger ?? false,
    // A block plus room for headers of a batch; larger bodies are refused with 413.
    bodyLimit: store.layout.rawBlockBytes + 64 * 1024,
  });
  app.addContentTypeParser('application/octet-stream', { parseAs: 'buffer' }, (_req, body, done) => done(null, body));
  installErrorHandler(app);
  await app.register(statusRoutes, { store });
  await app.register(sequenceRoutes, { store });
  await app.register(blockRoutes, { store });
  await app.register(prefixRoutes, { store });
  await app.register(metricsRoutes, { store });
  app.addHook('onClose', async () => store.close());
  return app;
}

/** Opens the store and listens; stops cleanly on SIGINT/SIGTERM. */
export async function serve(config: Config): Promise<FastifyInstance> {
  const store = await openStore(config);
  const app = await buildServer(store, { logger: true });
  const b = store.describeBackend();
  app.log.info({ backend: b.name, reason: b.reason, paths: b.paths, capacity: store.capacity() }, 'spillway store open');
  await app.listen({ host: config.server.host, port: config.server.port });
  const stop = async () => {
    await app.close();
    process.exit(0);
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  return app;
}
