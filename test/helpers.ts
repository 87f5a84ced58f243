/** Shared test fixtures: tiny geometries, seeded block contents, error measures. */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseConfig, type Config, type ConfigInput } from '../runtime/config.js';
import { addon } from '../runtime/native.js';
import { chooseBackend, openStore } from '../runtime/open.js';
import type { BlockStore } from '../runtime/store.js';

/** 2 layers x 2 KV heads x 4 tokens x 64 dims of bf16: 4 KiB raw, 1216 B at 4 bits. */
export const TINY_MODEL = { layers: 2, kvHeads: 2, headDim: 64, tokensPerBlock: 4, dtype: 'bf16' } as const;
export const TINY_RAW = 4096;
export const TINY_QUANT = 1216;

export function tempDir(prefix = 'spillway-test-'): { path: string; cleanup: () => void } {
  const path = mkdtempSync(join(tmpdir(), prefix));
  return { path, cleanup: () => rmSync(path, { recursive: true, force: true }) };
}

/** A config with `raw`, `quantized` and `disk` slots of the tiny geometry. */
export function tinyConfig(dir: string, slots: { raw: number; quantized: number; disk: number }, extra: ConfigInput = {}): Config {
  return parseConfig({
    ...extra,
    model: TINY_MODEL,
    tiers: {
      raw: { bytes: slots.raw * TINY_RAW },
      quantized: { bytes: slots.quantized * TINY_QUANT },
      disk: { ...extra.tiers?.disk, path: join(dir, 'tier2.slots'), bytes: slots.disk * 4096 },
    },
  });
}

export async function tinyStore(dir: string, slots: { raw: number; quantized: number; disk: number }, extra: ConfigInput = {}): Promise<BlockStore> {
  return openStore(tinyConfig(dir, slots, extra));
}

/** Deterministic pseudo-random generator (mulberry32). */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function bf16(x: number): number {
  const f = new Float32Array([x]);
  return new Uint32Array(f.buffer)[0]! >>> 16;
}

function fromBf16(h: number): number {
  return new Float32Array(new Uint32Array([h << 16]).buffer)[0]!;
}

/** A block of bf16 values drawn from N(0, 1), determined by `seed`. */
export function blockContent(seed: number, bytes = TINY_RAW): Buffer {
  const next = rng(seed);
  const out = Buffer.alloc(bytes);
  for (let i = 0; i < bytes; i += 2) {
    const g = Math.sqrt(-2 * Math.log(next() + 1e-12)) * Math.cos(2 * Math.PI * next());
    out.writeUInt16LE(bf16(g), i);
  }
  return out;
}

/** ||a - b||^2 / ||a||^2 over two bf16 blocks. */
export function relativeError(expected: Buffer, got: Buffer): number {
  let err = 0;
  let norm = 0;
  for (let i = 0; i < expected.length; i += 2) {
    const a = fromBf16(expected.readUInt16LE(i));
    const b = fromBf16(got.readUInt16LE(i));
    err += (a - b) ** 2;
    norm += a * a;
  }
  return err / norm;
}

/**
 * The bound a block through 4-bit quantization must meet: the quantizer's MSE at 4 bits
 * is about 0.009 of the norm (docs/QUANTIZATION.md); 0.02 leaves room for a 64-dim head
 * and bf16 rounding while still catching wrong or misplaced data (error ~2).
 */
export const FOUR_BIT_BOUND = 0.02;

/** The backend this machine gives an 'auto' configuration: 'gpu' where there is one. */
export async function expectedBackend(): Promise<'host' | 'gpu'> {
  return chooseBackend(parseConfig({}), await addon.probe()).name;
}
