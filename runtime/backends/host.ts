/**
 * The host backend: tiers 0 and 1 in page-aligned host memory, tier 2 through the
 * addon's pread/pwrite slot file, quantization by the C++ reference on the addon's
 * thread pool. It is what runs where there is no GPU, and the reference the GPU backend
 * is tested against.
 */
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import type { Layout } from '../layout.js';
import { addon, openSlotFile, Quantizer, type NativeSlotFile } from '../native.js';
import { nativeCall } from '../errors.js';
import { prefixHashBytes, type Backend, type BackendDescription, type DiskTag } from './backend.js';

export class HostBackend implements Backend {
  private readonly layout: Layout;
  private readonly quantizer: Quantizer;
  private readonly raw: Buffer;
  private readonly quantized: Buffer;
  private readonly file: NativeSlotFile;
  private readonly reason: string;

  constructor(layout: Layout, diskPath: string, direct: boolean, reason: string) {
    this.layout = layout;
    this.reason = reason;
    this.quantizer = new Quantizer(layout.quant);
    const [t0, t1, t2] = layout.tiers;
    this.raw = addon.allocArena(Math.max(1, t0.bytes));
    this.quantized = addon.allocArena(Math.max(1, t1.bytes));
    mkdirSync(dirname(diskPath), { recursive: true });
    this.file = openSlotFile(diskPath, t2.slotBytes, t2.slots, direct);
  }

  describe(): BackendDescription {
    const info = this.file.info();
    return {
      name: 'host',
      reason: this.reason,
      paths: {
        raw: 'host memory',
        quantized: `host memory, C++ reference quantizer on ${addon.poolThreads} threads`,
        disk: `pread/pwrite${info.direct ? ' with O_DIRECT' : ' (buffered)'} on ${info.path}`,
      },
      disk: { path: info.path, direct: info.direct, directReason: info.directReason, preallocated: info.preallocated },
    };
  }

  /** Tier 0 is host memory here: there is no device memory to share. */
  exportRaw(): undefined {
    return undefined;
  }

  private rawOffset(slot: number): number {
    return slot * this.layout.rawBlockBytes;
  }

  private quantOffset(slot: number): number {
    return slot * this.layout.quantizedBlockBytes;
  }

  async writeRaw(slot: number, src: Uint8Array): Promise<void> {
    this.raw.set(src, this.rawOffset(slot));
  }

  async readRaw(slot: number): Promise<Buffer> {
    const off = this.rawOffset(slot);
    return Buffer.from(this.raw.subarray(off, off + this.layout.rawBlockBytes));
  }

  async readQuantized(slot: number): Promise<Buffer> {
    const off = this.quantOffset(slot);
    return Buffer.from(this.quantized.subarray(off, off + this.layout.quantizedBlockBytes));
  }

  quantize(rawSlot: number, quantSlot: number): Promise<void> {
    return this.quantizer.quantizeInto(this.raw, this.rawOffset(rawSlot), this.quantized, this.quantOffset(quantSlot));
  }

  dequantize(quantSlot: number, rawSlot: number): Promise<void> {
    return this.quantizer.dequantizeInto(this.quantized, this.quantOffset(quantSlot), this.raw, this.rawOffset(rawSlot));
  }

  async dequantizeBytes(stored: Buffer): Promise<Buffer> {
    const out = Buffer.alloc(this.layout.rawBlockBytes);
    await this.quantizer.dequantizeInto(stored, 0, out, 0);
    return out;
  }

  spill(quantSlot: number, diskSlot: number, tag: DiskTag): Promise<void> {
    const bytes = this.layout.quantizedBlockBytes;
    return nativeCall(`spill of block ${tag.key}`, () => this.file.write(diskSlot, tag.key, tag.generation, this.quantized, this.quantOffset(quantSlot), bytes, prefixHashBytes(tag)), { blockId: tag.key });
  }

  fill(diskSlot: number, tag: DiskTag, quantSlot: number): Promise<void> {
    const bytes = this.layout.quantizedBlockBytes;
    return nativeCall(`fill of block ${tag.key}`, () => this.file.read(diskSlot, tag.key, tag.generation, this.quantized, this.quantOffset(quantSlot), bytes), { blockId: tag.key });
  }

  async readDisk(diskSlot: number, tag: DiskTag): Promise<Buffer> {
    const out = Buffer.alloc(this.layout.quantizedBlockBytes);
    await nativeCall(`read of block ${tag.key} from disk`, () => this.file.read(diskSlot, tag.key, tag.generation, out, 0, out.length), { blockId: tag.key });
    return out;
  }

  injectDiskFault(op: 'read' | 'write', errno: number, count: number): void {
    this.file.injectFault(op, errno, count);
  }

  async close(): Promise<void> {
    this.file.close();
  }
}
