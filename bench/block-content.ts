/** Seeded block contents and the error measure reads are checked with; no native code. */

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

/** Every bf16 value as a float: relativeError runs over whole 2 MiB blocks in soaks. */
const BF16_VALUES = new Float32Array(new Uint32Array(65536).map((_, h) => h << 16).buffer);

/** The bf16 values of a block (little-endian, as on every platform node runs on here); copied only if unaligned. */
function bf16Values(b: Buffer): Uint16Array {
  return b.byteOffset % 2 === 0 ? new Uint16Array(b.buffer, b.byteOffset, b.length >>> 1) : new Uint16Array(Uint8Array.from(b).buffer);
}

/** A block of bf16 values drawn from N(0, 1), determined by `seed`; 4 KiB by default (TINY_RAW). */
export function blockContent(seed: number, bytes = 4096): Buffer {
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
  const x = bf16Values(expected);
  const y = bf16Values(got);
  let err = 0;
  let norm = 0;
  for (let i = 0; i < x.length; i++) {
    const a = BF16_VALUES[x[i]!]!;
    const b = BF16_VALUES[y[i]!]!;
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
