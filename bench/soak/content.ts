/**
 * What every block of the soak holds, recomputed from a seed whenever it is checked: the
 * harness keeps no copies. Values are bf16 draws from N(0, 1) (the distribution the
 * quantizer's bound is stated for), taken from a fixed table by a xorshift stream, so that
 * a 2 MiB block takes a few milliseconds to make rather than a Box-Muller per value.
 */
import { rng } from '../block-content.js';

const TABLE_BITS = 16;

/** 2^16 bf16 draws from N(0, 1), the same in every process. */
const GAUSSIAN = (() => {
  const next = rng(0x6a09e667);
  const f32 = new Float32Array(1);
  const u32 = new Uint32Array(f32.buffer);
  const table = new Uint16Array(1 << TABLE_BITS);
  for (let i = 0; i < table.length; i++) {
    f32[0] = Math.sqrt(-2 * Math.log(next() + 1e-12)) * Math.cos(2 * Math.PI * next());
    table[i] = u32[0]! >>> 16;
  }
  return table;
})();

/** A 32-bit seed from several integers (murmur3's finalizer over a running mix). */
export function seedOf(...parts: number[]): number {
  let h = 0x9e3779b9;
  for (const p of parts) {
    h = Math.imul(h ^ (p >>> 0), 0x85ebca6b);
    h ^= h >>> 13;
    h = Math.imul(h, 0xc2b2ae35);
    h ^= h >>> 16;
    // Parts above 2^32 (run seeds) contribute their high word too.
    h = Math.imul(h ^ Math.floor(p / 2 ** 32), 0x27d4eb2f);
  }
  return (h ^ (h >>> 15)) >>> 0 || 1;
}

/** A block of `bytes` bf16 values, determined by `seed`. */
export function soakBlock(seed: number, bytes: number): Buffer {
  const out = Buffer.allocUnsafeSlow(bytes);
  const values = new Uint16Array(out.buffer, out.byteOffset, bytes >>> 1);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < values.length; i += 2) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    values[i] = GAUSSIAN[x & 0xffff]!;
    values[i + 1] = GAUSSIAN[x >>> 16]!;
  }
  return out;
}
