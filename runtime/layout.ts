/**
 * Block geometry and tier capacity for a configuration: how big a block is raw and
 * quantized, which tiers the ladder has, how many slots each holds, and how many tokens
 * that is. This is what an engine reads to set its context limits.
 */
import type { Config } from './config.js';
import { Quantizer, type QuantParams, type RecordBytes } from './native.js';

/** Disk slots are O_DIRECT-aligned and begin with a 64-byte header (addon/src/io/slot_file.h). */
export const DISK_ALIGN = 4096;
export const DISK_SLOT_HEADER = 64;

/** Every tier the ladder may have, top first; a configuration leaves out the host tier when it has no bytes. */
export const TIER_NAMES = ['raw', 'quantized', 'host', 'disk'] as const;
export type TierName = (typeof TIER_NAMES)[number];

/**
 * What a tier holds, which decides how blocks move in and out of it: raw blocks (tier 0
 * only), quantized blocks in memory (device or host), or quantized blocks in disk slots
 * (the bottom tier only).
 */
export type TierKind = 'raw' | 'quantized' | 'disk';

/** A tier's position on the ladder: 0 is the top (raw), tiers.length - 1 the disk. */
export type TierIndex = number;

export interface TierLayout {
  tier: TierIndex;
  name: TierName;
  kind: TierKind;
  slots: number;
  slotBytes: number;
  bytes: number;
  tokens: number;
}

export interface Layout {
  quant: QuantParams;
  rawBlockBytes: number;
  quantizedBlockBytes: number;
  tokensPerBlock: number;
  /** Top to bottom: raw, quantized, host (where configured), disk. */
  tiers: TierLayout[];
  totalBlocks: number;
  totalTokens: number;
  /** Raw bytes per quantized byte: how much more KV the quantized tiers hold. */
  compressionRatio: number;
  quantization: QuantizationSummary;
}

/** Bits stored per value, norms, masks and padding included: the whole block's, and per class of layers and kind. */
export interface QuantizationSummary {
  bitsPerValue: number;
  classes: { layers: string; keyBits: number; valueBits: number; keyBitsStored: number; valueBitsStored: number }[];
}

function summarize(q: QuantParams, quantizedBytes: number, records: RecordBytes): QuantizationSummary {
  const valuesPerGroup = q.tokens * q.headDim;
  const stored = (bytes: number) => (bytes * 8) / valuesPerGroup;
  const inner = { keyBits: q.keyBits, valueBits: q.valueBits, keyBitsStored: stored(records.inner.key), valueBitsStored: stored(records.inner.value) };
  const classes: QuantizationSummary['classes'] = [];
  const o = q.outerLayers;
  const outer = o && { keyBits: o.keyBits, valueBits: o.valueBits, keyBitsStored: stored(records.outer.key), valueBitsStored: stored(records.outer.value) };
  const range = (from: number, to: number) => (to - from === 1 ? `${from}` : `${from}-${to - 1}`);
  const innerFrom = o?.first ?? 0, innerTo = q.layers - (o?.last ?? 0);
  if (outer && o.first > 0) classes.push({ layers: range(0, o.first), ...outer });
  if (innerTo > innerFrom) classes.push({ layers: range(innerFrom, innerTo), ...inner });
  if (outer && o.last > 0) classes.push({ layers: range(innerTo, q.layers), ...outer });
  return { bitsPerValue: (quantizedBytes * 8) / (q.layers * 2 * q.kvHeads * valuesPerGroup), classes };
}

export function quantParams(config: Config): QuantParams {
  const m = config.model;
  const q = config.quantization;
  return {
    layers: m.layers, kvHeads: m.kvHeads, headDim: m.headDim, tokens: m.tokensPerBlock, dtype: m.dtype,
    keyBits: q.keyBits, valueBits: q.valueBits, variant: q.variant, seed: q.seed,
    ...(q.outerLayers ? { outerLayers: q.outerLayers } : {}),
  };
}

export function computeLayout(config: Config): Layout {
  const quant = quantParams(config);
  const quantizer = new Quantizer(quant);
  const tpb = config.model.tokensPerBlock;
  const diskSlotBytes = Math.ceil((quantizer.quantizedBytes + DISK_SLOT_HEADER) / DISK_ALIGN) * DISK_ALIGN;
  const specs: Array<[TierName, TierKind, number, number]> = [
    ['raw', 'raw', quantizer.rawBytes, config.tiers.raw.bytes],
    ['quantized', 'quantized', quantizer.quantizedBytes, config.tiers.quantized.bytes],
    ...(config.tiers.host.bytes > 0 ? [['host', 'quantized', quantizer.quantizedBytes, config.tiers.host.bytes] as [TierName, TierKind, number, number]] : []),
    ['disk', 'disk', diskSlotBytes, config.tiers.disk.bytes],
  ];
  const tiers = specs.map(([name, kind, slotBytes, budget], tier): TierLayout => {
    const slots = Math.floor(budget / slotBytes);
    return { tier, name, kind, slots, slotBytes, bytes: slots * slotBytes, tokens: slots * tpb };
  });
  const totalBlocks = tiers.reduce((n, t) => n + t.slots, 0);
  return {
    quant,
    rawBlockBytes: quantizer.rawBytes,
    quantizedBlockBytes: quantizer.quantizedBytes,
    tokensPerBlock: tpb,
    tiers,
    totalBlocks,
    totalTokens: totalBlocks * tpb,
    compressionRatio: quantizer.rawBytes / quantizer.quantizedBytes,
    quantization: summarize(quant, quantizer.quantizedBytes, quantizer.recordBytes),
  };
}

/** The tier a configuration names, or undefined where the ladder has no such tier. */
export function tierNamed(layout: Layout, name: TierName): TierLayout | undefined {
  return layout.tiers.find((t) => t.name === name);
}

/** The disk tier: always the bottom one. */
export function diskTier(layout: Layout): TierLayout {
  return layout.tiers[layout.tiers.length - 1]!;
}
