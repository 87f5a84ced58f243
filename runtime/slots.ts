/** A tier's slots: a fixed count handed out from a free list, lowest index first. */
export class SlotPool {
  readonly size: number;
  private readonly free: number[];

  constructor(size: number) {
    this.size = size;
    // Reversed so that pop() hands out slot 0 first: tests and dumps read naturally.
    this.free = Array.from({ length: size }, (_, i) => size - 1 - i);
  }

  get available(): number {
    return this.free.length;
  }

  get used(): number {
    return this.size - this.free.length;
  }

  take(): number | undefined {
    return this.free.pop();
  }

  /** Takes these particular slots out of the free list (blocks found in them at start). */
  claim(slots: number[]): void {
    const taken = new Set(slots);
    const free = this.free.filter((s) => !taken.has(s));
    this.free.length = 0;
    this.free.push(...free);
  }

  release(slot: number): void {
    this.free.push(slot);
  }
}
