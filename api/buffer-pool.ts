/**
 * Buffers the block routes reuse: request bodies of a declared length and the blocks
 * that single and batch reads answer with. Every buffer a request allocates is memory outside V8's
 * heap that V8 still counts; at a few hundred 2 MiB blocks a second that churn alone sets
 * off a young-generation collection every few tens of milliseconds, each one promoting the
 * objects of every request then in flight, so that full collections follow several times a
 * second and stall every request (docs/ARCHITECTURE.md, "Request buffers"). A reused buffer
 * costs V8 nothing.
 *
 * Sizes are rounded up to whole units (one raw block), so that a batch of n blocks and its
 * few bytes of msgpack around them reuse one size class. At most `maxCachedBytes` wait
 * unused; a buffer given back past that is left to the collector.
 */
import type { ServerResponse } from 'node:http';

export class BufferPool {
  readonly unitBytes: number;
  readonly maxCachedBytes: number;
  private readonly free = new Map<number, ArrayBuffer[]>();
  /** Buffers taken and not given back: giving one back twice would lend it to two requests. */
  private readonly lent = new WeakSet<ArrayBuffer>();
  private cachedBytes = 0;

  constructor(unitBytes: number, maxCachedBytes: number) {
    this.unitBytes = unitBytes;
    this.maxCachedBytes = maxCachedBytes;
  }

  /** A buffer of `bytes` (its contents undefined); smaller than half a unit, a fresh one not pooled. */
  take(bytes: number): Buffer {
    if (bytes < this.unitBytes / 2) return Buffer.allocUnsafe(bytes);
    const size = Math.ceil(bytes / this.unitBytes) * this.unitBytes;
    const reused = this.free.get(size)?.pop();
    if (reused) this.cachedBytes -= size;
    const memory = reused ?? Buffer.allocUnsafeSlow(size).buffer;
    this.lent.add(memory);
    return Buffer.from(memory, 0, bytes);
  }

  /** Gives back a buffer `take` lent, once nothing reads or writes it any more; others are ignored. */
  give(buf: Buffer): void {
    const memory = buf.buffer as ArrayBuffer;
    if (!this.lent.delete(memory)) return;
    const size = memory.byteLength;
    if (this.cachedBytes + size > this.maxCachedBytes) return;
    let list = this.free.get(size);
    if (!list) this.free.set(size, (list = []));
    list.push(memory);
    this.cachedBytes += size;
  }

  /**
   * Gives `bufs` back once `response` has handed its last byte to the socket; a response
   * that closes before that leaves them to the collector (the socket may still hold them).
   * One listener for them all: a batch's blocks would pass the emitter's leak warning.
   */
  giveWhenSent(response: ServerResponse, bufs: Buffer[]): void {
    response.once('finish', () => bufs.forEach((b) => this.give(b)));
  }

  /** Bytes waiting to be reused. */
  get idleBytes(): number {
    return this.cachedBytes;
  }
}
