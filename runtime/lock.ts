/**
 * A per-block mutual exclusion: one operation moves or reads a block's slots at a time.
 * Evictors use tryAcquire so that they pass over busy blocks instead of waiting on them.
 */
export class BlockLock {
  private held = false;
  /** Made on first contention: every block has a lock, few ever have a waiter. */
  private waiters: Array<() => void> | null = null;

  get locked(): boolean {
    return this.held;
  }

  tryAcquire(): boolean {
    if (this.held) return false;
    this.held = true;
    return true;
  }

  acquire(): Promise<void> {
    if (this.tryAcquire()) return Promise.resolve();
    return new Promise((resolve) => (this.waiters ??= []).push(resolve));
  }

  /** Hands the lock straight to the next waiter, if any, so that no one can barge in. */
  release(): void {
    const next = this.waiters?.shift();
    if (next) next();
    else this.held = false;
  }
}

/** At most `permits` holders at once; the others are served in the order they came. */
export class Semaphore {
  private readonly waiters: Array<() => void> = [];

  constructor(private permits: number) {}

  acquire(): Promise<void> {
    if (this.permits > 0) {
      this.permits--;
      return Promise.resolve();
    }
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  /** Hands the permit straight to the next waiter, if any. */
  release(): void {
    const next = this.waiters.shift();
    if (next) next();
    else this.permits++;
  }
}
