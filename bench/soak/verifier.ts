/**
 * Threads that make blocks from their seeds and check what reads return, so that the
 * harness's own thread only speaks HTTP: checking a 2 MiB quantized block costs
 * milliseconds, and at hundreds of reads a second one thread would be the bottleneck.
 */
import { availableParallelism } from 'node:os';
import { isMainThread, parentPort, Worker } from 'node:worker_threads';
import { relativeError } from '../block-content.js';
import { soakBlock } from './content.js';

type Job = { id: number; seed: number; bytes: number } & ({ kind: 'make' } | { kind: 'check'; data: Uint8Array });
interface Done {
  id: number;
  data?: Uint8Array;
  error?: number;
}

/**
 * How far `got` is from the block `seed` makes: 0 when bit-exact, Infinity for another
 * size, otherwise ||expected - got||^2 / ||expected||^2.
 */
export function distance(seed: number, bytes: number, got: Uint8Array): number {
  const expected = soakBlock(seed, bytes);
  const data = Buffer.from(got.buffer, got.byteOffset, got.byteLength);
  if (data.length !== expected.length) return Infinity;
  return expected.equals(data) ? 0 : relativeError(expected, data);
}

if (!isMainThread) {
  parentPort!.on('message', (job: Job) => {
    if (job.kind === 'make') {
      const data = soakBlock(job.seed, job.bytes);
      parentPort!.postMessage({ id: job.id, data } satisfies Done, [data.buffer as ArrayBuffer]);
    } else {
      parentPort!.postMessage({ id: job.id, error: distance(job.seed, job.bytes, job.data) } satisfies Done);
    }
  });
}

export class Verifier {
  private readonly workers: Worker[];
  private readonly load: number[];
  private readonly pending = new Map<number, { resolve: (d: Done) => void; reject: (err: Error) => void; worker: number }>();
  private nextId = 1;

  /** One thread per core but two (the harness's own and the server's event loops), at least one. */
  constructor(threads = Math.max(1, Math.min(12, availableParallelism() - 2))) {
    this.workers = Array.from({ length: threads }, () => new Worker(new URL(import.meta.url)));
    this.load = this.workers.map(() => 0);
    this.workers.forEach((w, i) => {
      w.on('message', (d: Done) => {
        const p = this.pending.get(d.id)!;
        this.pending.delete(d.id);
        this.load[p.worker]!--;
        p.resolve(d);
      });
      // A thread that dies fails its jobs rather than leaving them waiting.
      w.on('error', (err) => {
        for (const [id, p] of this.pending) {
          if (p.worker !== i) continue;
          this.pending.delete(id);
          p.reject(err);
        }
      });
    });
  }

  private run(job: Job, transfer: ArrayBuffer[] = []): Promise<Done> {
    const worker = this.load.indexOf(Math.min(...this.load));
    this.load[worker]!++;
    return new Promise((resolve, reject) => {
      this.pending.set(job.id, { resolve, reject, worker });
      try {
        this.workers[worker]!.postMessage(job, transfer);
      } catch (err) {
        this.pending.delete(job.id);
        this.load[worker]!--;
        reject(err as Error);
      }
    });
  }

  async make(seed: number, bytes: number): Promise<Buffer> {
    const { data } = await this.run({ id: this.nextId++, kind: 'make', seed, bytes });
    return Buffer.from(data!.buffer, data!.byteOffset, data!.byteLength);
  }

  /** The distance of `got` from the block `seed` makes (see distance). `got` is handed over to the thread. */
  async check(seed: number, bytes: number, got: Uint8Array): Promise<number> {
    // A view into a larger response (a batch) would be cloned whole: send its bytes alone.
    // (Buffer's own slice is a view: copy through Uint8Array's.)
    const data = got.byteOffset === 0 && got.byteLength === got.buffer.byteLength ? got : Uint8Array.prototype.slice.call(got);
    return (await this.run({ id: this.nextId++, kind: 'check', seed, bytes, data }, [data.buffer as ArrayBuffer])).error!;
  }

  async close(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}
