/**
 * The typed facade over the native addon (build/spillway.node): the only module that
 * imports it. Addon errors become SpillwayErrors with the addon's code.
 */
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { projectRoot } from './config.js';
import { fromNative } from './errors.js';

export type Dtype = 'fp32' | 'fp16' | 'bf16';
export const DTYPE_BYTES: Record<Dtype, number> = { fp32: 4, fp16: 2, bf16: 2 };
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
  write(slot: number, key: number, generation: number, src: Buffer, srcOffset: number, length: number): Promise<void>;
  read(slot: number, key: number, generation: number, dst: Buffer, dstOffset: number, length: number): Promise<void>;
  close(): void;
  injectFault(op: 'read' | 'write', errno: number, count: number): void;
  info(): SlotFileInfo;
}

export interface ProbeResult {
  cudaBuilt: boolean;
  gpu: {
    present: boolean; error: string; count: number; name: string; computeCapability: string;
    totalBytes: number; freeBytes: number; driverVersion: number; runtimeVersion: number;
  };
  cufile: { status: 'not-found' | 'driver-error' | 'compat' | 'gds'; detail: string; nvfsVersion: string };
}

export interface GpuTiersInfo {
  device: string;
  io: 'cufile' | 'posix';
  cufileMode: '' | 'compat' | 'gds';
  ioReason: string;
  path: string;
  direct: boolean;
  directReason: string;
  preallocated: boolean;
  rawArenaBytes: number;
  quantArenaBytes: number;
  stagingBuffers: number;
  rawSlotBytes: number;
  quantSlotBytes: number;
}

/** Device tiers (addon/src/gpu_tiers.cc); tier 0 is raw, tier 1 quantized. */
export interface NativeGpuTiers {
  writeRaw(slot: number, src: Buffer): Promise<void>;
  readSlot(tier: 0 | 1, slot: number): Promise<Buffer>;
  quantize(rawSlots: Uint32Array, quantSlots: Uint32Array): Promise<void>;
  dequantize(quantSlots: Uint32Array, rawSlots: Uint32Array): Promise<void>;
  dequantizeBytes(stored: Buffer): Promise<Buffer>;
  spill(tier: 0 | 1, slot: number, diskSlot: number, key: number, generation: number): Promise<void>;
  fill(tier: 0 | 1, slot: number, diskSlot: number, key: number, generation: number): Promise<void>;
  readDisk(diskSlot: number, key: number, generation: number): Promise<Buffer>;
  injectFault(op: 'read' | 'write', errno: number, count: number): void;
  info(): GpuTiersInfo;
  /** The arena's cudaIpcMemHandle_t (64 bytes). */
  ipcHandle(tier: 0 | 1): Buffer;
  close(): void;
}

export interface GpuTiersOptions {
  params: QuantParams;
  rawSlots: number;
  quantSlots: number;
  diskPath: string;
  diskSlots: number;
  diskSlotBytes: number;
  direct: boolean;
  io: 'auto' | 'cufile' | 'posix';
}

/** One device allocation that files are read into (addon/src/device_arena.cc). */
export interface NativeDeviceArena {
  openFiles(paths: string[]): void;
  read(file: number, fileOffset: number, length: number, required: number, arenaOffset: number): Promise<void>;
  closeFiles(): void;
  copyOut(offset: number, length: number): Promise<Buffer>;
  ipcHandle(): Buffer;
  info(): { bytes: number; io: 'cufile' | 'posix'; ioReason: string; registered: boolean };
  free(): void;
}

interface Addon {
  allocArena(bytes: number): Buffer;
  crc32c(buf: Buffer, offset?: number, length?: number): number;
  quantSizes(p: NativeParams): { raw: number; quantized: number; groups: number; records: [number, number, number, number] };
  quantize(p: NativeParams, src: Buffer, srcOffset: number, dst: Buffer, dstOffset: number): Promise<void>;
  dequantize(p: NativeParams, src: Buffer, srcOffset: number, dst: Buffer, dstOffset: number): Promise<void>;
  probe(): Promise<ProbeResult>;
  poolThreads: number;
  SlotFile: new (path: string, slotBytes: number, slotCount: number, opts: { direct: boolean }) => NativeSlotFile;
  /** Present only when the addon was built with CUDA. */
  GpuTiers?: new (opts: Omit<GpuTiersOptions, 'params'> & { params: NativeParams }) => NativeGpuTiers;
  DeviceArena?: new (bytes: number, opts: { io: 'auto' | 'cufile' | 'posix'; maxReadBytes: number }) => NativeDeviceArena;
}

const addonPath = join(projectRoot, 'build', 'spillway.node');
export const addon: Addon = createRequire(import.meta.url)(addonPath) as Addon;

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
    let sizes;
    try {
      sizes = addon.quantSizes(this.native);
    } catch (err) {
      throw fromNative(err, 'quantization parameters');
    }
    this.rawBytes = sizes.raw;
    this.quantizedBytes = sizes.quantized;
    const [innerKey, innerValue, outerKey, outerValue] = sizes.records;
    this.recordBytes = { inner: { key: innerKey, value: innerValue }, outer: { key: outerKey, value: outerValue } };
  }

  async quantizeInto(src: Buffer, srcOffset: number, dst: Buffer, dstOffset: number): Promise<void> {
    try {
      await addon.quantize(this.native, src, srcOffset, dst, dstOffset);
    } catch (err) {
      throw fromNative(err, 'quantize');
    }
  }

  async dequantizeInto(src: Buffer, srcOffset: number, dst: Buffer, dstOffset: number): Promise<void> {
    try {
      await addon.dequantize(this.native, src, srcOffset, dst, dstOffset);
    } catch (err) {
      throw fromNative(err, 'dequantize');
    }
  }
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
  try {
    return new addon.GpuTiers({ ...opts, params: toNative(opts.params) });
  } catch (err) {
    throw fromNative(err, 'GPU tiers');
  }
}

/** Allocates a device arena; undefined when the addon was built without CUDA. */
export function openDeviceArena(bytes: number, io: 'auto' | 'cufile' | 'posix', maxReadBytes: number): NativeDeviceArena | undefined {
  if (!addon.DeviceArena) return undefined;
  try {
    return new addon.DeviceArena(bytes, { io, maxReadBytes });
  } catch (err) {
    throw fromNative(err, 'device arena');
  }
}

export function openSlotFile(path: string, slotBytes: number, slotCount: number, direct: boolean): NativeSlotFile {
  try {
    return new addon.SlotFile(path, slotBytes, slotCount, { direct });
  } catch (err) {
    throw fromNative(err, 'disk tier');
  }
}
