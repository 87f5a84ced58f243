/**
 * The weights arena in device memory: one cudaMalloc, filled by cuFileRead straight from
 * the shard files (or pread through pinned bounce buffers where cuFile cannot be used,
 * said in `describe()`), many reads in flight on the addon's worker threads.
 */
import { fromNative, nativeCall, SpillwayError } from '../errors.js';
import type { IoMode, IoPath } from '../io-mode.js';
import { openDeviceArena, type NativeDeviceArena } from '../native.js';
import type { LoadPlan, PlannedTensor, ReadRequest } from './plan.js';
import type { WeightsSink } from './sink.js';

export class DeviceSink implements WeightsSink {
  readonly name = 'gpu';
  private arena: NativeDeviceArena | undefined;

  private readonly device: number;
  private readonly io: IoMode;
  private readonly maxReadBytes: number;

  /** `device`: the visible device index the arena is allocated on (0 by default). */
  constructor(options: { device?: number; io?: IoMode; maxReadBytes?: number } = {}) {
    this.device = options.device ?? 0;
    this.io = options.io ?? 'auto';
    this.maxReadBytes = options.maxReadBytes ?? 16 * 2 ** 20;
  }

  async begin(plan: LoadPlan): Promise<void> {
    const longest = Math.max(0, ...plan.requests.map((r) => r.length));
    this.arena = openDeviceArena(plan.arenaBytes, { io: this.io, maxReadBytes: Math.max(this.maxReadBytes, longest), device: this.device });
    if (!this.arena) throw new SpillwayError('INVALID_CONFIG', 'the gpu weights sink needs the addon built with CUDA', { field: 'sink' });
    try {
      this.arena.openFiles(plan.files.map((f) => f.path));
    } catch (err) {
      this.arena.free();
      this.arena = undefined;
      throw fromNative(err, 'opening the weights files');
    }
  }

  read(r: ReadRequest): Promise<void> {
    const arena = this.live();
    return nativeCall(`weights read from ${r.path}`, () => arena.read(r.file, r.fileOffset, r.length, r.required, r.arenaOffset));
  }

  async end(): Promise<void> {
    this.arena?.closeFiles();
  }

  /** A tensor's bytes copied back to the host: for checks, not for serving. */
  bytes(t: PlannedTensor): Promise<Buffer> {
    const arena = this.live();
    return nativeCall('copy from the weights arena', () => arena.copyOut(t.arenaOffset, t.bytes));
  }

  describe(): { bytes: number; io: IoPath; ioReason: string } {
    const { bytes, io, ioReason } = this.live().info();
    return { bytes, io, ioReason };
  }

  /** The arena's cudaIpcMemHandle_t (64 bytes), for an engine process on the same GPU. */
  ipcHandle(): Buffer {
    const arena = this.live();
    try {
      return arena.ipcHandle();
    } catch (err) {
      throw fromNative(err, 'export of the weights arena');
    }
  }

  free(): void {
    this.arena?.free();
    this.arena = undefined;
  }

  private live(): NativeDeviceArena {
    if (!this.arena) throw new SpillwayError('CLOSED', 'the weights arena is not allocated');
    return this.arena;
  }
}
