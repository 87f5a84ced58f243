/**
 * What an operator watches: a compact snapshot of the tiers over time (/v1/telemetry), and
 * every demotion, promotion and drop as it happens, as Server-Sent Events (/v1/events).
 *
 * An event-stream client that reads slower than moves happen is not allowed to grow the
 * server's memory: past server.eventBufferBytes queued for it, events are dropped and
 * counted (spillway_events_dropped_total), and the client is told how many with a
 * `dropped` event once it catches up.
 */
import type { ServerResponse } from 'node:http';
import { z } from 'zod';
import type { MoveEvent } from '../../runtime/telemetry.js';
import type { ApiMetrics } from '../metrics.js';
import { perTier } from '../sampler.js';
import type { RoutePlugin } from '../context.js';
import { ErrorResponse, EventsQuery, TelemetryQuery, TelemetryResponse } from '../schemas.js';

const HEARTBEAT_MS = 15_000;

class EventStream {
  private readonly res: ServerResponse;
  private readonly limitBytes: number;
  private readonly metrics: ApiMetrics;
  private nextId = 1;
  private dropped = 0;

  constructor(res: ServerResponse, limitBytes: number, metrics: ApiMetrics) {
    this.res = res;
    this.limitBytes = limitBytes;
    this.metrics = metrics;
  }

  send(event: string, data: unknown): void {
    if (this.res.writableLength > this.limitBytes) {
      this.dropped++;
      this.metrics.eventsDropped.inc();
      return;
    }
    if (this.dropped > 0) {
      this.res.write(`event: dropped\ndata: {"dropped":${this.dropped}}\n\n`);
      this.dropped = 0;
    }
    this.res.write(`id: ${this.nextId++}\nevent: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
  }

  comment(text: string): void {
    if (this.res.writableLength <= this.limitBytes) this.res.write(`: ${text}\n\n`);
  }
}

export const telemetryRoutes: RoutePlugin = async (app, { ctx }) => {
  const { store, sampler, metrics } = ctx;
  const open = new Set<ServerResponse>();

  app.get('/v1/telemetry', {
    schema: {
      tags: ['telemetry'], summary: 'Blocks per tier, moves per second, hit rates, disk bytes per second, the I/O path; with since, the samples after it',
      querystring: TelemetryQuery, response: { 200: TelemetryResponse, default: ErrorResponse },
    },
  }, async (request) => {
    const { sample, totals } = sampler.latest();
    const b = sampler.backend;
    const slots = store.capacity().tiers;
    const since = request.query.since;
    const shared = store.sharedStatus();
    return {
      ...sample,
      intervalMs: sampler.intervalMs,
      slots: perTier(store.layout, slots.map((t) => t.slots)),
      totals: {
        demotions: totals.demotions, promotions: totals.promotions, drops: totals.drops, reads: totals.reads, hits: totals.hits,
        diskBytes: totals.diskBytes, eventsDropped: totals.eventsDropped,
      },
      path: { backend: b.name, ...b.paths, direct: b.disk.direct },
      shared: shared && {
        path: shared.path, io: shared.io, hits: shared.hits, misses: Object.values(shared.misses).reduce((a, n) => a + n, 0), published: shared.published.written,
        bytesRead: shared.bytesRead, bytesWritten: shared.bytesWritten, usedBytes: shared.usedBytes, budgetBytes: shared.budgetBytes,
      },
      ...(since === undefined ? {} : { history: sampler.since(since) }),
    };
  });

  app.get('/v1/events', {
    schema: {
      tags: ['telemetry'], summary: 'Server-Sent Events: one `move` event per demotion, promotion or drop; `dropped` says how many a slow client missed',
      querystring: EventsQuery,
      response: { 200: { content: { 'text/event-stream': { schema: z.string() } } }, default: ErrorResponse },
    },
  }, (request, reply) => {
    const kinds = request.query.kinds;
    reply.hijack();
    const res = reply.raw;
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store', connection: 'keep-alive', 'x-accel-buffering': 'no' });
    res.write('retry: 2000\n\n');
    const stream = new EventStream(res, store.config.server.eventBufferBytes, metrics);
    const onMove = (e: MoveEvent) => {
      if (!kinds || kinds.has(e.kind)) stream.send('move', e);
    };
    const heartbeat = setInterval(() => stream.comment('ping'), HEARTBEAT_MS);
    heartbeat.unref();
    store.telemetry.moves.on('move', onMove);
    open.add(res);
    metrics.eventClients.inc();
    res.once('close', () => {
      store.telemetry.moves.off('move', onMove);
      clearInterval(heartbeat);
      open.delete(res);
      metrics.eventClients.dec();
    });
  });

  // Streams never end on their own: end them so that closing the server does not wait on them.
  app.addHook('preClose', async () => {
    for (const res of open) res.end();
  });
};
