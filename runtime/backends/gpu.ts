/**
 * The GPU backend: tiers 0 and 1 in HBM (one device arena each, carved into slots), the
 * host tier (where configured) in pinned host memory reached by DMA copies, the CUDA
 * kernels for quantization, and the disk tier through cuFile or, where cuFile cannot be
 * used, the POSIX path with pinned bounce buffers. Which disk path runs, and why, is
 * part of describe(): never a silent fallback.
 */
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { fromNative, nativeCall, SpillwayError } from '../errors.js';
import type { IoMode } from '../io-mode.js';
import { diskTier, tierNamed, type Layout, type TierIndex } from '../layout.js';
import { openGpuTiers, type NativeGpuTiers } from '../native.js';
import { prefixHashBytes, type Backend, type BackendDescription, type DiskTag, type RawPoolExport } from './backend.js';
import { SlotPairCoalescer } from './coalescer.js';

/** Most blocks one kernel launch quantizes or dequantizes when calls are coalesced. */
const MAX_LAUNCH_BLOCKS = 1024;

export class GpuBackend implements Backend {
  private readonly tiers: NativeGpuTiers;
  private readonly reason: string;
  private readonly rawSlots: number;
  private readonly quantizes: SlotPairCoalescer;
  private readonly dequantizes: SlotPairCoalescer;
  /** Device-to-host and host-to-device copies of quantized blocks, coalesced per direction. */
  private readonly copies: Map<string, SlotPairCoalescer> = new Map();

  /** `diskInFlight`: disk operations at once (tiers.disk.inFlight). */
  constructor(layout: Layout, diskPath: string, direct: boolean, diskInFlight: number, io: IoMode, device: number, reason: string) {
    this.reason = reason;
    this.rawSlots = layout.tiers[0]!.slots;
    mkdirSync(dirname(diskPath), { recursive: true });
    const disk = diskTier(layout);
    const tiers = openGpuTiers({
      params: layout.quant,
      rawSlots: layout.tiers[0]!.slots,
      quantSlots: layout.tiers[1]!.slots,
      hostSlots: tierNamed(layout, 'host')?.slots ?? 0,
      diskPath,
      diskSlots: disk.slots,
      diskSlotBytes: disk.slotBytes,
      direct,
      io,
      device,
      inFlight: diskInFlight,
    });
    if (!tiers) throw new SpillwayError('INVALID_CONFIG', 'the addon was built without CUDA', { field: 'backend' });
    this.tiers = tiers;
    this.quantizes = new SlotPairCoalescer((raw, quant) => nativeCall('quantize', () => tiers.quantize(raw, quant)), MAX_LAUNCH_BLOCKS);
    this.dequantizes = new SlotPairCoalescer((quant, raw) => nativeCall('dequantize', () => tiers.dequantize(quant, raw)), MAX_LAUNCH_BLOCKS);
    for (const [from, to] of [[1, 2], [2, 1]] as const) {
      this.copies.set(`${from}${to}`, new SlotPairCoalescer((f, t) => nativeCall(`copy from tier ${from} to tier ${to}`, () => tiers.copy(from, f, to, t)), MAX_LAUNCH_BLOCKS));
    }
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
      paths: {
        raw: `HBM on ${gpu}`,
        quantized: `HBM on ${gpu}, CUDA quantization kernels`,
        ...(i.hostArenaBytes > 0 ? { host: 'pinned host memory, DMA copies to and from tier 1' } : {}),
        disk: `${disk}: ${i.ioReason}`,
      },
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

  readRaw(slot: number, into?: Buffer): Promise<Buffer> {
    return nativeCall('read from tier 0', () => this.tiers.readSlot(0, slot, into));
  }

  readStored(tier: TierIndex, slot: number): Promise<Buffer> {
    return nativeCall(`read from tier ${tier}`, () => this.tiers.readSlot(memoryTier(tier), slot));
  }

  writeStored(tier: TierIndex, slot: number, stored: Buffer): Promise<void> {
    return nativeCall(`write to tier ${tier}`, () => this.tiers.writeSlot(memoryTier(tier), slot, stored));
  }

  quantize(rawSlot: number, quantSlot: number): Promise<void> {
    return this.quantizes.submit(rawSlot, quantSlot);
  }

  dequantize(quantSlot: number, rawSlot: number): Promise<void> {
    return this.dequantizes.submit(quantSlot, rawSlot);
  }

  dequantizeBytes(stored: Buffer, into?: Buffer): Promise<Buffer> {
    return nativeCall('dequantize', () => this.tiers.dequantizeBytes(stored, into));
  }

  copyStored(fromTier: TierIndex, fromSlot: number, toTier: TierIndex, toSlot: number): Promise<void> {
    const copies = this.copies.get(`${fromTier}${toTier}`);
    if (!copies) throw new SpillwayError('INTERNAL', `no copy path from tier ${fromTier} to tier ${toTier}`);
    return copies.submit(fromSlot, toSlot);
  }

  spill(tier: TierIndex, slot: number, diskSlot: number, tag: DiskTag): Promise<void> {
    return nativeCall(`spill of block ${tag.blockId}`, () => this.tiers.spill(quantizedTier(tier), slot, diskSlot, tag.blockId, tag.generation, prefixHashBytes(tag)), { blockId: tag.blockId });
  }

  fill(diskSlot: number, tag: DiskTag, tier: TierIndex, slot: number): Promise<void> {
    return nativeCall(`fill of block ${tag.blockId}`, () => this.tiers.fill(quantizedTier(tier), slot, diskSlot, tag.blockId, tag.generation), { blockId: tag.blockId });
  }

  readDisk(diskSlot: number, tag: DiskTag): Promise<Buffer> {
    return nativeCall(`read of block ${tag.blockId} from disk`, () => this.tiers.readDisk(diskSlot, tag.blockId, tag.generation), { blockId: tag.blockId });
  }

  takeDiskRuns(): Float64Array {
    return this.tiers.takeDiskRuns();
  }

  injectDiskFault(op: 'read' | 'write', errno: number, count: number, holdMs?: number): void {
    this.tiers.injectFault(op, errno, count, holdMs);
  }

  async close(): Promise<void> {
    this.tiers.close();
  }
}

/** The addon's memory tiers are the ladder's, by index: 0 raw, 1 quantized, 2 host. */
function memoryTier(tier: TierIndex): 0 | 1 | 2 {
  if (tier !== 0 && tier !== 1 && tier !== 2) throw new SpillwayError('INTERNAL', `tier ${tier} is not a memory tier of the GPU backend`);
  return tier;
}

function quantizedTier(tier: TierIndex): 1 | 2 {
  const t = memoryTier(tier);
  if (t === 0) throw new SpillwayError('INTERNAL', 'tier 0 holds raw blocks, not quantized ones');
  return t;
}
