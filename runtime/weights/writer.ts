/**
 * Writes safetensors files as a stream: the header is fixed up front from names, dtypes and
 * shapes, then tensor bytes are appended in the same order, so no tensor need be whole in
 * memory at once. Used by `spillway weights split` and by the tests' fixtures.
 */
import { open, type FileHandle } from 'node:fs/promises';
import { SpillwayError, weightsError } from '../errors.js';
import { METADATA_KEY, tensorBytes, type WeightDtype } from './format.js';

export interface TensorSpec {
  name: string;
  dtype: WeightDtype;
  shape: number[];
}

/**
 * The 8-byte length and the JSON header for `tensors` laid out back to back in the given
 * order, padded with spaces (as the format allows) so the data section starts 8-aligned.
 */
export function encodeHeader(tensors: readonly TensorSpec[], metadata: Record<string, string> = {}): { header: Buffer; dataBytes: number } {
  const json: Record<string, unknown> = {};
  if (Object.keys(metadata).length > 0) json[METADATA_KEY] = metadata;
  let offset = 0;
  for (const t of tensors) {
    if (Object.hasOwn(json, t.name)) throw new SpillwayError('INVALID_ARGUMENT', `tensor "${t.name}" is listed twice`);
    const bytes = tensorBytes(t.dtype, t.shape);
    json[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  const text = Buffer.from(JSON.stringify(json), 'utf8');
  const padded = Math.ceil(text.length / 8) * 8;
  const header = Buffer.alloc(8 + padded, 0x20);
  header.writeBigUInt64LE(BigInt(padded), 0);
  text.copy(header, 8);
  return { header, dataBytes: offset };
}

export class SafetensorsWriter {
  private written = 0;

  private constructor(
    readonly path: string,
    private readonly fh: FileHandle,
    private readonly dataStart: number,
    readonly dataBytes: number,
  ) {}

  /** Creates (or truncates) `path` and writes its header. */
  static async create(path: string, tensors: readonly TensorSpec[], metadata: Record<string, string> = {}): Promise<SafetensorsWriter> {
    const { header, dataBytes } = encodeHeader(tensors, metadata);
    let fh: FileHandle;
    try {
      fh = await open(path, 'w');
    } catch (err) {
      throw weightsError(path, undefined, `cannot create: ${(err as Error).message}`, 'IO_ERROR');
    }
    try {
      await fh.write(header, 0, header.length, 0);
    } catch (err) {
      await fh.close();
      throw weightsError(path, undefined, `cannot write: ${(err as Error).message}`, 'IO_ERROR');
    }
    return new SafetensorsWriter(path, fh, header.length, dataBytes);
  }

  /** Appends the next bytes of the data section. */
  async append(chunk: Uint8Array): Promise<void> {
    if (this.written + chunk.length > this.dataBytes) {
      throw weightsError(this.path, undefined, `${this.written + chunk.length} data bytes written, more than the ${this.dataBytes} the header declares`, 'INTERNAL');
    }
    let done = 0;
    try {
      while (done < chunk.length) {
        const { bytesWritten } = await this.fh.write(chunk, done, chunk.length - done, this.dataStart + this.written + done);
        done += bytesWritten;
      }
    } catch (err) {
      throw weightsError(this.path, undefined, `cannot write: ${(err as Error).message}`, (err as NodeJS.ErrnoException).code === 'ENOSPC' ? 'DISK_FULL' : 'IO_ERROR');
    }
    this.written += chunk.length;
  }

  /** Closes the file; fails if fewer bytes were appended than the header declares. */
  async close(): Promise<void> {
    await this.fh.close();
    if (this.written !== this.dataBytes) {
      throw weightsError(this.path, undefined, `${this.written} data bytes written, the header declares ${this.dataBytes}`, 'INTERNAL');
    }
  }

  /** Closes the file without the completeness check (the caller is failing anyway). */
  async abort(): Promise<void> {
    await this.fh.close();
  }
}

/** Writes a whole file from in-memory tensors. */
export async function writeSafetensors(path: string, tensors: ReadonlyArray<TensorSpec & { data: Uint8Array }>, metadata: Record<string, string> = {}): Promise<void> {
  const writer = await SafetensorsWriter.create(path, tensors, metadata);
  try {
    for (const t of tensors) {
      if (t.data.length !== tensorBytes(t.dtype, t.shape)) {
        throw weightsError(path, t.name, `${t.data.length} bytes given for shape ${JSON.stringify(t.shape)} of ${t.dtype}`, 'INVALID_ARGUMENT');
      }
      await writer.append(t.data);
    }
  } catch (err) {
    await writer.abort();
    throw err;
  }
  await writer.close();
}
