/** Fixtures for the weights suites: tiny checkpoints written on the spot, and a naive slicer. */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { WEIGHT_DTYPE_BYTES, type WeightDtype } from '../../../runtime/weights/format.js';
import type { SplitKind } from '../../../runtime/weights/sharding.js';
import { writeSafetensors } from '../../../runtime/weights/writer.js';
import { rng } from '../../helpers.js';

export interface FixtureTensor {
  name: string;
  dtype: WeightDtype;
  shape: number[];
  data: Buffer;
}

export function randomBytes(seed: number, n: number): Buffer {
  const next = rng(seed);
  const out = Buffer.alloc(n);
  for (let i = 0; i < n; i++) out[i] = Math.floor(next() * 256);
  return out;
}

export function tensor(name: string, dtype: WeightDtype, shape: number[], seed: number): FixtureTensor {
  return { name, dtype, shape, data: randomBytes(seed, shape.reduce((a, b) => a * b, WEIGHT_DTYPE_BYTES[dtype])) };
}

/**
 * A two-layer Llama-shaped model (hidden 32, 4 heads of 8, 2 KV heads, MLP 48, vocab 64) in
 * bf16 with f32 norms and biases, so every split kind and both dtypes appear.
 */
export function tinyLlama(): FixtureTensor[] {
  let seed = 1;
  const t = (name: string, dtype: WeightDtype, shape: number[]) => tensor(name, dtype, shape, seed++);
  const layers = [0, 1].flatMap((l) => {
    const p = `model.layers.${l}`;
    return [
      t(`${p}.input_layernorm.weight`, 'F32', [32]),
      t(`${p}.self_attn.q_proj.weight`, 'BF16', [32, 32]),
      t(`${p}.self_attn.q_proj.bias`, 'F32', [32]),
      t(`${p}.self_attn.k_proj.weight`, 'BF16', [16, 32]),
      t(`${p}.self_attn.v_proj.weight`, 'BF16', [16, 32]),
      t(`${p}.self_attn.o_proj.weight`, 'BF16', [32, 32]),
      t(`${p}.self_attn.o_proj.bias`, 'F32', [32]),
      t(`${p}.post_attention_layernorm.weight`, 'F32', [32]),
      t(`${p}.mlp.gate_proj.weight`, 'BF16', [48, 32]),
      t(`${p}.mlp.up_proj.weight`, 'BF16', [48, 32]),
      t(`${p}.mlp.down_proj.weight`, 'F32', [32, 48]),
    ];
  });
  return [t('model.embed_tokens.weight', 'BF16', [64, 32]), ...layers, t('model.norm.weight', 'F32', [32]), t('lm_head.weight', 'BF16', [64, 32])];
}

/** Writes `tensors` as `files` shards plus a Hugging Face index into `dir` (created); returns `dir`. */
export async function writeCheckpoint(dir: string, tensors: FixtureTensor[], files = 3, withIndex = true): Promise<string> {
  mkdirSync(dir, { recursive: true });
  const per = Math.ceil(tensors.length / files);
  const weightMap: Record<string, string> = {};
  for (let f = 0; f < files; f++) {
    const name = `model-${String(f + 1).padStart(5, '0')}-of-${String(files).padStart(5, '0')}.safetensors`;
    const part = tensors.slice(f * per, (f + 1) * per);
    await writeSafetensors(join(dir, name), part, { format: 'pt' });
    for (const t of part) weightMap[t.name] = name;
  }
  if (withIndex) {
    const total = tensors.reduce((n, t) => n + t.data.length, 0);
    writeFileSync(join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: { total_size: total }, weight_map: weightMap }));
  }
  return dir;
}

/** A file of an 8-byte header length, `header` (raw bytes, JSON text or an object), then `data`. */
export function rawFile(path: string, header: Buffer | string | object, data: Buffer = Buffer.alloc(0), declaredLength?: bigint): string {
  const text = Buffer.isBuffer(header) ? header : Buffer.from(typeof header === 'string' ? header : JSON.stringify(header));
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(declaredLength ?? BigInt(text.length));
  writeFileSync(path, Buffer.concat([prefix, text, data]));
  return path;
}

/**
 * One rank's slice, element by element from coordinates: independent of the split code.
 * Mirrors the documented rules: column splits dim 0, row the last dim; a 1-D row tensor
 * and scalars are replicated.
 */
export function expectedSlice(t: FixtureTensor, kind: SplitKind, rank: number, world: number): Buffer {
  const dims = t.shape.length;
  const dim = kind === 'column' && dims >= 1 ? 0 : kind === 'row' && dims >= 2 ? dims - 1 : -1;
  if (dim < 0) return t.data;
  const size = WEIGHT_DTYPE_BYTES[t.dtype];
  const part = t.shape[dim]! / world;
  const out: Buffer[] = [];
  const count = t.data.length / size;
  for (let flat = 0; flat < count; flat++) {
    let rest = flat;
    let coord = 0;
    for (let d = dims - 1; d >= 0; d--) {
      if (d === dim) coord = rest % t.shape[d]!;
      rest = Math.floor(rest / t.shape[d]!);
    }
    if (Math.floor(coord / part) === rank) out.push(t.data.subarray(flat * size, (flat + 1) * size));
  }
  return Buffer.concat(out);
}
