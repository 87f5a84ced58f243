/**
 * The safetensors format: an 8-byte little-endian header length N, N bytes of UTF-8 JSON
 * (`{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__"?: {string: string}}`,
 * offsets relative to the data section), then the data section. Everything here checks a
 * header completely before any tensor byte is read; docs/WEIGHTS.md lists the rules.
 */
import { open, type FileHandle } from 'node:fs/promises';
import { weightsError } from '../errors.js';

/** Bytes per element of every byte-addressable safetensors dtype. */
export const WEIGHT_DTYPE_BYTES = {
  BOOL: 1, U8: 1, I8: 1, F8_E4M3: 1, F8_E5M2: 1, F8_E8M0: 1,
  I16: 2, U16: 2, F16: 2, BF16: 2,
  I32: 4, U32: 4, F32: 4,
  I64: 8, U64: 8, F64: 8, C64: 8,
} as const;
export type WeightDtype = keyof typeof WEIGHT_DTYPE_BYTES;

/** Packed sub-byte dtypes: valid safetensors, but their slices do not fall on byte boundaries. */
const SUB_BYTE = new Set(['F4', 'F6_E2M3', 'F6_E3M2']);

/** The reference implementation's cap on N; anything larger is not a real header. */
export const HEADER_CAP = 100_000_000;
export const METADATA_KEY = '__metadata__';

export interface TensorEntry {
  name: string;
  dtype: WeightDtype;
  shape: number[];
  /** Offsets in the data section, [begin, end). */
  begin: number;
  end: number;
}

export interface ShardHeader {
  path: string;
  fileBytes: number;
  /** Where the data section starts: 8 + N. */
  dataStart: number;
  metadata: Record<string, string>;
  /** In data-section order. */
  tensors: TensorEntry[];
}

export function isDtype(value: unknown): value is WeightDtype {
  return typeof value === 'string' && Object.hasOwn(WEIGHT_DTYPE_BYTES, value);
}

/** The product of `shape`, or undefined when it is not a safe integer. */
export function elementCount(shape: readonly number[]): number | undefined {
  let n = 1;
  for (const d of shape) {
    n *= d;
    if (!Number.isSafeInteger(n)) return undefined;
  }
  return n;
}

export function tensorBytes(dtype: WeightDtype, shape: readonly number[]): number {
  return elementCount(shape)! * WEIGHT_DTYPE_BYTES[dtype];
}

const isCount = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;

/**
 * JSON.parse keeps the last of duplicate keys silently; the format forbids them. Scans
 * already-valid JSON for a repeated key of the top-level object.
 */
function duplicateTopLevelKey(text: string): string | undefined {
  const seen = new Set<string>();
  let depth = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '"') {
      const start = i;
      for (i++; text[i] !== '"'; i++) if (text[i] === '\\') i++;
      if (depth !== 1) continue;
      let j = i + 1;
      while (/\s/.test(text[j] ?? '')) j++;
      if (text[j] !== ':') continue;
      const key = JSON.parse(text.slice(start, i + 1)) as string;
      if (seen.has(key)) return key;
      seen.add(key);
    } else if (c === '{' || c === '[') {
      depth++;
    } else if (c === '}' || c === ']') {
      depth--;
    }
  }
  return undefined;
}

function checkEntry(path: string, name: string, value: unknown, dataBytes: number): TensorEntry {
  const fail = (problem: string) => weightsError(path, name, problem);
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw fail('entry is not an object');
  const { dtype, shape, data_offsets: offsets } = value as Record<string, unknown>;
  if (typeof dtype !== 'string') throw fail('dtype is missing');
  if (SUB_BYTE.has(dtype)) throw fail(`sub-byte dtype ${dtype} is not supported`);
  if (!isDtype(dtype)) throw fail(`unknown dtype "${dtype}" (known: ${Object.keys(WEIGHT_DTYPE_BYTES).join(' ')})`);
  if (!Array.isArray(shape) || !shape.every(isCount)) throw fail(`shape ${JSON.stringify(shape)} is not a list of non-negative integers`);
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isCount)) {
    throw fail(`data_offsets ${JSON.stringify(offsets)} is not [begin, end] of non-negative integers`);
  }
  const [begin, end] = offsets as [number, number];
  if (end < begin) throw fail(`data_offsets [${begin}, ${end}] end before they begin`);
  const count = elementCount(shape);
  if (count === undefined) throw fail(`shape ${JSON.stringify(shape)} has too many elements`);
  const bytes = count * WEIGHT_DTYPE_BYTES[dtype];
  if (end - begin !== bytes) {
    throw fail(`shape ${JSON.stringify(shape)} of ${dtype} is ${bytes} bytes but data_offsets [${begin}, ${end}] hold ${end - begin}`);
  }
  if (end > dataBytes) {
    throw fail(`data_offsets [${begin}, ${end}] run past the end of the data section (${dataBytes} bytes): file truncated or offsets wrong`);
  }
  return { name, dtype, shape, begin, end };
}

