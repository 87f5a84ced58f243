/**
 * The API's own metrics, kept in the store's registry so that /metrics serves one page:
 * request durations per route, requests shed under load, connections refused past
 * server.maxConnections, request body bytes held, the
 * event stream's clients and the events it dropped for clients that did not keep up, and
 * the collector's pauses (a pause stalls every request in flight, so it is where a
 * latency tail is looked for first).
 */
import { constants as perfConstants, PerformanceObserver, type PerformanceEntry } from 'node:perf_hooks';
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';

const HTTP_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.025, 0.05, 0.1, 0.25, 1];

const GC_KINDS: Record<number, string> = {
  [perfConstants.NODE_PERFORMANCE_GC_MINOR]: 'minor',
  [perfConstants.NODE_PERFORMANCE_GC_MAJOR]: 'major',
  [perfConstants.NODE_PERFORMANCE_GC_INCREMENTAL]: 'incremental',
  [perfConstants.NODE_PERFORMANCE_GC_WEAKCB]: 'weakcb',
};

export class ApiMetrics {
  private readonly requestSeconds: Histogram<'method' | 'route' | 'status'>;
  readonly shed: Counter<'reason'>;
  readonly connectionsDropped: Counter;
  readonly bodyBytesInFlight: Gauge;
  readonly bodyWaiting: Gauge;
  readonly eventsDropped: Counter;
  readonly eventClients: Gauge;
  readonly eventLoopDelay: Gauge;
  private readonly gcSeconds: Histogram<'kind'>;
  private readonly gcObserver: PerformanceObserver;
  private readonly registry: Registry;
  private readonly names: string[];
  private readonly requestChildren = new Map<string, { observe(value: number): void }>();

  constructor(registry: Registry) {
    this.registry = registry;
    const before = new Set(registry.getMetricsAsArray().map((m) => m.name));
    const registers = [registry];
    this.requestSeconds = new Histogram({ name: 'spillway_http_request_seconds', help: 'HTTP request duration by route', labelNames: ['method', 'route', 'status'], buckets: HTTP_BUCKETS, registers });
    this.shed = new Counter({ name: 'spillway_http_shed_total', help: 'Requests answered 503 because the server was overloaded', labelNames: ['reason'], registers });
    this.connectionsDropped = new Counter({ name: 'spillway_http_connections_dropped_total', help: 'Connections closed as they arrived because server.maxConnections were open', registers });
    this.bodyBytesInFlight = new Gauge({ name: 'spillway_http_body_bytes_in_flight', help: 'Request body and batch-read answer bytes held (server.maxBodyBytesInFlight)', registers });
    this.bodyWaiting = new Gauge({ name: 'spillway_http_body_waiting', help: 'Requests waiting for room in the body byte budget (server.maxBodyWaitMs)', registers });
    this.eventsDropped = new Counter({ name: 'spillway_events_dropped_total', help: 'Move events not sent to event-stream clients that fell behind', registers });
    this.eventClients = new Gauge({ name: 'spillway_event_clients', help: 'Connected event-stream clients', registers });
    this.eventLoopDelay = new Gauge({ name: 'spillway_event_loop_delay_seconds', help: 'Mean event loop delay over the last sample', registers });
    this.gcSeconds = new Histogram({ name: 'spillway_gc_seconds', help: 'Garbage collection pauses of the server process by kind', labelNames: ['kind'], buckets: HTTP_BUCKETS, registers });
    this.gcObserver = new PerformanceObserver((list) => {
      for (const e of list.getEntries()) this.gcSeconds.observe({ kind: gcKind(e) }, e.duration / 1000);
    });
    this.gcObserver.observe({ entryTypes: ['gc'] });
    this.names = registry.getMetricsAsArray().map((m) => m.name).filter((n) => !before.has(n));
  }

  /** Records one request; label children are kept per route and status, so the hot path does not hash labels. */
  observeRequest(method: string, route: string, status: number, seconds: number): void {
    const key = `${method} ${route} ${status}`;
    let child = this.requestChildren.get(key);
    if (!child) {
      child = this.requestSeconds.labels({ method, route, status });
      this.requestChildren.set(key, child);
    }
    child.observe(seconds);
  }

  /** Takes the metrics out of the registry, so that another server may use the store. */
  remove(): void {
    this.gcObserver.disconnect();
    for (const name of this.names) this.registry.removeSingleMetric(name);
  }
}

function gcKind(e: PerformanceEntry): string {
  const kind = (e as PerformanceEntry & { detail?: { kind?: number } }).detail?.kind;
  return (kind !== undefined && GC_KINDS[kind]) || 'other';
}
