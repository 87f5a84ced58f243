/**
 * Tensor-parallel sharding: which way each tensor splits (rules by name pattern), what one
 * rank's slice of a tensor is, and the manifest of a checkpoint split per rank.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { errors, weightsError } from '../errors.js';
import { WEIGHT_DTYPE_BYTES, isDtype, tensorBytes, type WeightDtype } from './format.js';

export const SPLIT_KINDS = ['column', 'row', 'replicated'] as const;
export type SplitKind = (typeof SPLIT_KINDS)[number];

export interface SplitRule {
  /** A glob over the whole tensor name: `*` is any run of characters, `?` one character. */
  pattern: string;
  split: SplitKind;
}

/**
 * Llama-style names (Hugging Face): attention q/k/v and MLP gate/up are column-parallel,
 * o and down row-parallel, embeddings and lm_head vocab-parallel (split on dim 0, the
 * vocabulary). Norms and anything no rule names are replicated.
 */
export const LLAMA_RULES: readonly SplitRule[] = [
  ...['q_proj', 'k_proj', 'v_proj', 'gate_proj', 'up_proj'].map((p) => ({ pattern: `*.${p}.*`, split: 'column' as const })),
  ...['o_proj', 'down_proj'].map((p) => ({ pattern: `*.${p}.*`, split: 'row' as const })),
  { pattern: '*embed_tokens.*', split: 'column' },
  { pattern: '*lm_head.*', split: 'column' },
];

const RulesFile = z.array(z.object({ pattern: z.string().min(1), split: z.enum(SPLIT_KINDS) }).strict());

/** Reads a rules file (a JSON list of {pattern, split}); its rules come before the defaults. */
export async function readRules(path: string | undefined): Promise<SplitRule[]> {
  if (path === undefined) return [...LLAMA_RULES];
  let parsed;
  try {
    parsed = RulesFile.safeParse(JSON.parse(await readFile(path, 'utf8')));
  } catch (err) {
    throw errors.badRulesFile(path, (err as Error).message);
  }
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw errors.badRulesFile(path, `[${issue.path.join('.')}] ${issue.message}`);
  }
  return [...parsed.data, ...LLAMA_RULES];
}

function globToRegExp(pattern: string): RegExp {
  const body = pattern.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.');
  return new RegExp(`^${body}$`);
}

/** The split kind for each name: the first matching rule, replicated when none matches. */
export function ruleMatcher(rules: readonly SplitRule[]): (name: string) => SplitKind {
  const compiled = rules.map((r) => ({ re: globToRegExp(r.pattern), split: r.split }));
  return (name) => compiled.find((r) => r.re.test(name))?.split ?? 'replicated';
}

/** One rank's part of a tensor, seen as `outer` rows each holding one piece per rank. */
export interface TensorSplit {
  /** As applied: a 1-D row-parallel tensor (a bias) and any scalar are replicated. */
  kind: SplitKind;
  /** The split dimension; undefined when replicated. */
  dim: number | undefined;
  /** One rank's shape. */
  shape: number[];
  /** Product of the dimensions before `dim` (1 when replicated). */
  outer: number;
  /** Bytes of one outer row of the full tensor. */
  rowBytes: number;
  /** Bytes of one rank's piece of each outer row. */
  pieceBytes: number;
}

/**
 * Column-parallel splits dim 0, row-parallel the last dimension. A dimension that does
 * not divide by `world` is refused: there is no remainder rule.
 */
export function splitTensor(file: string, t: { name: string; dtype: WeightDtype; shape: readonly number[] }, kind: SplitKind, world: number): TensorSplit {
  const whole = tensorBytes(t.dtype, t.shape);
  const dim = kind === 'replicated' || t.shape.length === 0 || (kind === 'row' && t.shape.length === 1)
    ? undefined
    : kind === 'column' ? 0 : t.shape.length - 1;
  if (dim === undefined) return { kind: 'replicated', dim, shape: [...t.shape], outer: 1, rowBytes: whole, pieceBytes: whole };
  const size = t.shape[dim]!;
  if (size % world !== 0) {
    throw weightsError(file, t.name, `${kind}-parallel split of dim ${dim} (${size}) of shape ${JSON.stringify(t.shape)} does not divide by world ${world}`, 'WEIGHTS_SHARDING');
  }
  const shape = t.shape.map((d, i) => (i === dim ? d / world : d));
  const outer = t.shape.slice(0, dim).reduce((a, b) => a * b, 1);
  const rowBytes = t.shape.slice(dim).reduce((a, b) => a * b, WEIGHT_DTYPE_BYTES[t.dtype]);
  return { kind, dim, shape, outer, rowBytes, pieceBytes: rowBytes / world };
}

/** Where `rank`'s piece of outer row `row` starts, relative to the tensor's first byte. */
export function pieceOffset(split: TensorSplit, rank: number, row: number): number {
  return row * split.rowBytes + (split.dim === undefined ? 0 : rank * split.pieceBytes);
}

/** A rank's slice is one byte range of the full tensor only when there is one outer row. */
export function isContiguous(split: TensorSplit): boolean {
  return split.outer <= 1 || split.pieceBytes === split.rowBytes;
}

export const SPLIT_MANIFEST = 'spillway-split.json';

export function rankDirName(rank: number, world: number): string {
  const pad = (n: number) => String(n).padStart(5, '0');
  return `rank-${pad(rank)}-of-${pad(world)}`;
}

const Manifest = z.object({
  format: z.literal('spillway-split'),
  version: z.literal(1),
  world: z.number().int().min(1),
  tensors: z.record(z.string(), z.object({
    dtype: z.string().refine(isDtype, 'unknown dtype'),
    shape: z.array(z.number().int().nonnegative()),
    split: z.enum(SPLIT_KINDS),
  }).strict()),
}).strict();

export type SplitManifest = z.infer<typeof Manifest>;

/** The manifest of a split checkpoint directory, or undefined when `dir` has none. */
export async function readSplitManifest(dir: string): Promise<SplitManifest | undefined> {
  const path = join(dir, SPLIT_MANIFEST);
  let text;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
    throw weightsError(path, undefined, `cannot read: ${(err as Error).message}`, 'IO_ERROR');
  }
  let parsed;
  try {
    parsed = Manifest.safeParse(JSON.parse(text));
  } catch (err) {
    throw weightsError(path, undefined, `not valid JSON: ${(err as Error).message}`);
  }
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw weightsError(path, undefined, `[${issue.path.join('.')}] ${issue.message}`);
  }
  return parsed.data;
}
