/**
 * Eviction policies. A policy keeps, per tier, the blocks holding a slot there and says
 * in which order to consider them as victims; the store decides which of those it may
 * actually move (not pinned, not busy).
 */
import { LRUCache } from 'lru-cache';

export interface EvictionPolicy {
  /** The block now holds a slot in this tier. */
  insert(blockId: number): void;
  /** The block was read or written. */
  touch(blockId: number): void;
  /** The block no longer holds a slot in this tier. */
  remove(blockId: number): void;
  /** Candidate victims, most evictable first. */
  candidates(): Iterable<number>;
}

/** Least recently used first, on lru-cache. */
export class LruPolicy implements EvictionPolicy {
  private readonly order: LRUCache<number, true>;

  constructor(capacity: number) {
    this.order = new LRUCache<number, true>({ max: Math.max(1, capacity) + 1 });
  }

  insert(blockId: number): void {
    this.order.set(blockId, true);
  }

  touch(blockId: number): void {
    this.order.get(blockId);
  }

  remove(blockId: number): void {
    this.order.delete(blockId);
  }

  candidates(): Iterable<number> {
    return this.order.rkeys();
  }
}

/** First in, first out: reads do not refresh a block. */
export class FifoPolicy implements EvictionPolicy {
  private readonly order = new Set<number>();

  insert(blockId: number): void {
    this.order.add(blockId);
  }

  touch(): void {}

  remove(blockId: number): void {
    this.order.delete(blockId);
  }

  candidates(): Iterable<number> {
    return this.order.values();
  }
}

export type PolicyName = 'lru' | 'fifo';

export function createPolicy(name: PolicyName, capacity: number): EvictionPolicy {
  return name === 'lru' ? new LruPolicy(capacity) : new FifoPolicy();
}
