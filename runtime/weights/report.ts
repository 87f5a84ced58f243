/**
 * The weights dry run behind `spillway doctor --weights`: every header parsed and checked,
 * every problem listed (not only the first), tensor count, bytes in all and per rank.
 */
import { SpillwayError } from '../errors.js';
import { inspectCheckpoint, type WeightsSource } from './checkpoint.js';
import { planWeights, type WeightsOptions } from './load.js';
import { formatBytes } from '../bytes.js';
import { isContiguous, readRules, readSplitManifest, ruleMatcher, splitTensor } from './sharding.js';
import { tensorBytes, type WeightDtype } from './format.js';

export interface WeightsReport {
  source: WeightsSource;
  /** plain: one checkpoint (slices computed from the rules); split: written by `spillway weights split`. */
  layout: 'plain' | 'split';
  files: number;
  tensors: number;
  totalBytes: number;
  world: number;
  /** Tensor bytes each rank holds; empty when a problem leaves them unknown. */
  rankBytes: number[];
  /** Plain layout with world > 1: tensors whose rank slices are strided, so loading them needs a split. */
  stridedTensors: string[];
  warnings: string[];
  problems: string[];
}

function messages(err: unknown): string[] {
  if (!(err instanceof SpillwayError)) return [String(err)];
  const all = err.details.problems;
  return Array.isArray(all) ? all.map(String) : [err.message];
}

/**
 * Dry-runs `options.source` for `options.world` ranks. A split directory is checked rank by
 * rank against its manifest; it reports its own world unless the configuration names one.
 */
export async function weightsReport(options: WeightsOptions & { source: WeightsSource }): Promise<WeightsReport> {
  const { source } = options;
  const failed = (err: unknown): WeightsReport => ({
    source, layout: 'plain', files: 0, tensors: 0, totalBytes: 0, world: options.world, rankBytes: [], stridedTensors: [], warnings: [], problems: messages(err),
  });
  let manifest;
  try {
    manifest = typeof source === 'string' ? await readSplitManifest(source) : undefined;
  } catch (err) {
    return failed(err);
  }
  if (manifest) {
    const world = options.world > 1 ? options.world : manifest.world;
    const report: WeightsReport = {
      source, layout: 'split', files: 0, tensors: Object.keys(manifest.tensors).length,
      totalBytes: Object.values(manifest.tensors).reduce((n, t) => n + tensorBytes(t.dtype as WeightDtype, t.shape), 0),
      world, rankBytes: [], stridedTensors: [], warnings: [], problems: [],
    };
    for (let rank = 0; rank < world; rank++) {
      try {
        const plan = await planWeights({ ...options, rank, world });
        report.files += plan.files.length;
        report.rankBytes.push(plan.tensorBytes);
      } catch (err) {
        report.problems.push(...messages(err));
        // A world the split was not made for fails every rank the same way: say it once.
        if (manifest.world !== world) break;
      }
    }
    if (report.problems.length > 0) report.rankBytes = [];
    return report;
  }

  let inspection;
  let kindOf;
  try {
    inspection = await inspectCheckpoint(source);
    kindOf = ruleMatcher(await readRules(options.rules));
  } catch (err) {
    return failed(err);
  }
  const { checkpoint } = inspection;
  const problems = inspection.problems.map((p) => p.message);
  const stridedTensors: string[] = [];
  let rankBytes = 0;
  for (const t of checkpoint.tensors) {
    try {
      const split = splitTensor(t.file.path, t, kindOf(t.name), options.world);
      rankBytes += split.outer * split.pieceBytes;
      if (!isContiguous(split)) stridedTensors.push(t.name);
    } catch (err) {
      problems.push(...messages(err));
    }
  }
  return {
    source, layout: 'plain', files: checkpoint.files.length, tensors: checkpoint.tensors.length, totalBytes: checkpoint.totalBytes,
    world: options.world, rankBytes: problems.length > 0 ? [] : Array.from({ length: options.world }, () => rankBytes),
    stridedTensors, warnings: checkpoint.warnings, problems,
  };
}

export function formatWeightsReport(r: WeightsReport): string[] {
  const source = typeof r.source === 'string' ? r.source : `${r.source.length} files`;
  const distinct = [...new Set(r.rankBytes)];
  const perRank = r.rankBytes.length === 0
    ? 'unknown (see problems)'
    : distinct.length === 1 ? `${formatBytes(distinct[0]!)} each` : r.rankBytes.map((b, i) => `rank ${i}: ${formatBytes(b)}`).join(', ');
  const lines = [
    `  weights:      ${source} (${r.layout === 'split' ? 'split per rank' : 'one checkpoint'}): ${r.files} files, ${r.tensors} tensors, ${formatBytes(r.totalBytes)}`,
    `  per rank:     world ${r.world}: ${perRank}`,
  ];
  if (r.layout === 'plain' && r.world > 1) {
    lines.push(`  direct slice: ${r.stridedTensors.length === 0
      ? 'every rank slice is one contiguous range'
      : `${r.stridedTensors.length} tensors have strided rank slices (first: ${r.stridedTensors[0]}); load them after "spillway weights split"`}`);
  }
  lines.push(`  problems:     ${r.problems.length === 0 ? 'none' : r.problems.length}`);
  for (const p of r.problems) lines.push(`    - ${p}`);
  for (const w of r.warnings) lines.push(`    warning: ${w}`);
  return lines;
}
