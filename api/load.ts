/**
 * Load shedding. When the disk queue or the event loop is saturated, data-plane requests
 * are answered 503 with Retry-After at once, rather than queued without bound behind the
 * work already in flight. Control and telemetry routes stay served, so an operator can
 * see why. Every request is also shed when the bytes of the bodies (and batch-read
 * answers) the server holds would go past their budget, whatever its route.
 */
import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks';
import type { FastifyReply, onRequestHookHandler } from 'fastify';
import { SpillwayError } from '../runtime/errors.js';
import type { BlockStore } from '../runtime/store.js';
import type { ApiMetrics } from './metrics.js';

const RESOLUTION_MS = 10;
export const RETRY_AFTER_SECONDS = 1;

export interface Pressure {
  reason: 'disk-queue' | 'event-loop';
  value: number;
  limit: number;
}

export class LoadMonitor {
  readonly maxDiskQueue: number;
  readonly maxEventLoopDelayMs: number;
  private readonly store: BlockStore;
  private readonly histogram: IntervalHistogram = monitorEventLoopDelay({ resolution: RESOLUTION_MS });
  private timer: NodeJS.Timeout | undefined;
  private delayMs = 0;

  constructor(store: BlockStore) {
    this.store = store;
    this.maxDiskQueue = store.config.server.maxDiskQueue;
    this.maxEventLoopDelayMs = store.config.server.maxEventLoopDelayMs;
  }

  /** Samples the event loop's delay every `intervalMs`: its mean over the interval, less the timer's own period. */
  start(intervalMs: number, metrics: ApiMetrics): void {
    this.histogram.enable();
    this.timer = setInterval(() => {
      const mean = this.histogram.mean / 1e6;
      // No sample at all means the loop was blocked for the whole interval.
      this.delayMs = Number.isFinite(mean) ? Math.max(0, mean - RESOLUTION_MS) : intervalMs;
      metrics.eventLoopDelay.set(this.delayMs / 1000);
      this.histogram.reset();
    }, intervalMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
    this.histogram.disable();
  }

  get eventLoopDelayMs(): number {
    return this.delayMs;
  }

  /** What is saturated now, or null. */
  pressure(): Pressure | null {
    const queue = this.store.diskQueueDepth;
    if (queue > this.maxDiskQueue) return { reason: 'disk-queue', value: queue, limit: this.maxDiskQueue };
    if (this.maxEventLoopDelayMs > 0 && this.delayMs > this.maxEventLoopDelayMs) {
      // Rounded up: a delay just over the limit must not read as "1 over 1".
      return { reason: 'event-loop', value: Math.ceil(this.delayMs * 10) / 10, limit: this.maxEventLoopDelayMs };
    }
    return null;
  }
}

/** The 503 BUSY error of a request shed for `p`, with Retry-After on its reply; counted. */
function shed(reply: FastifyReply, metrics: ApiMetrics, p: Pressure | { reason: 'body-bytes'; value: number; limit: number }): SpillwayError {
  metrics.shed.inc({ reason: p.reason });
  reply.header('retry-after', String(RETRY_AFTER_SECONDS));
  return new SpillwayError('BUSY', `server overloaded (${p.reason} ${p.value} over ${p.limit}); retry after ${RETRY_AFTER_SECONDS} s`, {
    reason: p.reason, value: p.value, limit: p.limit, retryAfterSeconds: RETRY_AFTER_SECONDS,
  });
}

/** An onRequest hook answering 503 + Retry-After while the monitor reports pressure. */
export function shedWhenSaturated(monitor: LoadMonitor, metrics: ApiMetrics): onRequestHookHandler {
  return (_request, reply, done) => {
    const p = monitor.pressure();
    done(p === null ? undefined : shed(reply, metrics, p));
  };
}

/** A request waiting for room in the body budget. */
interface Waiter {
  bytes: number;
  /** Called with the bytes already counted as held. */
  admit(): void;
}

/**
 * The bytes of request bodies and batch-read answers held at once (server.maxBodyBytesInFlight).
 * A request holds its share from before the first byte is read until its response closes:
 * sent, failed, or its connection gone. A request that does not fit waits its turn, first
 * come first served, for up to server.maxBodyWaitMs.
 */
export class BodyBudget {
  readonly limit: number;
  readonly waitMs: number;
  private readonly metrics: ApiMetrics;
  private held = 0;
  private readonly waiting: Waiter[] = [];

  constructor(limit: number, waitMs: number, metrics: ApiMetrics) {
    this.limit = limit;
    this.waitMs = waitMs;
    this.metrics = metrics;
  }

  /**
   * Holds `bytes` for `reply` until its response closes, once there is room and every
   * request that waited before it has its share. Throws BUSY (503, Retry-After) when no
   * room came within the wait, PAYLOAD_TOO_LARGE when it never will.
   */
  async hold(reply: FastifyReply, bytes: number, what: string): Promise<void> {
    if (bytes > this.limit) {
      throw new SpillwayError('PAYLOAD_TOO_LARGE', `${what} of up to ${bytes} bytes is more than server.maxBodyBytesInFlight (${this.limit})`, {
        field: 'body', limitBytes: this.limit,
      });
    }
    if (this.waiting.length === 0 && this.held + bytes <= this.limit) this.count(bytes);
    else await this.wait(reply, bytes);
    let holding = true;
    const give = () => {
      if (!holding) return;
      holding = false;
      this.count(-bytes);
      this.admitWaiting();
    };
    reply.raw.once('close', give);
    // A response already gone emits no further 'close'.
    if (reply.raw.destroyed) give();
  }

  private count(bytes: number): void {
    this.held += bytes;
    this.metrics.bodyBytesInFlight.set(this.held);
  }

  private wait(reply: FastifyReply, bytes: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const leave = (err: SpillwayError) => {
        const at = this.waiting.indexOf(waiter);
        if (at < 0) return;
        this.waiting.splice(at, 1);
        this.metrics.bodyWaiting.set(this.waiting.length);
        clearTimeout(timer);
        reply.raw.removeListener('close', gone);
        // The requests behind it may fit now.
        this.admitWaiting();
        reject(err);
      };
      const busy = () => shed(reply, this.metrics, { reason: 'body-bytes', value: this.held + bytes, limit: this.limit });
      const gone = () => leave(busy());
      const waiter: Waiter = {
        bytes,
        admit: () => {
          clearTimeout(timer);
          reply.raw.removeListener('close', gone);
          resolve();
        },
      };
      const timer = setTimeout(() => leave(busy()), this.waitMs);
      reply.raw.once('close', gone);
      this.waiting.push(waiter);
      this.metrics.bodyWaiting.set(this.waiting.length);
    });
  }

  /** Admits waiting requests in order while the first of them fits. */
  private admitWaiting(): void {
    while (this.waiting.length > 0 && this.held + this.waiting[0]!.bytes <= this.limit) {
      const next = this.waiting.shift()!;
      this.metrics.bodyWaiting.set(this.waiting.length);
      this.count(next.bytes);
      next.admit();
    }
  }
}
