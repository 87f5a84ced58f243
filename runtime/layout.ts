/**
 * Block geometry and tier capacity for a configuration: how big a block is raw and
 * quantized, how many slots each tier has, and how many tokens that holds. This is what
 * an engine reads to set its context limits.
 */
import type { Config } from './config.js';
import { Quantizer, type QuantParams, type RecordBytes } from './native.js';

/** Disk slots are O_DIRECT-aligned and begin with a 64-byte header (addon/src/slot_file.h). */
export const DISK_ALIGN = 4096;
export const DISK_SLOT_HEADER = 64;

export type TierIndex = 0 | 1 | 2;
export const TIER_NAMES = ['raw', 'quantized', 'disk'] as const;

export interface TierLayout {
  tier: TierIndex;
  name: (typeof TIER_NAMES)[number];
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
  tiers: [TierLayout, TierLayout, TierLayout];
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
  const tier = (t: TierIndex, slotBytes: number, budget: number): TierLayout => {
    const slots = Math.floor(budget / slotBytes);
    return { tier: t, name: TIER_NAMES[t], slots, slotBytes, bytes: slots * slotBytes, tokens: slots * tpb };
  };
  const tiers: Layout['tiers'] = [
    tier(0, quantizer.rawBytes, config.tiers.raw.bytes),
    tier(1, quantizer.quantizedBytes, config.tiers.quantized.bytes),
    tier(2, diskSlotBytes, config.tiers.disk.bytes),
  ];
  const totalBlocks = tiers[0].slots + tiers[1].slots + tiers[2].slots;
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
