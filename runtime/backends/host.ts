/**
 * The host backend: the memory tiers (raw, quantized, and the host tier where configured)
 * in page-aligned host memory, the disk tier through the addon's pread/pwrite slot file,
 * quantization by the C++ reference on the addon's thread pool. It is what runs where
 * there is no GPU, and the reference the GPU backend is tested against.
 */
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { diskTier, type Layout, type TierIndex } from '../layout.js';
import { addon, openSlotFile, Quantizer, type NativeSlotFile } from '../native.js';
import { nativeCall } from '../errors.js';
import { prefixHashBytes, type Backend, type BackendDescription, type DiskTag } from './backend.js';

export class HostBackend implements Backend {
  private readonly layout: Layout;
  private readonly quantizer: Quantizer;
  /** One arena per memory tier, by tier index: slot i at i * slotBytes. */
  private readonly arenas: Buffer[];
  private readonly file: NativeSlotFile;
  private readonly reason: string;

  /** `diskInFlight`: disk operations at once (tiers.disk.inFlight). */
  constructor(layout: Layout, diskPath: string, direct: boolean, diskInFlight: number, reason: string) {
    this.layout = layout;
    this.reason = reason;
    this.quantizer = new Quantizer(layout.quant);
    const disk = diskTier(layout);
    this.arenas = layout.tiers.filter((t) => t.kind !== 'disk').map((t) => addon.allocArena(Math.max(1, t.bytes)));
    mkdirSync(dirname(diskPath), { recursive: true });
    this.file = openSlotFile(diskPath, disk.slotBytes, disk.slots, direct, diskInFlight);
  }

  describe(): BackendDescription {
    const info = this.file.info();
    return {
      name: 'host',
      reason: this.reason,
      paths: {
        raw: 'host memory',
        quantized: `host memory, C++ reference quantizer on ${addon.poolThreads} threads`,
        ...(this.arenas.length > 2 ? { host: 'host memory' } : {}),
        disk: `pread/pwrite${info.direct ? ' with O_DIRECT' : ' (buffered)'} on ${info.path}`,
      },
      disk: { path: info.path, direct: info.direct, directReason: info.directReason, preallocated: info.preallocated },
    };
  }

  /** Tier 0 is host memory here: there is no device memory to share. */
  exportRaw(): undefined {
    return undefined;
  }

  /** A memory tier's slot as a view of its arena. */
  private slotView(tier: TierIndex, slot: number): Buffer {
    const bytes = this.layout.tiers[tier]!.slotBytes;
    return this.arenas[tier]!.subarray(slot * bytes, (slot + 1) * bytes);
  }

  async writeRaw(slot: number, src: Uint8Array): Promise<void> {
    this.slotView(0, slot).set(src);
  }

  async readRaw(slot: number, into?: Buffer): Promise<Buffer> {
    const slotBytes = this.slotView(0, slot);
    if (!into) return Buffer.from(slotBytes);
    this.checkRawBlock(into);
    slotBytes.copy(into);
    return into;
  }

  async readStored(tier: TierIndex, slot: number): Promise<Buffer> {
    return Buffer.from(this.slotView(tier, slot));
  }

  async writeStored(tier: TierIndex, slot: number, stored: Buffer): Promise<void> {
    this.slotView(tier, slot).set(stored);
  }

  quantize(rawSlot: number, quantSlot: number): Promise<void> {
    return this.quantizer.quantizeInto(this.slotView(0, rawSlot), 0, this.slotView(1, quantSlot), 0);
  }

  dequantize(quantSlot: number, rawSlot: number): Promise<void> {
    return this.quantizer.dequantizeInto(this.slotView(1, quantSlot), 0, this.slotView(0, rawSlot), 0);
  }

  async copyStored(fromTier: TierIndex, fromSlot: number, toTier: TierIndex, toSlot: number): Promise<void> {
    this.slotView(fromTier, fromSlot).copy(this.slotView(toTier, toSlot));
  }

  async dequantizeBytes(stored: Buffer, into?: Buffer): Promise<Buffer> {
    const out = into ?? Buffer.alloc(this.layout.rawBlockBytes);
    this.checkRawBlock(out);
    await this.quantizer.dequantizeInto(stored, 0, out, 0);
    return out;
  }

  /** The GPU backend's addon refuses a wrong-sized buffer the same way. */
  private checkRawBlock(buf: Buffer): void {
    if (buf.length !== this.layout.rawBlockBytes) throw new RangeError(`into must be ${this.layout.rawBlockBytes} bytes, not ${buf.length}`);
  }

  spill(tier: TierIndex, slot: number, diskSlot: number, tag: DiskTag): Promise<void> {
    const src = this.slotView(tier, slot);
    return nativeCall(`spill of block ${tag.blockId}`, () => this.file.write(diskSlot, tag.blockId, tag.generation, src, 0, src.length, prefixHashBytes(tag)), { blockId: tag.blockId });
  }

  fill(diskSlot: number, tag: DiskTag, tier: TierIndex, slot: number): Promise<void> {
    const dst = this.slotView(tier, slot);
    return nativeCall(`fill of block ${tag.blockId}`, () => this.file.read(diskSlot, tag.blockId, tag.generation, dst, 0, dst.length), { blockId: tag.blockId });
  }

  async readDisk(diskSlot: number, tag: DiskTag): Promise<Buffer> {
    const out = Buffer.alloc(this.layout.quantizedBlockBytes);
    await nativeCall(`read of block ${tag.blockId} from disk`, () => this.file.read(diskSlot, tag.blockId, tag.generation, out, 0, out.length), { blockId: tag.blockId });
    return out;
  }

  takeDiskRuns(): Float64Array {
    return this.file.takeDiskRuns();
  }

  injectDiskFault(op: 'read' | 'write', errno: number, count: number, holdMs?: number): void {
    this.file.injectFault(op, errno, count, holdMs);
  }

  async close(): Promise<void> {
    this.file.close();
  }
}
