/**
 * The typed facade over the native addon (build/spillway.node): the only module that
 * imports it. The addon constructs its errors as NativeError, handed over here at load:
 * SpillwayErrors with the addon's code.
 */
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { projectRoot } from './config.js';
import type { Dtype } from './dtype.js';
import { NativeError, nativeCall, nativeSync } from './errors.js';
import type { IoMode, IoPath } from './io-mode.js';

const DTYPE_CODE: Record<Dtype, number> = { fp32: 0, fp16: 1, bf16: 2 };

export interface QuantParams {
  layers: number;
  kvHeads: number;
  headDim: number;
  tokens: number;
  dtype: Dtype;
  keyBits: number;
  valueBits: number;
  variant: 'mse' | 'prod';
  seed: number;
  /** Block format to write (docs/QUANTIZATION.md); this build's when absent. Reads take the
   * version from the block's header. */
  formatVersion?: number;
  /** The first `first` and last `last` layers at their own bit widths (format 2). */
  outerLayers?: OuterLayers;
}

export interface OuterLayers {
  first: number;
  last: number;
  keyBits: number;
  valueBits: number;
}

/** Bytes of one group's record (one K or V head of one layer, norms and masks included). */
export interface RecordBytes {
  inner: { key: number; value: number };
  outer: { key: number; value: number };
}

interface NativeParams {
  layers: number; kvHeads: number; headDim: number; tokens: number; dtype: number;
  keyBitsX2: number; valueBitsX2: number; variant: number; seed: number; version: number;
  outerFirst: number; outerLast: number; outerKeyBitsX2: number; outerValueBitsX2: number;
}

export interface SlotFileInfo {
  path: string;
  direct: boolean;
  directReason: string;
  preallocated: boolean;
  slotBytes: number;
  slotCount: number;
}

export interface NativeSlotFile {
  /** `prefixHash`: 16 bytes for a committed block, recorded in the slot header for recovery. */
  write(slot: number, blockId: number, generation: number, src: Buffer, srcOffset: number, length: number, prefixHash?: Buffer): Promise<void>;
  read(slot: number, blockId: number, generation: number, dst: Buffer, dstOffset: number, length: number): Promise<void>;
  close(): void;
  /** The next `count` operations of a kind are held `holdMs`, then fail with `errno` unless it is 0 (a test seam). */
  injectFault(op: 'read' | 'write', errno: number, count: number, holdMs?: number): void;
  info(): SlotFileInfo;
  /** (direction 0 read / 1 write, start s, end s) of each read or write finished since the last call. */
  takeDiskRuns(): Float64Array;
}

/** A GPU by its index within the visible devices, and what names it across processes. */
export interface GpuIdentity {
  index: number;
  name: string;
  /** The PCI bus id (domain:bus:device.function): the same whatever CUDA_VISIBLE_DEVICES says. */
  pciBusId: string;
  computeCapability: string;
  totalBytes: number;
}

export interface ProbeResult {
  cudaBuilt: boolean;
  /** The device asked about (`device`): present when it is visible and answers. */
  gpu: {
    present: boolean; error: string; count: number; device: number; name: string; pciBusId: string; computeCapability: string;
    totalBytes: number; freeBytes: number; driverVersion: number; runtimeVersion: number;
  };
  /** Every visible device, in index order. */
  gpus: GpuIdentity[];
  cufile: { status: 'not-found' | 'driver-error' | 'compat' | 'gds'; detail: string; nvfsVersion: string };
}

export interface GpuTiersInfo {
  device: GpuIdentity;
  io: IoPath;
  cufileMode: '' | 'compat' | 'gds';
  ioReason: string;
  path: string;
  direct: boolean;
  directReason: string;
  preallocated: boolean;
  rawArenaBytes: number;
  quantArenaBytes: number;
  /** Pinned host memory of the host tier; 0 without one. */
  hostArenaBytes: number;
  stagingBuffers: number;
  rawSlotBytes: number;
  quantSlotBytes: number;
}

