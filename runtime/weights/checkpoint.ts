/**
 * A checkpoint: the safetensors files named by a directory, a Hugging Face index
 * (`*.safetensors.index.json` with its `weight_map`) or a list of files, every header
 * validated, tensor names unique across files and the index consistent with the files.
 */
import { readdir, readFile, stat } from 'node:fs/promises';
import { basename, dirname, isAbsolute, join, resolve } from 'node:path';
import { SpillwayError, weightsError } from '../errors.js';
import { readShardHeader, type ShardHeader, type WeightDtype } from './format.js';
import { SPLIT_MANIFEST } from './sharding.js';

export type WeightsSource = string | readonly string[];

export const INDEX_SUFFIX = '.safetensors.index.json';

export interface SourceTensor {
  name: string;
  dtype: WeightDtype;
  shape: number[];
  file: ShardHeader;
  /** Absolute offset of the first byte in the file. */
  fileOffset: number;
  bytes: number;
}

export interface Checkpoint {
  files: ShardHeader[];
  /** File order, then data order within each file. */
  tensors: SourceTensor[];
  byName: Map<string, SourceTensor>;
  totalBytes: number;
  /** Oddities that do not stop a load (an index's total_size that disagrees, unlisted files). */
  warnings: string[];
}

export interface Inspection {
  /** What could be read; complete only when `problems` is empty. */
  checkpoint: Checkpoint;
  problems: SpillwayError[];
}

interface IndexFile {
  path: string;
  /** Tensor name to absolute file path. */
  weightMap: Map<string, string>;
  totalSize: number | undefined;
}

interface Resolved {
  files: string[];
  index: IndexFile | undefined;
  problems: SpillwayError[];
  warnings: string[];
}

async function readIndex(path: string): Promise<IndexFile> {
  let json: unknown;
  try {
    json = JSON.parse(await readFile(path, 'utf8'));
  } catch (err) {
    throw weightsError(path, undefined, `cannot read index: ${(err as Error).message}`);
  }
  const map = (json as { weight_map?: unknown } | null)?.weight_map;
  if (typeof map !== 'object' || map === null || Array.isArray(map)) throw weightsError(path, undefined, 'index has no weight_map object');
  const weightMap = new Map<string, string>();
  for (const [name, file] of Object.entries(map)) {
    if (typeof file !== 'string' || file === '') throw weightsError(path, name, `weight_map entry ${JSON.stringify(file)} is not a file name`);
    // The index names files beside it; one that points elsewhere is refused.
    if (isAbsolute(file) || file.split(/[\\/]/).includes('..')) throw weightsError(path, name, `weight_map names "${file}", outside the index's directory`);
    weightMap.set(name, resolve(dirname(path), file));
  }
  const total = (json as { metadata?: { total_size?: unknown } }).metadata?.total_size;
  return { path, weightMap, totalSize: typeof total === 'number' ? total : undefined };
}

async function isFile(path: string): Promise<boolean> {
  return stat(path).then((s) => s.isFile(), () => false);
}

async function fromIndex(path: string, unlisted: string[]): Promise<Resolved> {
  const index = await readIndex(path);
  const problems: SpillwayError[] = [];
  const files: string[] = [];
  const firstTensor = new Map<string, string>();
  for (const [name, file] of index.weightMap) if (!firstTensor.has(file)) firstTensor.set(file, name);
  for (const [file, tensor] of [...firstTensor].sort(([a], [b]) => a.localeCompare(b))) {
    if (await isFile(file)) files.push(file);
    else problems.push(weightsError(path, tensor, `maps to ${basename(file)}, which does not exist`));
  }
  const listed = new Set(firstTensor.keys());
  const warnings = unlisted.filter((f) => !listed.has(f)).map((f) => `${f}: not in the index ${basename(path)}; ignored`);
  return { files, index, problems, warnings };
}

