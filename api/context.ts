/** What the route plugins share: the store and the server's monitors. */
import type { FastifyPluginAsync, RawServerDefault } from 'fastify';
import type { BlockStore } from '../runtime/store.js';
import type { LoadMonitor } from './load.js';
import type { ApiMetrics } from './metrics.js';
import type { TelemetrySampler } from './sampler.js';
import type { ZodTypeProvider } from './validation.js';

export interface ApiContext {
  store: BlockStore;
  load: LoadMonitor;
  sampler: TelemetrySampler;
  metrics: ApiMetrics;
  /** True once the server has begun to close. */
  closing(): boolean;
}

export type RoutePlugin = FastifyPluginAsync<{ ctx: ApiContext }, RawServerDefault, ZodTypeProvider>;
