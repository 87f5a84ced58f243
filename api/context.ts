/** What the route plugins share: the store and the server's monitors. */
import type { FastifyPluginAsync, RawServerDefault } from 'fastify';
import type { BlockStore } from '../runtime/store.js';
import type { MemoryBudget, ModelWeights } from '../runtime/weights/model.js';
import type { BufferPool } from './buffer-pool.js';
import type { BodyBudget, LoadMonitor } from './load.js';
import type { ApiMetrics } from './metrics.js';
import type { TelemetrySampler } from './sampler.js';
import type { ZodTypeProvider } from './validation.js';

export interface ApiContext {
  store: BlockStore;
  load: LoadMonitor;
  /** Request body and batch-read answer bytes held at once. */
  budget: BodyBudget;
  /** Block-sized buffers the block routes reuse. */
  buffers: BufferPool;
  sampler: TelemetrySampler;
  metrics: ApiMetrics;
  /** The model's weights, when the configuration names them. */
  weights: ModelWeights | undefined;
  memory: MemoryBudget;
  /** True once the server has begun to close. */
  closing(): boolean;
}

export type RoutePlugin = FastifyPluginAsync<{ ctx: ApiContext }, RawServerDefault, ZodTypeProvider>;
