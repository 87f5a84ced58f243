/**
 * Pauses the soak's workers between operations, so that a fault meets a known state (no
 * request in flight at a kill, none racing a sweep); in-flight operations finish (or fail)
 * on their own.
 */
import { setTimeout as sleep } from 'node:timers/promises';

export class Gate {
  inFlight = 0;
  private closed: Promise<void> | null = null;
  private open: () => void = () => {};

  async enter(): Promise<void> {
    while (this.closed) await this.closed;
    this.inFlight++;
  }

  leave(): void {
    this.inFlight--;
  }

  close(): void {
    if (!this.closed) this.closed = new Promise((r) => (this.open = r));
  }

  /** Closes the gate and waits until no operation is in flight. */
  async drain(): Promise<void> {
    this.close();
    while (this.inFlight > 0) await sleep(5);
  }

  reopen(): void {
    this.closed = null;
    this.open();
  }
}
