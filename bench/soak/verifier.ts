/**
 * Threads that make blocks from their seeds and check what reads return, so that the
 * harness's own thread only speaks HTTP: checking a 2 MiB quantized block costs
 * milliseconds, and at hundreds of reads a second one thread would be the bottleneck.
 *
 * Blocks live in memory shared with the threads: a single write's or read's block in a slot
 * (`block`, `makeBlock`), a batch read's answer in an area (`area`); `checkBlock` checks a
 * block lying there in place, neither copied nor handed over. A fresh 2 MiB buffer a request
 * is memory V8 counts, and at a few hundred a second its collections stall the thread that
 * times every request; a batch's blocks copied out of its answer held that thread for
 * milliseconds at a time (docs/SOAK.md).
 */
import { availableParallelism } from 'node:os';
import { isMainThread, parentPort, Worker } from 'node:worker_threads';
import { relativeError } from '../block-content.js';
import { soakBlock } from './content.js';

type Job =
  | ({ id: number; seed: number; bytes: number } & ({ kind: 'make' } | { kind: 'check'; data: Uint8Array }))
  | { id: number; kind: 'make-shared' | 'check-shared'; seed: number; bytes: number; offset: number }
  | { id: number; kind: 'share'; memory: SharedArrayBuffer };
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
  let shared: SharedArrayBuffer | undefined;
  const at = (job: { offset: number; bytes: number }) => Buffer.from(shared!, job.offset, job.bytes);
  parentPort!.on('message', (job: Job) => {
    switch (job.kind) {
      case 'share':
        shared = job.memory;
        return parentPort!.postMessage({ id: job.id } satisfies Done);
      case 'make': {
        const data = soakBlock(job.seed, job.bytes);
        return parentPort!.postMessage({ id: job.id, data } satisfies Done, [data.buffer as ArrayBuffer]);
      }
      case 'check':
        return parentPort!.postMessage({ id: job.id, error: distance(job.seed, job.bytes, job.data) } satisfies Done);
      case 'make-shared':
        soakBlock(job.seed, job.bytes).copy(at(job));
        return parentPort!.postMessage({ id: job.id } satisfies Done);
      case 'check-shared':
        return parentPort!.postMessage({ id: job.id, error: distance(job.seed, job.bytes, at(job)) } satisfies Done);
    }
  });
}

/** A shared slot or area, or a fresh buffer when all are in use; `release` gives a shared one back. */
export interface BlockBuffer {
  data: Buffer;
  release(): void;
}

/** A buffer outside the shared memory: nothing to give back. */
function unshared(data: Buffer): BlockBuffer {
  return { data, release: () => {} };
}

/** Equal regions of the shared memory from `base` on, taken and given back. */
class Regions {
  private readonly free: number[];
  constructor(private readonly memory: SharedArrayBuffer, base: number, readonly bytes: number, count: number) {
    this.free = Array.from({ length: count }, (_, i) => base + (count - 1 - i) * bytes);
  }

  take(): BlockBuffer | undefined {
    const offset = this.free.pop();
    if (offset === undefined) return undefined;
    let held = true;
    const release = () => {
      if (held) this.free.push(offset);
      held = false;
    };
    return { data: Buffer.from(this.memory, offset, this.bytes), release };
  }
}

export class Verifier {
  private readonly workers: Worker[];
  private readonly load: number[];
  private readonly pending = new Map<number, { resolve: (d: Done) => void; reject: (err: Error) => void; worker: number }>();
  private nextId = 1;
  private shared: { memory: SharedArrayBuffer; slots: Regions; areas: Regions } | undefined;

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
    return this.runOn(this.load.indexOf(Math.min(...this.load)), job, transfer);
  }

  private runOn(worker: number, job: Job, transfer: ArrayBuffer[] = []): Promise<Done> {
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

  /**
   * Shares with the threads `slots` block buffers of `bytes` and `areas` buffers of
   * `areaBytes` for batch answers; until then the methods below use fresh buffers.
   */
  async share(bytes: number, slots: number, areas = 0, areaBytes = 0): Promise<void> {
    const memory = new SharedArrayBuffer(bytes * slots + areaBytes * areas);
    await Promise.all(this.workers.map((_, w) => this.runOn(w, { id: this.nextId++, kind: 'share', memory })));
    this.shared = { memory, slots: new Regions(memory, 0, bytes, slots), areas: new Regions(memory, bytes * slots, areaBytes, areas) };
  }

  /** A buffer for one block of `bytes`: a free shared slot, or a fresh buffer. */
  block(bytes: number): BlockBuffer {
    return this.sharedSlot(bytes) ?? unshared(Buffer.allocUnsafe(bytes));
  }

  /** A buffer of at least `bytes` for a batch's answer: a free shared area, or a fresh buffer. */
  area(bytes: number): BlockBuffer {
    const areas = this.shared?.areas;
    return (areas && bytes <= areas.bytes ? areas.take() : undefined) ?? unshared(Buffer.allocUnsafe(bytes));
  }

  /** A free shared slot for one block of `bytes`, if there is one. */
  private sharedSlot(bytes: number): BlockBuffer | undefined {
    const slots = this.shared?.slots;
    return slots?.bytes === bytes ? slots.take() : undefined;
  }

  /** The block `seed` makes, in a shared slot, or else in a fresh buffer from a thread; its holder releases it. */
  async makeBlock(seed: number, bytes: number): Promise<BlockBuffer> {
    const b = this.sharedSlot(bytes);
    if (!b) return unshared(await this.make(seed, bytes));
    try {
      await this.run({ id: this.nextId++, kind: 'make-shared', seed, bytes, offset: b.data.byteOffset });
    } catch (err) {
      b.release();
      throw err;
    }
    return b;
  }

  /**
   * As check; a block lying in the shared memory (read into a slot, or in a batch's answer
   * read into an area) is checked where it lies, anything else is handed over.
   */
  async checkBlock(seed: number, bytes: number, got: Uint8Array): Promise<number> {
    if (got.buffer !== this.shared?.memory || got.byteLength !== bytes) return this.check(seed, bytes, got);
    return (await this.run({ id: this.nextId++, kind: 'check-shared', seed, bytes, offset: got.byteOffset })).error!;
  }

  async close(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}