/** The GPU backend's tiers (addon/src/gpu/gpu_tiers.cc): 0 raw and 1 quantized in HBM, 2 quantized in pinned host memory. */
export interface NativeGpuTiers {
  writeRaw(slot: number, src: Buffer): Promise<void>;
  /** Copies one block (raw for tier 0, stored format for 1 and 2) into a slot. */
  writeSlot(tier: 0 | 1 | 2, slot: number, src: Buffer): Promise<void>;
  /** Tiers: 0 raw (device), 1 quantized (device), 2 quantized (pinned host memory). */
  readSlot(tier: 0 | 1 | 2, slot: number, out?: Buffer): Promise<Buffer>;
  quantize(rawSlots: Uint32Array, quantSlots: Uint32Array): Promise<void>;
  dequantize(quantSlots: Uint32Array, rawSlots: Uint32Array): Promise<void>;
  dequantizeBytes(stored: Buffer, out?: Buffer): Promise<Buffer>;
  /** Quantized blocks between tier 1 and tier 2, fromSlots[i] to toSlots[i], one synchronization. */
  copy(fromTier: 1 | 2, fromSlots: Uint32Array, toTier: 1 | 2, toSlots: Uint32Array): Promise<void>;
  spill(tier: 0 | 1 | 2, slot: number, diskSlot: number, blockId: number, generation: number, prefixHash?: Buffer): Promise<void>;
  fill(tier: 0 | 1 | 2, slot: number, diskSlot: number, blockId: number, generation: number): Promise<void>;
  readDisk(diskSlot: number, blockId: number, generation: number): Promise<Buffer>;
  /** The next `count` operations of a kind are held `holdMs`, then fail with `errno` unless it is 0 (a test seam). */
  injectFault(op: 'read' | 'write', errno: number, count: number, holdMs?: number): void;
  info(): GpuTiersInfo;
  /** The arena's cudaIpcMemHandle_t (64 bytes). */
  ipcHandle(tier: 0 | 1): Buffer;
  /** (direction 0 read / 1 write, start s, end s) of each spill, fill or disk read finished since the last call. */
  takeDiskRuns(): Float64Array;
  close(): void;
}

export interface GpuTiersOptions {
  params: QuantParams;
  rawSlots: number;
  quantSlots: number;
  /** Slots of the pinned host tier; 0 for none. */
  hostSlots: number;
  diskPath: string;
  diskSlots: number;
  diskSlotBytes: number;
  direct: boolean;
  io: IoMode;
  /** The visible device index the arenas, streams and kernels are on. */
  device: number;
  /** Disk operations at once: the disk queue's threads (tiers.disk.inFlight); 16 where absent. */
  inFlight?: number;
}

/** One device allocation that files are read into (addon/src/gpu/device_arena.cc). */
export interface NativeDeviceArena {
  openFiles(paths: string[]): void;
  read(file: number, fileOffset: number, length: number, required: number, arenaOffset: number): Promise<void>;
  closeFiles(): void;
  copyOut(offset: number, length: number): Promise<Buffer>;
  ipcHandle(): Buffer;
  info(): { bytes: number; device: number; io: IoPath; ioReason: string; registered: boolean };
  free(): void;
}

/** The slot header's constants (addon/src/io/disk_io.cc), for reading scanned headers. */
export interface SlotFormat {
  magic: number;
  version: number;
  headerBytes: number;
  /** Bytes `scanSlotHeads` returns per slot: the slot header, then the quantized block's header. */
  scanBytes: number;
  committedFlag: number;
  /** What the write marks file adds to the tier file's path. */
  marksSuffix: string;
}

interface Addon {
  /** The class the addon constructs its errors as, (code, message); handed over once, at load. */
  setErrorClass(errorClass: typeof NativeError): void;
  /** Every code the addon's errors can carry. */
  errorCodes(): string[];
  slotFormat: SlotFormat;
  /**
   * (queued, run, returned) seconds of each addon task finished since the last call: waiting
   * for a worker thread, on it, and waiting for the JS thread to take its result.
   */
  taskTimings(): Float64Array;
  /** The first `slotFormat.scanBytes` of every slot of a tier file; zeros past its end or with no file. */
  scanSlotHeads(path: string, slotBytes: number, slots: number): Promise<Buffer>;
  allocArena(bytes: number): Buffer;
  crc32c(buf: Buffer, offset?: number, length?: number): number;
  quantSizes(p: NativeParams): { raw: number; quantized: number; groups: number; records: [number, number, number, number] };
  quantize(p: NativeParams, src: Buffer, srcOffset: number, dst: Buffer, dstOffset: number): Promise<void>;
  dequantize(p: NativeParams, src: Buffer, srcOffset: number, dst: Buffer, dstOffset: number): Promise<void>;
  /** What the machine offers; `device` (default 0) is the visible index whose memory is reported. */
  probe(device?: number): Promise<ProbeResult>;
  poolThreads: number;
  SlotFile: new (path: string, slotBytes: number, slotCount: number, opts: { direct: boolean; inFlight?: number }) => NativeSlotFile;
  /** Present only when the addon was built with CUDA. */
  GpuTiers?: new (opts: Omit<GpuTiersOptions, 'params'> & { params: NativeParams }) => NativeGpuTiers;
  DeviceArena?: new (bytes: number, opts: { io: IoMode; maxReadBytes: number; device: number }) => NativeDeviceArena;
}

