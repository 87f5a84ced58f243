/**
 * Zero-copy data plane for an engine on the same GPU: the tier-0 pool as a CUDA IPC
 * handle with its slot geometry, leases, and acquire/release of blocks by slot index.
 *
 * Only acquire is shed under load (it may fill from disk). The pool, the lease routes and
 * release are not: a heartbeat refused with 503 would let a lease expire under an engine
 * that is alive, and a release only gives resources back.
 *
 * Synchronization: acquire answers after the promotion that lands the block in its slot
 * has completed on the GPU (each backend operation synchronizes its stream before it
 * resolves), so the engine may read the slot as soon as it has the answer. In the other
 * direction the engine finishes its own writes to a slot (synchronizes its stream) before
 * it releases the block with written: true.
 */
import type { RoutePlugin } from '../context.js';
import { shedWhenSaturated } from '../load.js';
import {
  AcquireBody, AcquireManyBody, AcquireManyResponse, AcquireResponse, AttachBody, AttachResponse, CreateLeaseBody, EndLeaseResponse,
  ErrorResponse, LeaseParams, LeaseResponse, PoolResponse, ReleaseBody, ReleaseManyBody, ReleaseManyResponse, ReleaseResponse,
} from '../schemas.js';
import type { ZodTypeProvider } from '../validation.js';

const tags = ['zero-copy'];

export const zeroCopyRoutes: RoutePlugin = async (app, { ctx }) => {
  const { store } = ctx;

  app.get('/v1/zero-copy/pool', {
    schema: {
      tags, summary: 'The tier-0 pool as a CUDA IPC handle with its slot geometry (409 NO_DEVICE_MEMORY on the host backend)',
      response: { 200: PoolResponse, default: ErrorResponse },
    },
  }, async () => {
    const { handle, ...rest } = store.exportPool();
    return { ...rest, handle: handle.toString('base64'), handleBytes: handle.length, layout: '[layer][kv][kv_head][token][head_dim]' as const };
  });

  app.post('/v1/zero-copy/leases', {
    schema: { tags, summary: 'Open a lease to acquire blocks under', body: CreateLeaseBody, response: { 201: LeaseResponse, default: ErrorResponse } },
  }, async (request, reply) => {
    reply.status(201);
    return store.createLease(request.body.client, request.body.ttlMs);
  });

  app.post('/v1/zero-copy/leases/:id/heartbeat', {
    schema: { tags, summary: 'Renew a lease for another TTL', params: LeaseParams, response: { 200: LeaseResponse, default: ErrorResponse } },
  }, async (request) => store.heartbeat(request.params.id));

  app.delete('/v1/zero-copy/leases/:id', {
    schema: {
      tags, summary: 'End a lease, releasing every block it holds (without written)', params: LeaseParams,
      response: { 200: EndLeaseResponse, default: ErrorResponse },
    },
  }, async (request) => store.endLease(request.params.id));

  app.post('/v1/zero-copy/leases/:id/release', {
    schema: {
      tags, summary: 'Unpin a block held under the lease; with written: true its slot becomes the block',
      params: LeaseParams, body: ReleaseBody, response: { 200: ReleaseResponse, default: ErrorResponse },
    },
  }, async (request) => store.release(request.params.id, request.body.blockId, request.body));

  app.post('/v1/zero-copy/leases/:id/release-many', {
    schema: {
      tags, summary: 'Unpin many blocks held under the lease in one call; each entry answers (or fails) alone',
      params: LeaseParams, body: ReleaseManyBody, response: { 200: ReleaseManyResponse, default: ErrorResponse },
    },
  }, async (request) => ({ blocks: await store.releaseMany(request.params.id, request.body.blocks) }));

  await app.register(async (scope) => {
    const data = scope.withTypeProvider<ZodTypeProvider>();
    data.addHook('onRequest', shedWhenSaturated(ctx.load, ctx.metrics));
    data.post('/v1/zero-copy/leases/:id/acquire', {
      schema: {
        tags, summary: 'Bring a block into tier 0 and pin it under the lease; answers its slot once the data is there',
        params: LeaseParams, body: AcquireBody, response: { 200: AcquireResponse, default: ErrorResponse },
      },
    }, async (request) => store.acquire(request.params.id, request.body.sequence, request.body.index));
    data.post('/v1/zero-copy/leases/:id/acquire-many', {
      schema: {
        tags, summary: 'Bring many blocks of a sequence into tier 0 as one pipeline and pin them; answers every slot once all the data is there',
        params: LeaseParams, body: AcquireManyBody, response: { 200: AcquireManyResponse, default: ErrorResponse },
      },
    }, async (request) => {
      const b = request.body;
      const indices = 'indices' in b ? b.indices : Array.from({ length: b.count }, (_, i) => b.start + i);
      return { blocks: await store.acquireMany(request.params.id, b.sequence, indices) };
    });
    data.post('/v1/zero-copy/leases/:id/attach', {
      schema: {
        tags, summary: 'Create a sequence on the cached part of a prefix, allocate more blocks, and acquire them all in one call',
        params: LeaseParams, body: AttachBody, response: { 201: AttachResponse, default: ErrorResponse },
      },
    }, async (request, reply) => {
      reply.status(201);
      return store.attachAndAcquire(request.params.id, request.body.prefix, request.body.allocate, request.body.id);
    });
  });
};