async function resolveSource(source: WeightsSource): Promise<Resolved> {
  if (typeof source !== 'string') return { files: source.map((f) => resolve(f)), index: undefined, problems: [], warnings: [] };
  const path = resolve(source);
  const info = await stat(path).catch(() => undefined);
  if (!info) throw weightsError(path, undefined, 'not found');
  if (!info.isDirectory()) {
    return path.endsWith('.json') ? fromIndex(path, []) : { files: [path], index: undefined, problems: [], warnings: [] };
  }
  const names = (await readdir(path)).sort();
  if (names.includes(SPLIT_MANIFEST)) {
    throw weightsError(path, undefined, `split for tensor parallelism (${SPLIT_MANIFEST}); read one rank-*-of-* directory, or name the rank and world in the configuration`);
  }
  const shards = names.filter((n) => n.endsWith('.safetensors')).map((n) => join(path, n));
  const indexes = names.filter((n) => n.endsWith(INDEX_SUFFIX));
  if (indexes.length > 1) throw weightsError(path, undefined, `holds ${indexes.length} index files (${indexes.join(', ')}); name one`);
  if (indexes.length === 1) return fromIndex(join(path, indexes[0]!), shards);
  if (shards.length === 0) throw weightsError(path, undefined, 'holds no .safetensors files');
  return { files: shards, index: undefined, problems: [], warnings: [] };
}

/**
 * Reads and checks every header of `source`, collecting every problem rather than stopping
 * at the first (doctor lists them all). A source that cannot be resolved at all throws.
 */
export async function inspectCheckpoint(source: WeightsSource): Promise<Inspection> {
  const resolved = await resolveSource(source);
  const problems = [...resolved.problems];
  const settled = await Promise.allSettled(resolved.files.map(readShardHeader));
  const files: ShardHeader[] = [];
  settled.forEach((r, i) => {
    if (r.status === 'fulfilled') files.push(r.value);
    else problems.push(r.reason instanceof SpillwayError ? r.reason : weightsError(resolved.files[i]!, undefined, String(r.reason), 'IO_ERROR'));
  });

  const byName = new Map<string, SourceTensor>();
  const tensors: SourceTensor[] = [];
  for (const file of files) {
    for (const t of file.tensors) {
      const other = byName.get(t.name);
      if (other) {
        problems.push(weightsError(file.path, t.name, `also in ${other.file.path}: names must be unique across files`));
        continue;
      }
      const tensor = { name: t.name, dtype: t.dtype, shape: t.shape, file, fileOffset: file.dataStart + t.begin, bytes: t.end - t.begin };
      byName.set(t.name, tensor);
      tensors.push(tensor);
    }
  }
  const totalBytes = tensors.reduce((sum, t) => sum + t.bytes, 0);
  const warnings = [...resolved.warnings];

  const index = resolved.index;
  if (index) {
    const read = new Set(files.map((f) => f.path));
    for (const [name, file] of index.weightMap) {
      const found = byName.get(name);
      if (read.has(file) && !found) {
        problems.push(weightsError(index.path, name, `maps to ${basename(file)}, whose header has no such tensor`));
      }
    }
    for (const t of tensors) {
      const mapped = index.weightMap.get(t.name);
      if (mapped !== t.file.path) {
        problems.push(weightsError(t.file.path, t.name, mapped ? `the index maps it to ${basename(mapped)}` : `not in the index ${basename(index.path)}`));
      }
    }
    if (index.totalSize !== undefined && index.totalSize !== totalBytes) {
      warnings.push(`${index.path}: metadata.total_size is ${index.totalSize}, the tensors hold ${totalBytes} bytes`);
    }
  }
  return { checkpoint: { files, tensors, byName, totalBytes, warnings }, problems };
}

/** The first of several problems, saying how many there were. */
export function firstProblem(problems: readonly SpillwayError[]): SpillwayError {
  const first = problems[0]!;
  if (problems.length === 1) return first;
  return new SpillwayError(first.code, `${first.message} (and ${problems.length - 1} more problems)`, {
    ...first.details,
    problems: problems.map((p) => p.message),
  });
}

/** A checkpoint with no problems, or the first problem thrown. */
export async function openCheckpoint(source: WeightsSource): Promise<Checkpoint> {
  const { checkpoint, problems } = await inspectCheckpoint(source);
  if (problems.length > 0) throw firstProblem(problems);
  return checkpoint;
}