const addonPath = join(projectRoot, 'build', 'spillway.node');
export const addon: Addon = createRequire(import.meta.url)(addonPath) as Addon;
addon.setErrorClass(NativeError);

function toNative(p: QuantParams): NativeParams {
  return {
    layers: p.layers, kvHeads: p.kvHeads, headDim: p.headDim, tokens: p.tokens, dtype: DTYPE_CODE[p.dtype],
    keyBitsX2: Math.round(p.keyBits * 2), valueBitsX2: Math.round(p.valueBits * 2),
    variant: p.variant === 'prod' ? 1 : 0, seed: p.seed, version: p.formatVersion ?? 0,
    outerFirst: p.outerLayers?.first ?? 0, outerLast: p.outerLayers?.last ?? 0,
    outerKeyBitsX2: Math.round((p.outerLayers?.keyBits ?? 0) * 2), outerValueBitsX2: Math.round((p.outerLayers?.valueBits ?? 0) * 2),
  };
}

/** Quantizer bound to one geometry: sizes, and block moves inside caller-owned buffers. */
export class Quantizer {
  readonly params: QuantParams;
  readonly rawBytes: number;
  readonly quantizedBytes: number;
  readonly recordBytes: RecordBytes;
  private readonly native: NativeParams;

  constructor(params: QuantParams) {
    this.params = params;
    this.native = toNative(params);
    const sizes = nativeSync('quantization parameters', () => addon.quantSizes(this.native));
    this.rawBytes = sizes.raw;
    this.quantizedBytes = sizes.quantized;
    const [innerKey, innerValue, outerKey, outerValue] = sizes.records;
    this.recordBytes = { inner: { key: innerKey, value: innerValue }, outer: { key: outerKey, value: outerValue } };
  }

  async quantizeInto(src: Buffer, srcOffset: number, dst: Buffer, dstOffset: number): Promise<void> {
    await nativeCall('quantize', () => addon.quantize(this.native, src, srcOffset, dst, dstOffset));
  }

  async dequantizeInto(src: Buffer, srcOffset: number, dst: Buffer, dstOffset: number): Promise<void> {
    await nativeCall('dequantize', () => addon.dequantize(this.native, src, srcOffset, dst, dstOffset));
  }
}

/** The addon's task timings since the last call (see Addon.taskTimings). */
export function takeTaskTimings(): Float64Array {
  return addon.taskTimings();
}

export function rawBytes(p: QuantParams): number {
  return new Quantizer(p).rawBytes;
}

export function quantizedBytes(p: QuantParams): number {
  return new Quantizer(p).quantizedBytes;
}

/** Quantizes one raw block into a new buffer in the versioned stored format. */
export async function quantize(p: QuantParams, raw: Uint8Array): Promise<Buffer> {
  const q = new Quantizer(p);
  const out = Buffer.alloc(q.quantizedBytes);
  await q.quantizeInto(toBuffer(raw), 0, out, 0);
  return out;
}

/** Dequantizes stored bytes, in any format version this build reads, into a new raw block;
 * refuses other versions or parameters. */
export async function dequantize(p: QuantParams, stored: Uint8Array): Promise<Buffer> {
  const q = new Quantizer(p);
  const out = Buffer.alloc(q.rawBytes);
  await q.dequantizeInto(toBuffer(stored), 0, out, 0);
  return out;
}

function toBuffer(u: Uint8Array): Buffer {
  return Buffer.isBuffer(u) ? u : Buffer.from(u.buffer, u.byteOffset, u.byteLength);
}

/** Opens the GPU tiers; undefined when the addon was built without CUDA. */
export function openGpuTiers(opts: GpuTiersOptions): NativeGpuTiers | undefined {
  if (!addon.GpuTiers) return undefined;
  const GpuTiers = addon.GpuTiers;
  return nativeSync('GPU tiers', () => new GpuTiers({ ...opts, params: toNative(opts.params) }));
}

/** Allocates a device arena; undefined when the addon was built without CUDA. */
export function openDeviceArena(bytes: number, opts: { io: IoMode; maxReadBytes: number; device: number }): NativeDeviceArena | undefined {
  if (!addon.DeviceArena) return undefined;
  const DeviceArena = addon.DeviceArena;
  return nativeSync('device arena', () => new DeviceArena(bytes, opts));
}

/** `inFlight`: reads and writes at once (tiers.disk.inFlight; the addon's default where absent). */
export function openSlotFile(path: string, slotBytes: number, slotCount: number, direct: boolean, inFlight?: number): NativeSlotFile {
  return nativeSync('disk tier', () => new addon.SlotFile(path, slotBytes, slotCount, { direct, inFlight }));
}
