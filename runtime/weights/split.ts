/**
 * `spillway weights split`: rewrites a full checkpoint as `world` per-rank checkpoints,
 * each tensor split by its rule. Streamed: each input file is read once, a chunk at a time,
 * and every rank's part of the chunk appended to that rank's file.
 *
 *   OUT/spillway-split.json                       the manifest (written last: its presence marks a complete split)
 *   OUT/rank-00000-of-00004/<input file name>     rank 0's part of each input file
 *   OUT/rank-00000-of-00004/model.safetensors.index.json
 */
import { mkdir, readdir, rm, writeFile, type FileHandle } from 'node:fs/promises';
import { basename, join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { SpillwayError } from '../errors.js';
import { firstProblem, openCheckpoint, type SourceTensor, type WeightsSource } from './checkpoint.js';
import { openForRead, readExactly } from './format.js';
import { ProgressMeter, type OnProgress } from './progress.js';
import {
  pieceOffset, rankDirName, readRules, ruleMatcher, splitTensor, SPLIT_MANIFEST,
  type SplitKind, type SplitManifest, type TensorSplit,
} from './sharding.js';
import { SafetensorsWriter } from './writer.js';

export interface SplitOptions {
  input: WeightsSource;
  out: string;
  world: number;
  /** A rules file; Llama-style defaults otherwise. */
  rules?: string;
  /** Bytes read from the input at a time. */
  chunkBytes?: number;
  onProgress?: OnProgress;
}

export interface SplitSummary {
  out: string;
  world: number;
  tensors: Record<SplitKind, number>;
  bytesRead: number;
  /** Tensor bytes in each rank's files (the same for every rank: splits are even). */
  rankBytes: number;
  seconds: number;
}

export const RANK_INDEX = 'model.safetensors.index.json';

/**
 * Appends each rank's part of one tensor: the tensor is read in chunks, and each chunk's
 * overlap with every piece of every rank is gathered and appended to that rank's writer.
 */
async function streamTensor(input: FileHandle, t: SourceTensor, split: TensorSplit, writers: SafetensorsWriter[], buffer: Buffer, meter: ProgressMeter): Promise<void> {
  for (let a = 0; a < t.bytes; a += buffer.length) {
    const b = Math.min(a + buffer.length, t.bytes);
    await readExactly(input, t.file.path, buffer, 0, b - a, t.fileOffset + a);
    const firstRow = Math.floor(a / split.rowBytes);
    const lastRow = Math.floor((b - 1) / split.rowBytes);
    await Promise.all(writers.map((writer, rank) => {
      const parts: Buffer[] = [];
      for (let row = firstRow; row <= lastRow; row++) {
        const start = Math.max(pieceOffset(split, rank, row), a);
        const end = Math.min(pieceOffset(split, rank, row) + split.pieceBytes, b);
        if (start < end) parts.push(buffer.subarray(start - a, end - a));
      }
      return parts.length === 1 ? writer.append(parts[0]!) : writer.append(Buffer.concat(parts));
    }));
    meter.add(b - a);
  }
}

export async function splitCheckpoint(opts: SplitOptions): Promise<SplitSummary> {
  const { world } = opts;
  if (!Number.isInteger(world) || world < 1) throw new SpillwayError('INVALID_ARGUMENT', `world must be a positive integer, got ${world}`);
  const checkpoint = await openCheckpoint(opts.input);
  const kindOf = ruleMatcher(await readRules(opts.rules));

  // Every split is decided, and every refusal found, before a byte is written.
  const splits = new Map<string, TensorSplit>();
  const problems: SpillwayError[] = [];
  for (const t of checkpoint.tensors) {
    try {
      splits.set(t.name, splitTensor(t.file.path, t, kindOf(t.name), world));
    } catch (err) {
      problems.push(err as SpillwayError);
    }
  }
  if (problems.length > 0) throw firstProblem(problems);
  const names = checkpoint.files.map((f) => basename(f.path));
  const clash = names.find((n, i) => names.indexOf(n) !== i);
  if (clash) throw new SpillwayError('INVALID_ARGUMENT', `two input files are named ${clash}; a rank directory holds one file per name`);

  const out = resolve(opts.out);
  await mkdir(out, { recursive: true });
  if ((await readdir(out)).length > 0) throw new SpillwayError('INVALID_ARGUMENT', `output directory ${out} is not empty`);

  const ranks = Array.from({ length: world }, (_, r) => join(out, rankDirName(r, world)));
  const buffer = Buffer.allocUnsafe(opts.chunkBytes ?? 64 * 2 ** 20);
  const meter = new ProgressMeter(checkpoint.totalBytes, opts.onProgress);
  const start = performance.now();
  try {
    await Promise.all(ranks.map((dir) => mkdir(dir)));
    for (const file of checkpoint.files) {
      const specs = file.tensors.map((t) => ({ name: t.name, dtype: t.dtype, shape: splits.get(t.name)!.shape }));
      const writers = await Promise.all(ranks.map((dir, rank) => SafetensorsWriter.create(join(dir, basename(file.path)), specs, {
        ...file.metadata, 'spillway.rank': String(rank), 'spillway.world': String(world),
      })));
      const input = await openForRead(file.path);
      try {
        for (const t of file.tensors) {
          await streamTensor(input, checkpoint.byName.get(t.name)!, splits.get(t.name)!, writers, buffer, meter);
        }
        await Promise.all(writers.map((w) => w.close()));
      } catch (err) {
        await Promise.all(writers.map((w) => w.abort()));
        throw err;
      } finally {
        await input.close();
      }
    }
    const rankBytes = checkpoint.tensors.reduce((n, t) => n + splits.get(t.name)!.outer * splits.get(t.name)!.pieceBytes, 0);
    const weightMap = Object.fromEntries(checkpoint.tensors.map((t) => [t.name, basename(t.file.path)]));
    await Promise.all(ranks.map((dir) => writeFile(join(dir, RANK_INDEX), JSON.stringify({ metadata: { total_size: rankBytes }, weight_map: weightMap }, null, 1))));
    const manifest: SplitManifest = {
      format: 'spillway-split',
      version: 1,
      world,
      tensors: Object.fromEntries(checkpoint.tensors.map((t) => [t.name, { dtype: t.dtype, shape: t.shape, split: splits.get(t.name)!.kind }])),
    };
    await writeFile(join(out, SPLIT_MANIFEST), JSON.stringify(manifest, null, 1));
    const tensors: Record<SplitKind, number> = { column: 0, row: 0, replicated: 0 };
    for (const s of splits.values()) tensors[s.kind]++;
    return { out, world, tensors, bytesRead: checkpoint.totalBytes, rankBytes, seconds: (performance.now() - start) / 1000 };
  } catch (err) {
    // Leave no half-written split behind: without its manifest it would never load anyway.
    await Promise.all(ranks.map((dir) => rm(dir, { recursive: true, force: true })));
    throw err;
  }
}
