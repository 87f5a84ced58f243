/**
 * The harness's requests on threads of their own. Every block the load writes or reads
 * crosses a socket, and on the thread that times the requests those copies (2 MiB a
 * block into the kernel and out of it), the answers' parsing and the chunks' garbage ran
 * in front of every answer: that loop ran late by 4-12 ms at p99 on the GPU machines,
 * inside every latency it reported (docs/SOAK.md). An engine's transport is not its
 * scheduler's thread either.
 *
 * `ClientThreads` runs a SpillwayClient on each of N threads and hands each call to the
 * thread with the fewest in flight. Bodies and answers already lie in memory shared with
 * the verifier's threads (`Verifier.block`, `area`): views of a SharedArrayBuffer travel
 * without a copy, and an answer read into one (`into`) comes back as a view of the caller's
 * own buffer, so that the verifier finds it where it lies. Errors come back as the
 * SpillwayError (code, message, details) the client threw, or an Error with its code.
 */
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { SpillwayClient, type ClientOptions } from '../../api/client.js';
import { isErrorCode, SpillwayError } from '../../runtime/errors.js';
import { lateness, loopDelayMonitor, type LoopLateness } from './stats.js';

interface Call {
  id: number;
  method: keyof SpillwayClient;
  args: unknown[];
}

/** Asks a thread how late its event loop has run (answered as a result, LoopLateness). */
interface LatenessQuery {
  id: number;
  lateness: true;
}

/** Where a view of shared memory lay: the `memory`-th SharedArrayBuffer met walking the call's arguments. */
interface SharedView {
  sharedView: { memory: number; offset: number; length: number };
}

interface Done {
  id: number;
  result?: unknown;
  error?: { name: string; message: string; code?: string; details?: Record<string, unknown> };
}

/** The SharedArrayBuffers under the views in `value`, in the order a walk meets them (the same on both threads). */
function sharedMemories(value: unknown, found: SharedArrayBuffer[] = []): SharedArrayBuffer[] {
  if (ArrayBuffer.isView(value)) {
    if (value.buffer instanceof SharedArrayBuffer && !found.includes(value.buffer)) found.push(value.buffer);
  } else if (Array.isArray(value)) {
    for (const v of value) sharedMemories(v, found);
  } else if (value !== null && typeof value === 'object') {
    for (const v of Object.values(value)) sharedMemories(v, found);
  }
  return found;
}

/** `value` with every Uint8Array mapped by `view` (arrays and plain objects walked). */
function mapViews(value: unknown, view: (v: Uint8Array) => unknown, marker: (v: object) => unknown = () => undefined): unknown {
  if (value instanceof Uint8Array) return view(value);
  if (Array.isArray(value)) return value.map((v) => mapViews(v, view, marker));
  if (value !== null && typeof value === 'object') {
    const m = marker(value);
    if (m !== undefined) return m;
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, mapViews(v, view, marker)]));
  }
  return value;
}

if (!isMainThread && (workerData as { clientThread?: boolean } | undefined)?.clientThread) {
  const client = new SpillwayClient((workerData as { options: ClientOptions }).options);
  const loopDelay = loopDelayMonitor();
  loopDelay.enable();
  parentPort!.on('message', (message: Call | LatenessQuery) => {
    if ('lateness' in message) return parentPort!.postMessage({ id: message.id, result: lateness(loopDelay) } satisfies Done);
    const { id, method, args } = message;
    const memories = sharedMemories(args);
    // An answer read into the caller's shared buffer goes back as where it lies, not as bytes.
    const toMarkers = (v: Uint8Array): unknown => {
      const memory = memories.indexOf(v.buffer as SharedArrayBuffer);
      return memory < 0 ? v : ({ sharedView: { memory, offset: v.byteOffset, length: v.byteLength } } satisfies SharedView);
    };
    // A call that throws at once, or answers something that does not clone, fails the caller's call too.
    Promise.resolve()
      .then(() => (client[method] as (...a: unknown[]) => unknown).apply(client, args))
      .then((result) => parentPort!.postMessage({ id, result: mapViews(result, toMarkers) } satisfies Done))
      .catch((err: Error & { code?: string; details?: Record<string, unknown> }) => parentPort!.postMessage({
        id, error: { name: err.name, message: err.message, code: err.code, details: err.details },
      } satisfies Done));
  });
}

function toError(e: NonNullable<Done['error']>): Error {
  if (e.name === 'SpillwayError' && e.code !== undefined && isErrorCode(e.code)) return new SpillwayError(e.code, e.message, e.details ?? {});
  return Object.assign(new Error(e.message), e.code === undefined ? {} : { code: e.code });
}

export class ClientThreads {
  private readonly workers: Worker[];
  private readonly inFlight: number[];
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (err: Error) => void; worker: number; memories: SharedArrayBuffer[] }>();
  private nextId = 1;
  /** Calls these threads take as a SpillwayClient would (every method whose arguments and answer clone). */
  readonly client: SpillwayClient;

  constructor(options: ClientOptions, threads: number) {
    this.workers = Array.from({ length: threads }, () => new Worker(new URL(import.meta.url), { workerData: { clientThread: true, options } }));
    this.inFlight = this.workers.map(() => 0);
    this.workers.forEach((w, i) => {
      w.on('message', (d: Done) => this.settle(d));
      // A thread that ends (closed, or failed) fails its calls rather than leaving them waiting.
      const fail = (err: Error) => {
        for (const [id, p] of this.pending) {
          if (p.worker !== i) continue;
          this.pending.delete(id);
          p.reject(err);
        }
      };
      w.on('error', fail);
      w.on('exit', () => fail(Object.assign(new Error('client thread ended'), { code: 'ECONNRESET' })));
    });
    this.client = new Proxy({}, {
      get: (_, method) => (...args: unknown[]) => this.call(method as keyof SpillwayClient, args),
    }) as SpillwayClient;
  }

  /** How late each thread's event loop has run since it started. */
  lateness(): Promise<LoopLateness[]> {
    return Promise.all(this.workers.map((_, w) => this.post<LoopLateness>(w, (id) => ({ id, lateness: true }), [])));
  }

  private call(method: keyof SpillwayClient, args: unknown[]): Promise<unknown> {
    return this.post<unknown>(this.inFlight.indexOf(Math.min(...this.inFlight)), (id) => ({ id, method, args }), args);
  }

  private post<T>(worker: number, message: (id: number) => Call | LatenessQuery, args: unknown[]): Promise<T> {
    const id = this.nextId++;
    this.inFlight[worker]!++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject, worker, memories: sharedMemories(args) });
      try {
        this.workers[worker]!.postMessage(message(id));
      } catch (err) {
        // Arguments that do not clone: the call fails here, and holds nothing.
        this.pending.delete(id);
        this.inFlight[worker]!--;
        reject(err as Error);
      }
    });
  }

  private settle(d: Done): void {
    const p = this.pending.get(d.id);
    if (!p) return;
    this.pending.delete(d.id);
    this.inFlight[p.worker]!--;
    if (d.error) return p.reject(toError(d.error));
    // Views as the client returns them: Buffers, of the caller's own shared memory where they lay in it.
    p.resolve(mapViews(
      d.result,
      (v) => Buffer.from(v.buffer, v.byteOffset, v.byteLength),
      (o) => {
        const at = (o as Partial<SharedView>).sharedView;
        return at === undefined ? undefined : Buffer.from(p.memories[at.memory]!, at.offset, at.length);
      },
    ));
  }

  async close(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}
