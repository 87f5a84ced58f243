/**
 * A backend owns where tier bytes live and moves them. Tiers are the layout's, addressed
 * by index: tier 0 holds raw blocks, tier 1 quantized blocks next to it (device memory on
 * the GPU backend, host memory on the host backend), an optional host tier more
 * quantized blocks (pinned host memory, or plain host memory), and the bottom tier is the
 * slot file on disk. The store decides what moves where; a backend only carries out one
 * move at a time per slot and resolves when it is done.
 */
import type { TierIndex } from '../layout.js';

/** The GPU a runtime uses: its visible index, its name and its PCI bus id. */
export interface DeviceName {
  index: number;
  name: string;
  pciBusId: string;
}

export interface BackendDescription {
  name: 'host' | 'gpu';
  /** Why this backend was chosen (or why the GPU one was not). */
  reason: string;
  /** The GPU holding tiers 0 and 1 (GPU backend only). */
  device?: DeviceName;
  /** How each tier's bytes are held and moved, in words. */
  /** By tier name; host only where the layout has a host tier. */
  paths: { raw: string; quantized: string; host?: string; disk: string };
  disk: { path: string; direct: boolean; directReason: string; preallocated: boolean };
}

/** Identifies a block's bytes on disk so that a stale or foreign slot is refused. */
export interface DiskTag {
  blockId: number;
  generation: number;
  /** A committed block's prefix hash (32 hex digits): written into the slot header so that a restart can recover the block. */
  hash?: string | null;
}

/** The slot header's form of a tag's prefix hash. */
export function prefixHashBytes(tag: DiskTag): Buffer | undefined {
  return tag.hash ? Buffer.from(tag.hash, 'hex') : undefined;
}

/** Tier 0 as memory another process on the same GPU can map (zero-copy). */
export interface RawPoolExport {
  /** The arena's cudaIpcMemHandle_t (64 bytes): cudaIpcOpenMemHandle maps it once. */
  handle: Buffer;
  /** The GPU the arena lives on, by name. */
  device: string;
  /** ... by its index in this process's visible devices, and by PCI bus id (the same in every process). */
  deviceIndex: number;
  pciBusId: string;
  /** Bytes of one slot: one raw block; slot i starts at i * slotBytes. */
  slotBytes: number;
  slots: number;
}

export interface Backend {
  describe(): BackendDescription;
  /**
   * Tier 0 for zero-copy access, or undefined where tier 0 is not device memory that can
   * be shared (the host backend). Slot indices are the store's tier-0 slots.
   */
  exportRaw?(): RawPoolExport | undefined;
  /** Copies a whole raw block into a tier-0 slot. */
  writeRaw(slot: number, src: Uint8Array): Promise<void>;
  /** Copies a tier-0 slot out, into `into` (one raw block) when given. */
  readRaw(slot: number, into?: Buffer): Promise<Buffer>;
  /** Copies a quantized memory tier's slot out (stored format). */
  readStored(tier: TierIndex, slot: number): Promise<Buffer>;
  /** Copies stored bytes (verified by the caller) into a quantized memory tier's slot. */
  writeStored(tier: TierIndex, slot: number, stored: Buffer): Promise<void>;
  /** Tier 0 -> tier 1. */
  quantize(rawSlot: number, quantSlot: number): Promise<void>;
  /** Tier 1 -> tier 0. */
  dequantize(quantSlot: number, rawSlot: number): Promise<void>;
  /** Stored bytes -> a raw block (in `into` when given), leaving the tiers untouched. */
  dequantizeBytes(stored: Buffer, into?: Buffer): Promise<Buffer>;
  /** A quantized block from one memory tier's slot to another's (device to host memory, or back). */
  copyStored(fromTier: TierIndex, fromSlot: number, toTier: TierIndex, toSlot: number): Promise<void>;
  /** A quantized memory tier's slot -> a disk slot, with the block's checksum. */
  spill(tier: TierIndex, slot: number, diskSlot: number, tag: DiskTag): Promise<void>;
  /** A disk slot -> a quantized memory tier's slot, verified. */
  fill(diskSlot: number, tag: DiskTag, tier: TierIndex, slot: number): Promise<void>;
  /** Reads a disk slot's stored bytes, verified, without using a memory slot. */
  readDisk(diskSlot: number, tag: DiskTag): Promise<Buffer>;
  /**
   * The disk operations finished since the last call, three numbers each: direction (0 read,
   * 1 write), start and end in seconds. The backend's disk queue runs tiers.disk.inFlight at once.
   */
  takeDiskRuns(): Float64Array;
  /** Test seam: the next `count` disk operations of a kind are held `holdMs`, then fail with errno unless it is 0. */
  injectDiskFault(op: 'read' | 'write', errno: number, count: number, holdMs?: number): void;
  close(): Promise<void>;
}