/**
 * Validates a header read from `path` (`fileBytes` long, header length `headerBytes`).
 * Tensors must tile the data section exactly: no overlap, no hole, nothing after the last.
 */
export function parseHeader(path: string, fileBytes: number, headerBytes: number, raw: Uint8Array): ShardHeader {
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(raw);
  } catch {
    throw weightsError(path, undefined, 'header is not valid UTF-8');
  }
  if (!text.startsWith('{')) throw weightsError(path, undefined, 'header does not start with "{"');
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw weightsError(path, undefined, `header is not valid JSON: ${(err as Error).message}`);
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw weightsError(path, undefined, 'header is not a JSON object');
  const duplicate = duplicateTopLevelKey(text);
  if (duplicate !== undefined) throw weightsError(path, duplicate, 'appears twice in the header');

  const dataStart = 8 + headerBytes;
  const dataBytes = fileBytes - dataStart;
  let metadata: Record<string, string> = {};
  const tensors: TensorEntry[] = [];
  for (const [name, value] of Object.entries(json)) {
    if (name === METADATA_KEY) {
      const ok = typeof value === 'object' && value !== null && !Array.isArray(value) && Object.values(value).every((v) => typeof v === 'string');
      if (!ok) throw weightsError(path, undefined, `${METADATA_KEY} must map strings to strings`);
      metadata = value as Record<string, string>;
    } else {
      tensors.push(checkEntry(path, name, value, dataBytes));
    }
  }

  tensors.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let cursor = 0;
  let previous: TensorEntry | undefined;
  for (const t of tensors) {
    if (t.begin < cursor) {
      throw weightsError(path, t.name, `data_offsets [${t.begin}, ${t.end}] overlap tensor "${previous!.name}" [${previous!.begin}, ${previous!.end}]`);
    }
    if (t.begin > cursor) {
      throw weightsError(path, t.name, `data_offsets [${t.begin}, ${t.end}] leave a hole of ${t.begin - cursor} bytes at data offset ${cursor}`);
    }
    cursor = t.end;
    previous = t;
  }
  if (cursor !== dataBytes) {
    throw weightsError(path, undefined, `data section is ${dataBytes} bytes but tensors cover ${cursor}: ${dataBytes - cursor} trailing bytes belong to no tensor`);
  }
  return { path, fileBytes, dataStart, metadata, tensors };
}

/** Reads and validates the header of one safetensors file; reads no tensor data. */
export async function readShardHeader(path: string): Promise<ShardHeader> {
  const fh = await openForRead(path);
  try {
    const fileBytes = (await fh.stat()).size;
    if (fileBytes < 8) throw weightsError(path, undefined, `truncated: ${fileBytes} bytes, shorter than the 8-byte header length`);
    const prefix = Buffer.alloc(8);
    await readExactly(fh, path, prefix, 0, 8, 0);
    const declared = prefix.readBigUInt64LE(0);
    if (declared > BigInt(HEADER_CAP)) throw weightsError(path, undefined, `header length ${declared} exceeds the ${HEADER_CAP}-byte cap`);
    const headerBytes = Number(declared);
    if (headerBytes < 2) throw weightsError(path, undefined, `header length ${headerBytes} is too short for a JSON object`);
    if (8 + headerBytes > fileBytes) {
      throw weightsError(path, undefined, `truncated header: header length ${headerBytes} but only ${fileBytes - 8} bytes follow it`);
    }
    const raw = Buffer.alloc(headerBytes);
    await readExactly(fh, path, raw, 0, headerBytes, 8);
    return parseHeader(path, fileBytes, headerBytes, raw);
  } finally {
    await fh.close();
  }
}

export async function openForRead(path: string): Promise<FileHandle> {
  try {
    return await open(path, 'r');
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw e.code === 'ENOENT' ? weightsError(path, undefined, 'file not found') : weightsError(path, undefined, `cannot open: ${e.message}`, 'IO_ERROR');
  }
}

/** Reads exactly `length` bytes at `position`; a file shorter than its header said is an I/O error. */
export async function readExactly(fh: FileHandle, path: string, into: Uint8Array, offset: number, length: number, position: number): Promise<void> {
  let done = 0;
  while (done < length) {
    let bytesRead;
    try {
      ({ bytesRead } = await fh.read(into, offset + done, length - done, position + done));
    } catch (err) {
      throw weightsError(path, undefined, `read at offset ${position + done} failed: ${(err as Error).message}`, 'IO_ERROR');
    }
    if (bytesRead === 0) {
      throw weightsError(path, undefined, `short read at offset ${position + done}: ${done} of ${length} bytes (the file changed after its header was read?)`, 'IO_ERROR');
    }
    done += bytesRead;
  }
}
