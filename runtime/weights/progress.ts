/**
 * Progress of a long byte move (a load, a split): bytes done of total, the rate so far and
 * the time left at that rate, as events; and a one-line terminal bar fed by them.
 */
import { performance } from 'node:perf_hooks';
import { formatBytes } from '../bytes.js';

export interface Progress {
  bytesDone: number;
  bytesTotal: number;
  seconds: number;
  /** Decimal gigabytes a second so far. */
  gbps: number;
  /** Seconds left at the rate so far; null before any byte is done. */
  etaSeconds: number | null;
}

export type OnProgress = (p: Progress) => void;

/** Counts bytes and reports each step; the first event (nothing done) goes out at once. */
export class ProgressMeter {
  private readonly start = performance.now();
  private done = 0;

  constructor(readonly total: number, private readonly onProgress?: OnProgress) {
    onProgress?.(this.snapshot());
  }

  add(bytes: number): void {
    this.done += bytes;
    this.onProgress?.(this.snapshot());
  }

  snapshot(): Progress {
    const seconds = (performance.now() - this.start) / 1000;
    const rate = seconds > 0 ? this.done / seconds : 0;
    return {
      bytesDone: this.done,
      bytesTotal: this.total,
      seconds,
      gbps: rate / 1e9,
      etaSeconds: rate > 0 ? (this.total - this.done) / rate : null,
    };
  }
}

/**
 * A progress bar on `stream` (`label [####----] 1.20/8.00 GiB  2.41 GB/s  ETA 3s`), redrawn
 * at most ten times a second; undefined when the stream is not a terminal.
 */
export function terminalProgress(label: string, stream: NodeJS.WriteStream = process.stdout): OnProgress | undefined {
  if (!stream.isTTY) return undefined;
  const width = 30;
  let drawn = -Infinity;
  return (p) => {
    const final = p.bytesDone >= p.bytesTotal;
    if (!final && p.seconds - drawn < 0.1) return;
    drawn = p.seconds;
    const fraction = p.bytesTotal > 0 ? p.bytesDone / p.bytesTotal : 1;
    const filled = Math.round(fraction * width);
    const eta = p.etaSeconds === null ? '?' : `${Math.ceil(p.etaSeconds)}s`;
    const bar = '#'.repeat(filled) + '-'.repeat(width - filled);
    stream.write(`\r${label} [${bar}] ${formatBytes(p.bytesDone)} / ${formatBytes(p.bytesTotal)}  ${p.gbps.toFixed(2)} GB/s  ETA ${eta}\x1b[K${final ? '\n' : ''}`);
  };
}
