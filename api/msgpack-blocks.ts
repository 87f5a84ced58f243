/**
 * Batches of blocks as msgpack written by hand, headers around the blocks' own buffers:
 * the batch-read answer, { blocks: [{ index, tier, format, lossy, promoted, data }] }, and
 * the batch-write body, { blocks: [{ index, data, tokens? }] }, each as parts sent in order
 * without joining them. msgpackr's general encoder takes ~5 ms a MiB of bin data
 * (300-400 ms for a 64 MiB answer; 4-18 ms for a batch of eight 2 MiB blocks on the thread
 * of a client that also times its requests), growing and copying its buffer as it goes.
 * The answer is decoded here too, so that a client can read it into memory shared with its
 * threads: msgpackr's native string decoding refuses a SharedArrayBuffer.
 */
import { Packr } from 'msgpackr';

export interface BlockEntry {
  index: number;
  tier: string;
  format: string;
  lossy: boolean;
  promoted: boolean;
  data: Uint8Array;
}

/** A msgpack str of at most 31 bytes (fixstr): every key and enum value here is one. */
function fixstr(s: string): Buffer {
  const bytes = Buffer.from(s, 'utf8');
  if (bytes.length > 31) throw new RangeError(`"${s}" is longer than a msgpack fixstr`);
  return Buffer.concat([Buffer.of(0xa0 | bytes.length), bytes]);
}

const KEYS = Object.fromEntries(['blocks', 'index', 'tier', 'format', 'lossy', 'promoted', 'data', 'tokens'].map((k) => [k, fixstr(k)])) as Record<string, Buffer>;
const TRUE = Buffer.of(0xc3);
const FALSE = Buffer.of(0xc2);

function uint32(tag: number, n: number): Buffer {
  const b = Buffer.alloc(5);
  b[0] = tag;
  b.writeUInt32BE(n, 1);
  return b;
}

/**
 * The batch-read answer as parts to send in order (their total is the content-length): one
 * joined header before each block, then the block's data, not copied. The server streams
 * them without corking, so each header is one part rather than a dozen tiny ones. Decodes
 * with any msgpack decoder to the same value msgpackr would have written.
 */
export function encodeBlockBatch(blocks: BlockEntry[]): Uint8Array[] {
  const parts: Uint8Array[] = [];
  let head: Uint8Array[] = [Buffer.of(0x81), KEYS.blocks!, uint32(0xdd, blocks.length)];
  for (const b of blocks) {
    head.push(
      Buffer.of(0x86),
      KEYS.index!, uint32(0xce, b.index),
      KEYS.tier!, fixstr(b.tier),
      KEYS.format!, fixstr(b.format),
      KEYS.lossy!, b.lossy ? TRUE : FALSE,
      KEYS.promoted!, b.promoted ? TRUE : FALSE,
      KEYS.data!, uint32(0xc6, b.data.byteLength),
    );
    parts.push(Buffer.concat(head), b.data);
    head = [];
  }
  if (head.length > 0) parts.push(Buffer.concat(head));
  return parts;
}

/** Reads the msgpack values the batch answer holds: maps, arrays, strings, unsigned integers, booleans, nil and bin (a view of the body). */
class Reader {
  at = 0;
  constructor(private readonly b: Buffer) {}

  private uint(bytes: 1 | 2 | 4): number {
    const n = this.b.readUIntBE(this.at, bytes);
    this.at += bytes;
    return n;
  }

  private take(n: number): Buffer {
    if (this.at + n > this.b.length) throw new RangeError(`msgpack value runs past the end (${this.at + n} of ${this.b.length} bytes)`);
    return this.b.subarray(this.at, (this.at += n));
  }

  private map(n: number): Record<string, unknown> {
    const out: Record<string, unknown> = {};
    for (let i = 0; i < n; i++) out[String(this.value())] = this.value();
    return out;
  }

  private array(n: number): unknown[] {
    return Array.from({ length: n }, () => this.value());
  }

  value(): unknown {
    const tag = this.uint(1);
    if (tag < 0x80) return tag;
    if (tag < 0x90) return this.map(tag & 0x0f);
    if (tag < 0xa0) return this.array(tag & 0x0f);
    if (tag < 0xc0) return this.take(tag & 0x1f).toString('utf8');
    switch (tag) {
      case 0xc0: return null;
      case 0xc2: return false;
      case 0xc3: return true;
      case 0xc4: return this.take(this.uint(1));
      case 0xc5: return this.take(this.uint(2));
      case 0xc6: return this.take(this.uint(4));
      case 0xcc: return this.uint(1);
      case 0xcd: return this.uint(2);
      case 0xce: return this.uint(4);
      case 0xd9: return this.take(this.uint(1)).toString('utf8');
      case 0xda: return this.take(this.uint(2)).toString('utf8');
      case 0xdb: return this.take(this.uint(4)).toString('utf8');
      case 0xdc: return this.array(this.uint(2));
      case 0xdd: return this.array(this.uint(4));
      case 0xde: return this.map(this.uint(2));
      case 0xdf: return this.map(this.uint(4));
      default: throw new RangeError(`msgpack type 0x${tag.toString(16)} at byte ${this.at - 1} is not one a batch answer holds`);
    }
  }
}

/** The blocks of a batch-read answer as encodeBlockBatch (or any msgpack encoder) wrote it; each one's data is a view of `body`. */
export function decodeBlockBatch(body: Buffer): Array<BlockEntry & { data: Buffer }> {
  const reader = new Reader(body);
  const answer = reader.value() as { blocks?: unknown };
  if (reader.at !== body.length || !Array.isArray(answer?.blocks)) throw new RangeError('not a batch-read answer: { blocks: [...] } and nothing after it');
  return answer.blocks as Array<BlockEntry & { data: Buffer }>;
}

export interface WriteEntry {
  index: number;
  data: Uint8Array;
  tokens?: number[];
}

/** Small values (indices, token lists) through the general encoder: what it writes is what the server reads. */
const packr = new Packr({ useRecords: false });
const packSmall = (v: unknown): Buffer => Buffer.from(packr.pack(v));

/**
 * The batch-write body as parts to send in order (their total is the content-length); each
 * block's data is one of them, not copied. Decodes to the same value msgpackr would write.
 */
export function encodeWriteBatch(blocks: WriteEntry[]): Uint8Array[] {
  const parts: Uint8Array[] = [Buffer.of(0x81), KEYS.blocks!, uint32(0xdd, blocks.length)];
  for (const b of blocks) {
    parts.push(Buffer.of(0x80 | (b.tokens === undefined ? 2 : 3)), KEYS.index!, packSmall(b.index), KEYS.data!, uint32(0xc6, b.data.byteLength), b.data);
    if (b.tokens !== undefined) parts.push(KEYS.tokens!, packSmall(b.tokens));
  }
  return parts;
}
