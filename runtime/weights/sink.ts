/**
 * Where loaded weights go. A sink is handed the plan once, then aligned read requests
 * (file, file offset, length, arena offset), many in flight at a time. The host sink reads
 * into host memory; a device sink reads into one device allocation (cuFileRead) instead.
 */
import type { FileHandle } from 'node:fs/promises';
import { SpillwayError } from '../errors.js';
import { DeviceSink } from './device-sink.js';
import { openForRead, readExactly } from './format.js';
import { ALIGN, type LoadPlan, type PlannedTensor, type ReadRequest } from './plan.js';

export interface WeightsSink {
  readonly name: string;
  /** Sets aside `plan.arenaBytes` of destination and opens `plan.files`; once, before any read. */
  begin(plan: LoadPlan): Promise<void>;
  /** Delivers at least `request.required` bytes from the file to the arena. */
  read(request: ReadRequest): Promise<void>;
  /** After the last read, whether the load succeeded or not: closes the files; the arena stays. */
  end(): Promise<void>;
}

/**
 * The arena in host memory, read with Node's fs (buffered, on libuv's thread pool, whose
 * size bounds the reads truly in flight: UV_THREADPOOL_SIZE). A Buffer holds at most
 * 4 GiB, so the arena is a list of pages; a request crossing a page boundary is two reads.
 */
export class HostSink implements WeightsSink {
  readonly name = 'host';
  private pages: Buffer[] = [];
  private files: FileHandle[] = [];

  constructor(private readonly pageBytes = 2 ** 30) {
    if (pageBytes < ALIGN || pageBytes % ALIGN !== 0) throw new SpillwayError('INVALID_ARGUMENT', `host arena page of ${pageBytes} bytes is not a multiple of ${ALIGN}`);
  }

  async begin(plan: LoadPlan): Promise<void> {
    this.pages = [];
    for (let left = plan.arenaBytes; left > 0; left -= this.pageBytes) {
      // Every byte a tensor owns is read before it is exposed; padding is never exposed.
      this.pages.push(Buffer.allocUnsafeSlow(Math.min(this.pageBytes, left)));
    }
    const opened = await Promise.allSettled(plan.files.map((f) => openForRead(f.path)));
    this.files = opened.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
    const failed = opened.find((r) => r.status === 'rejected');
    if (failed) {
      await this.end();
      throw failed.reason;
    }
  }

  async read(request: ReadRequest): Promise<void> {
    const fh = this.files[request.file]!;
    for (const span of this.spans(request.arenaOffset, request.required)) {
      await readExactly(fh, request.path, span.page, span.offset, span.length, request.fileOffset + span.done);
    }
  }

  async end(): Promise<void> {
    const files = this.files;
    this.files = [];
    await Promise.all(files.map((f) => f.close()));
  }

  /** A tensor's bytes: a view of the arena, or a copy when it straddles two pages. */
  bytes(t: PlannedTensor): Buffer {
    const spans = [...this.spans(t.arenaOffset, t.bytes)];
    if (spans.length <= 1) return spans[0]?.page.subarray(spans[0].offset, spans[0].offset + t.bytes) ?? Buffer.alloc(0);
    return Buffer.concat(spans.map((s) => s.page.subarray(s.offset, s.offset + s.length)), t.bytes);
  }

  /** The pieces of arena range [at, at + length), one per page it touches. */
  private *spans(at: number, length: number): Generator<{ page: Buffer; offset: number; length: number; done: number }> {
    for (let done = 0; done < length;) {
      const offset = (at + done) % this.pageBytes;
      const n = Math.min(length - done, this.pageBytes - offset);
      yield { page: this.pages[Math.floor((at + done) / this.pageBytes)]!, offset, length: n, done };
      done += n;
    }
  }
}

/** Sinks by name, for the CLI and the bench; a device sink registers here. */
export const SINKS: Record<string, () => WeightsSink> = {
  host: () => new HostSink(),
  gpu: () => new DeviceSink(),
};

export function createSink(name: string): WeightsSink {
  const make = SINKS[name];
  if (!make) throw new SpillwayError('INVALID_ARGUMENT', `unknown weights sink "${name}" (known: ${Object.keys(SINKS).join(', ')})`);
  return make();
}
