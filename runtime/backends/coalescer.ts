/**
 * Coalesces slot-to-slot operations issued in the same turn of the event loop into one
 * native call over slot lists: a batch's dequantizations (or quantizations) become one
 * kernel launch and one stream synchronization instead of one of each per block.
 */
export class SlotPairCoalescer {
  private pending: Array<{ from: number; to: number; resolve: () => void; reject: (err: unknown) => void }> = [];
  private scheduled = false;

  /** `run` moves from[i] to to[i] for every i in one call; `maxBatch` caps a call's length. */
  constructor(private readonly run: (from: Uint32Array, to: Uint32Array) => Promise<void>, private readonly maxBatch: number) {}

  submit(from: number, to: number): Promise<void> {
    return new Promise((resolve, reject) => {
      this.pending.push({ from, to, resolve, reject });
      if (this.pending.length >= this.maxBatch) {
        this.flush();
      } else if (!this.scheduled) {
        // After this turn's I/O callbacks: fills that completed together launch together.
        this.scheduled = true;
        setImmediate(() => this.flush());
      }
    });
  }

  private flush(): void {
    this.scheduled = false;
    const batch = this.pending;
    if (batch.length === 0) return;
    this.pending = [];
    const from = Uint32Array.from(batch, (p) => p.from);
    const to = Uint32Array.from(batch, (p) => p.to);
    this.run(from, to).then(() => batch.forEach((p) => p.resolve()), (err: unknown) => batch.forEach((p) => p.reject(err)));
  }
}
