/**
 * The load plan: which byte ranges of which files one rank reads, and where each lands in
 * one destination arena. Reads are coalesced per file and 4 KiB-aligned in file offset,
 * length and arena offset, so an O_DIRECT or cuFile sink can issue them as they are: each
 * aligned read gets its own stretch of arena, and the bytes it pulls in around the wanted
 * ones (neighbouring data, the header, the tail past a slice) land in that stretch too.
 */
import { SpillwayError } from '../errors.js';
import type { WeightDtype } from './format.js';

export const ALIGN = 4096;

/** One tensor (or one rank's slice of it) as a byte range of a file. */
export interface Selection {
  name: string;
  dtype: WeightDtype;
  shape: number[];
  path: string;
  fileBytes: number;
  fileOffset: number;
  bytes: number;
}

/** What the runtime exposes once loaded: where each tensor sits in the arena. */
export interface PlannedTensor {
  name: string;
  dtype: WeightDtype;
  shape: number[];
  arenaOffset: number;
  bytes: number;
}

export interface ReadRequest {
  /** Index into `LoadPlan.files`. */
  file: number;
  path: string;
  /** Aligned to ALIGN. */
  fileOffset: number;
  /** A multiple of ALIGN; may run past the end of the file. */
  length: number;
  /** The bytes of `length` before the end of the file: a sink must deliver at least these. */
  required: number;
  /** Aligned to ALIGN. */
  arenaOffset: number;
}

export interface LoadPlan {
  rank: number;
  world: number;
  /** whole: every tensor of an unsplit checkpoint; presplit: a rank directory; slice: rank slices of an unsplit one. */
  layout: 'whole' | 'presplit' | 'slice';
  files: Array<{ path: string; bytes: number }>;
  tensors: PlannedTensor[];
  /** Interleaved across files, so reads in flight spread over them. */
  requests: ReadRequest[];
  /** Destination bytes, alignment padding included: what a device must set aside. */
  arenaBytes: number;
  tensorBytes: number;
  /** Bytes the reads move from disk (sum of `required`). */
  readBytes: number;
}

const alignDown = (n: number) => Math.floor(n / ALIGN) * ALIGN;
const alignUp = (n: number) => Math.ceil(n / ALIGN) * ALIGN;

interface Segment {
  start: number;
  end: number;
  items: Selection[];
}

export function buildPlan(selected: readonly Selection[], opts: { requestBytes: number; rank: number; world: number; layout: LoadPlan['layout'] }): LoadPlan {
  if (opts.requestBytes < ALIGN || opts.requestBytes % ALIGN !== 0) {
    throw new SpillwayError('INVALID_ARGUMENT', `request size ${opts.requestBytes} is not a positive multiple of ${ALIGN}`);
  }
  const byFile = new Map<string, Selection[]>();
  for (const s of selected) {
    const list = byFile.get(s.path) ?? [];
    list.push(s);
    byFile.set(s.path, list);
  }

  const files: LoadPlan['files'] = [];
  const tensors: PlannedTensor[] = [];
  const perFile: ReadRequest[][] = [];
  let arena = 0;
  for (const [path, items] of byFile) {
    const file = files.length;
    const fileBytes = items[0]!.fileBytes;
    files.push({ path, bytes: fileBytes });
    const requests: ReadRequest[] = [];
    perFile.push(requests);

    // Ranges whose aligned windows touch or overlap share one segment, read once.
    const segments: Segment[] = [];
    for (const item of [...items].sort((a, b) => a.fileOffset - b.fileOffset)) {
      if (item.bytes === 0) {
        tensors.push({ name: item.name, dtype: item.dtype, shape: item.shape, arenaOffset: 0, bytes: 0 });
        continue;
      }
      const start = alignDown(item.fileOffset);
      const end = alignUp(item.fileOffset + item.bytes);
      const last = segments[segments.length - 1];
      if (last && start <= last.end) {
        last.end = Math.max(last.end, end);
        last.items.push(item);
      } else {
        segments.push({ start, end, items: [item] });
      }
    }

    for (const seg of segments) {
      for (const item of seg.items) {
        tensors.push({ name: item.name, dtype: item.dtype, shape: item.shape, arenaOffset: arena + item.fileOffset - seg.start, bytes: item.bytes });
      }
      for (let at = seg.start; at < seg.end; at += opts.requestBytes) {
        const length = Math.min(opts.requestBytes, seg.end - at);
        const required = Math.min(at + length, fileBytes) - at;
        requests.push({ file, path, fileOffset: at, length, required, arenaOffset: arena + at - seg.start });
      }
      arena += seg.end - seg.start;
    }
  }

  const requests: ReadRequest[] = [];
  const longest = Math.max(0, ...perFile.map((list) => list.length));
  for (let i = 0; i < longest; i++) {
    for (const list of perFile) if (i < list.length) requests.push(list[i]!);
  }
  return {
    rank: opts.rank,
    world: opts.world,
    layout: opts.layout,
    files,
    tensors,
    requests,
    arenaBytes: arena,
    tensorBytes: tensors.reduce((n, t) => n + t.bytes, 0),
    readBytes: requests.reduce((n, r) => n + r.required, 0),
  };
}

/**
 * Device bytes the weights of the plan's rank need (the arena, alignment padding included):
 * what the capacity report subtracts from device memory before sizing the KV tiers.
 */
export function weightsBytes(plan: LoadPlan): number {
  return plan.arenaBytes;
}
