/**
 * Threads that make blocks from their seeds and check what reads return, so that the
 * harness's own thread only speaks HTTP: checking a 2 MiB quantized block costs
 * milliseconds, and at hundreds of reads a second one thread would be the bottleneck.
 *
 * The blocks of single writes and reads live in memory shared with the threads (`block`,
 * `makeBlock`, `checkBlock`): made and checked where they lie, neither copied nor handed
 * over. A fresh 2 MiB buffer a request is memory V8 counts, and at a few hundred a second
 * its collections stall the thread that times every request (docs/SOAK.md).
 */
import { availableParallelism } from 'node:os';
import { isMainThread, parentPort, Worker } from 'node:worker_threads';
import { relativeError } from '../block-content.js';
import { soakBlock } from './content.js';

type Job =
  | ({ id: number; seed: number; bytes: number } & ({ kind: 'make' } | { kind: 'check'; data: Uint8Array }))
  | { id: number; kind: 'make-shared' | 'check-shared'; seed: number; slot: number }
  | { id: number; kind: 'share'; memory: SharedArrayBuffer; bytes: number };
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
  let shared: { memory: SharedArrayBuffer; bytes: number } | undefined;
  const slot = (i: number) => Buffer.from(shared!.memory, i * shared!.bytes, shared!.bytes);
  parentPort!.on('message', (job: Job) => {
    switch (job.kind) {
      case 'share':
        shared = { memory: job.memory, bytes: job.bytes };
        return parentPort!.postMessage({ id: job.id } satisfies Done);
      case 'make': {
        const data = soakBlock(job.seed, job.bytes);
        return parentPort!.postMessage({ id: job.id, data } satisfies Done, [data.buffer as ArrayBuffer]);
      }
      case 'check':
        return parentPort!.postMessage({ id: job.id, error: distance(job.seed, job.bytes, job.data) } satisfies Done);
      case 'make-shared':
        soakBlock(job.seed, shared!.bytes).copy(slot(job.slot));
        return parentPort!.postMessage({ id: job.id } satisfies Done);
      case 'check-shared':
        return parentPort!.postMessage({ id: job.id, error: distance(job.seed, shared!.bytes, slot(job.slot)) } satisfies Done);
    }
  });
}

/** A block buffer: one of the shared slots, or a fresh one when all are in use; `release` gives a slot back. */
export interface BlockBuffer {
  data: Buffer;
  /** The shared slot, or -1. */
  slot: number;
  release(): void;
}

/** A buffer outside the shared slots: nothing to give back. */
function unshared(data: Buffer): BlockBuffer {
  return { data, slot: -1, release: () => {} };
}

export class Verifier {
  private readonly workers: Worker[];
  private readonly load: number[];
  private readonly pending = new Map<number, { resolve: (d: Done) => void; reject: (err: Error) => void; worker: number }>();
  private nextId = 1;
  private shared: { memory: SharedArrayBuffer; bytes: number; free: number[] } | undefined;

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

  /** Shares `slots` block buffers of `bytes` with the threads; until then the block methods use fresh buffers. */
  async share(bytes: number, slots: number): Promise<void> {
    const memory = new SharedArrayBuffer(bytes * slots);
    await Promise.all(this.workers.map((_, w) => this.runOn(w, { id: this.nextId++, kind: 'share', memory, bytes })));
    this.shared = { memory, bytes, free: Array.from({ length: slots }, (_, i) => i) };
  }

  /** A buffer for one block of `bytes`: a free shared slot, or a fresh buffer. */
  block(bytes: number): BlockBuffer {
    return this.sharedSlot(bytes) ?? unshared(Buffer.allocUnsafe(bytes));
  }

  /** A free shared slot for one block of `bytes`, if there is one. */
  private sharedSlot(bytes: number): BlockBuffer | undefined {
    const s = this.shared;
    const slot = s?.bytes === bytes ? s.free.pop() : undefined;
    if (slot === undefined) return undefined;
    let held = true;
    const release = () => {
      if (held) s!.free.push(slot);
      held = false;
    };
    return { data: Buffer.from(s!.memory, slot * bytes, bytes), slot, release };
  }

  /** The block `seed` makes, in a shared slot, or else in a fresh buffer from a thread; its holder releases it. */
  async makeBlock(seed: number, bytes: number): Promise<BlockBuffer> {
    const b = this.sharedSlot(bytes);
    if (!b) return unshared(await this.make(seed, bytes));
    try {
      await this.run({ id: this.nextId++, kind: 'make-shared', seed, slot: b.slot });
    } catch (err) {
      b.release();
      throw err;
    }
    return b;
  }

  /**
   * As check; a read into `into`'s shared slot is checked where it lies, and any other
   * block (one of a batch's answer) is copied into a free slot to be checked there: a copy
   * either way, but into memory that is reused rather than a fresh buffer per block.
   */
  async checkBlock(seed: number, bytes: number, got: Uint8Array, into?: BlockBuffer): Promise<number> {
    const inSlot = into !== undefined && into.slot >= 0 && got.buffer === into.data.buffer && got.byteOffset === into.data.byteOffset && got.byteLength === bytes;
    if (inSlot) return this.checkShared(seed, into.slot);
    const copy = got.byteLength === bytes ? this.sharedSlot(bytes) : undefined;
    if (!copy) return this.check(seed, bytes, got);
    try {
      copy.data.set(got);
      return await this.checkShared(seed, copy.slot);
    } finally {
      copy.release();
    }
  }

  private async checkShared(seed: number, slot: number): Promise<number> {
    return (await this.run({ id: this.nextId++, kind: 'check-shared', seed, slot })).error!;
  }

  async close(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}
