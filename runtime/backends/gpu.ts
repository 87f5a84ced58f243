/**
 * The GPU backend: tiers 0 and 1 in HBM (one device arena each, carved into slots), the
 * CUDA kernels for quantization, and the disk tier through cuFile or, where cuFile cannot
 * be used, the POSIX path with pinned bounce buffers. Which disk path runs, and why, is
 * part of describe(): never a silent fallback.
 */
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { fromNative, nativeCall, SpillwayError } from '../errors.js';
import type { Layout } from '../layout.js';
import { openGpuTiers, type NativeGpuTiers } from '../native.js';
import type { Backend, BackendDescription, DiskTag, RawPoolExport } from './backend.js';
import { SlotPairCoalescer } from './coalescer.js';

/** Most blocks one kernel launch quantizes or dequantizes when calls are coalesced. */
const MAX_LAUNCH_BLOCKS = 1024;

export class GpuBackend implements Backend {
  private readonly tiers: NativeGpuTiers;
  private readonly reason: string;
  private readonly rawSlots: number;
  private readonly quantizes: SlotPairCoalescer;
  private readonly dequantizes: SlotPairCoalescer;

  constructor(layout: Layout, diskPath: string, direct: boolean, io: 'auto' | 'cufile' | 'posix', device: number, reason: string) {
    this.reason = reason;
    this.rawSlots = layout.tiers[0].slots;
    mkdirSync(dirname(diskPath), { recursive: true });
    const tiers = openGpuTiers({
      params: layout.quant,
      rawSlots: layout.tiers[0].slots,
      quantSlots: layout.tiers[1].slots,
      diskPath,
      diskSlots: layout.tiers[2].slots,
      diskSlotBytes: layout.tiers[2].slotBytes,
      direct,
      io,
      device,
    });
    if (!tiers) throw new SpillwayError('INVALID_CONFIG', 'the addon was built without CUDA', { field: 'backend' });
    this.tiers = tiers;
    this.quantizes = new SlotPairCoalescer((raw, quant) => nativeCall('quantize', () => tiers.quantize(raw, quant)), MAX_LAUNCH_BLOCKS);
    this.dequantizes = new SlotPairCoalescer((quant, raw) => nativeCall('dequantize', () => tiers.dequantize(quant, raw)), MAX_LAUNCH_BLOCKS);
  }

  describe(): BackendDescription {
    const i = this.tiers.info();
    const disk = i.io === 'cufile'
      ? `cuFileWrite/cuFileRead (${i.cufileMode === 'gds' ? 'GPUDirect Storage' : 'compatibility mode'}) on ${i.path}`
      : `POSIX pread/pwrite through pinned bounce buffers on ${i.path}`;
    const { index, name, pciBusId } = i.device;
    const gpu = `GPU ${index} (${name}, ${pciBusId})`;
    return {
      name: 'gpu',
      reason: this.reason,
      device: { index, name, pciBusId },
      paths: { raw: `HBM on ${gpu}`, quantized: `HBM on ${gpu}, CUDA quantization kernels`, disk: `${disk}: ${i.ioReason}` },
      disk: { path: i.path, direct: i.direct, directReason: i.directReason, preallocated: i.preallocated },
    };
  }

  /** Tier 0's arena as a CUDA IPC handle: slot i at byte i * rawSlotBytes of the mapping. */
  exportRaw(): RawPoolExport {
    try {
      const i = this.tiers.info();
      return {
        handle: this.tiers.ipcHandle(0), device: i.device.name, deviceIndex: i.device.index, pciBusId: i.device.pciBusId,
        slotBytes: i.rawSlotBytes, slots: this.rawSlots,
      };
    } catch (err) {
      throw fromNative(err, 'export of tier 0');
    }
  }

  writeRaw(slot: number, src: Uint8Array): Promise<void> {
    const buf = Buffer.isBuffer(src) ? src : Buffer.from(src.buffer, src.byteOffset, src.byteLength);
    return nativeCall('write to tier 0', () => this.tiers.writeRaw(slot, buf));
  }

  readRaw(slot: number): Promise<Buffer> {
    return nativeCall('read from tier 0', () => this.tiers.readSlot(0, slot));
  }

  readQuantized(slot: number): Promise<Buffer> {
    return nativeCall('read from tier 1', () => this.tiers.readSlot(1, slot));
  }

  quantize(rawSlot: number, quantSlot: number): Promise<void> {
    return this.quantizes.submit(rawSlot, quantSlot);
  }

  dequantize(quantSlot: number, rawSlot: number): Promise<void> {
    return this.dequantizes.submit(quantSlot, rawSlot);
  }

  dequantizeBytes(stored: Buffer): Promise<Buffer> {
    return nativeCall('dequantize', () => this.tiers.dequantizeBytes(stored));
  }

  spill(quantSlot: number, diskSlot: number, tag: DiskTag): Promise<void> {
    return nativeCall(`spill of block ${tag.key}`, () => this.tiers.spill(1, quantSlot, diskSlot, tag.key, tag.generation), { blockId: tag.key });
  }

  fill(diskSlot: number, tag: DiskTag, quantSlot: number): Promise<void> {
    return nativeCall(`fill of block ${tag.key}`, () => this.tiers.fill(1, quantSlot, diskSlot, tag.key, tag.generation), { blockId: tag.key });
  }

  readDisk(diskSlot: number, tag: DiskTag): Promise<Buffer> {
    return nativeCall(`read of block ${tag.key} from disk`, () => this.tiers.readDisk(diskSlot, tag.key, tag.generation), { blockId: tag.key });
  }

  injectDiskFault(op: 'read' | 'write', errno: number, count: number): void {
    this.tiers.injectFault(op, errno, count);
  }

  async close(): Promise<void> {
    this.tiers.close();
  }
}
