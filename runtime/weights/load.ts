/**
 * Loading one rank's weights: choose what the rank reads (a rank directory of a split
 * checkpoint, every tensor, or contiguous rank slices of an unsplit checkpoint), plan the
 * reads, and run them through a sink with many in flight, reporting progress.
 */
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import type { Config } from '../config.js';
import { errors, SpillwayError, weightsError } from '../errors.js';
import { firstProblem, openCheckpoint, type Checkpoint } from './checkpoint.js';
import { type WeightDtype } from './format.js';
import { buildPlan, type LoadPlan, type PlannedTensor, type Selection } from './plan.js';
import { ProgressMeter, type OnProgress } from './progress.js';
import { isContiguous, pieceOffset, rankDirName, readRules, readSplitManifest, ruleMatcher, splitTensor, type SplitManifest } from './sharding.js';
import type { WeightsSink } from './sink.js';

export type WeightsOptions = Config['weights'];

function whole(checkpoint: Checkpoint): Selection[] {
  return checkpoint.tensors.map((t) => ({
    name: t.name, dtype: t.dtype, shape: t.shape, path: t.file.path, fileBytes: t.file.fileBytes, fileOffset: t.fileOffset, bytes: t.bytes,
  }));
}

/** A rank directory of a split checkpoint, checked against the split's manifest. */
async function presplit(root: string, rank: number, world: number, manifest: SplitManifest): Promise<Selection[]> {
  if (manifest.world !== world) {
    throw weightsError(root, undefined, `split for world ${manifest.world}, but the configured world is ${world}`, 'WEIGHTS_SHARDING');
  }
  const dir = join(root, rankDirName(rank, world));
  const checkpoint = await openCheckpoint(dir);
  const problems: SpillwayError[] = [];
  for (const t of checkpoint.tensors) {
    const entry = manifest.tensors[t.name];
    if (!entry) {
      problems.push(weightsError(t.file.path, t.name, 'not in the split manifest'));
      continue;
    }
    const full = { name: t.name, dtype: entry.dtype as WeightDtype, shape: entry.shape };
    const expected = splitTensor(t.file.path, full, entry.split, world).shape;
    if (entry.dtype !== t.dtype || JSON.stringify(expected) !== JSON.stringify(t.shape)) {
      problems.push(weightsError(t.file.path, t.name, `is ${t.dtype} ${JSON.stringify(t.shape)}; the manifest's ${entry.split} split of ${entry.dtype} ${JSON.stringify(entry.shape)} gives ${JSON.stringify(expected)} for world ${world}`));
    }
  }
  for (const name of Object.keys(manifest.tensors)) {
    if (!checkpoint.byName.has(name)) problems.push(weightsError(dir, name, 'in the split manifest but missing from this rank'));
  }
  if (problems.length > 0) throw firstProblem(problems);
  return whole(checkpoint);
}

/**
 * Rank slices read straight from an unsplit checkpoint. Only a slice that is one byte
 * range of the file qualifies (column-parallel and replicated tensors, and any tensor with
 * a single row before its split dimension); a strided slice (row-parallel on a matrix) is
 * refused with the advice to pre-split, rather than read as thousands of small pieces.
 */
async function slices(checkpoint: Checkpoint, rank: number, world: number, rulesPath: string | undefined): Promise<Selection[]> {
  const kindOf = ruleMatcher(await readRules(rulesPath));
  const problems: SpillwayError[] = [];
  const selected: Selection[] = [];
  for (const t of checkpoint.tensors) {
    try {
      const split = splitTensor(t.file.path, t, kindOf(t.name), world);
      if (!isContiguous(split)) {
        throw weightsError(t.file.path, t.name, `${split.kind}-parallel slice of ${JSON.stringify(t.shape)} (dim ${split.dim}) is ${split.outer} strided pieces, not one range; pre-split the checkpoint with "spillway weights split"`, 'WEIGHTS_SHARDING');
      }
      selected.push({
        name: t.name, dtype: t.dtype, shape: split.shape, path: t.file.path, fileBytes: t.file.fileBytes,
        fileOffset: t.fileOffset + pieceOffset(split, rank, 0), bytes: split.outer * split.pieceBytes,
      });
    } catch (err) {
      problems.push(err as SpillwayError);
    }
  }
  if (problems.length > 0) throw firstProblem(problems);
  return selected;
}

/** Reads every header and plans this rank's reads; reads no tensor data. */
export async function planWeights(options: WeightsOptions): Promise<LoadPlan> {
  const { source, rank, world, requestBytes } = options;
  if (source === undefined) throw errors.badConfig('weights.source', 'no weights are configured');
  if (rank >= world) throw errors.badConfig('weights.rank', `${rank} must be below weights.world (${world})`);
  if (typeof source === 'string') {
    const manifest = await readSplitManifest(source);
    if (manifest) return buildPlan(await presplit(source, rank, world, manifest), { requestBytes, rank, world, layout: 'presplit' });
  }
  const checkpoint = await openCheckpoint(source);
  if (world === 1) return buildPlan(whole(checkpoint), { requestBytes, rank, world, layout: 'whole' });
  return buildPlan(await slices(checkpoint, rank, world, options.rules), { requestBytes, rank, world, layout: 'slice' });
}

export interface LoadedWeights {
  plan: LoadPlan;
  sink: WeightsSink;
  tensors: PlannedTensor[];
  byName: Map<string, PlannedTensor>;
  bytesRead: number;
  /** Seconds from the first read issued to the last one done. */
  seconds: number;
  /** bytesRead / seconds, decimal GB/s. */
  gbps: number;
}

/** Runs the plan's reads through `sink`, `concurrency` at a time. */
export async function executePlan(plan: LoadPlan, sink: WeightsSink, opts: { concurrency: number; onProgress?: OnProgress }): Promise<LoadedWeights> {
  await sink.begin(plan);
  const start = performance.now();
  const meter = new ProgressMeter(plan.readBytes, opts.onProgress);
  let next = 0;
  let failure: unknown;
  const worker = async () => {
    // After a failure no new read starts; those in flight finish before the error surfaces.
    while (failure === undefined && next < plan.requests.length) {
      const request = plan.requests[next++]!;
      try {
        await sink.read(request);
        meter.add(request.required);
      } catch (err) {
        failure ??= err instanceof SpillwayError
          ? err
          : weightsError(request.path, undefined, `read of ${request.length} bytes at offset ${request.fileOffset} failed: ${(err as Error).message}`, 'IO_ERROR');
      }
    }
  };
  let seconds;
  try {
    await Promise.all(Array.from({ length: Math.min(opts.concurrency, plan.requests.length) }, worker));
    seconds = (performance.now() - start) / 1000;
  } finally {
    await sink.end();
  }
  if (failure !== undefined) throw failure;
  return {
    plan,
    sink,
    tensors: plan.tensors,
    byName: new Map(plan.tensors.map((t) => [t.name, t])),
    bytesRead: plan.readBytes,
    seconds,
    gbps: seconds > 0 ? plan.readBytes / seconds / 1e9 : 0,
  };
}

/**
 * What the server calls before it serves (not ready until this resolves): plans the
 * configured rank's weights and reads them into `sink`.
 */
export async function loadWeights(config: Config, sink: WeightsSink, onProgress?: OnProgress): Promise<LoadedWeights> {
  const plan = await planWeights(config.weights);
  return executePlan(plan, sink, { concurrency: config.weights.concurrency, onProgress });
}
