/**
 * The shared tier: committed blocks in one directory of a filesystem every server of a
 * fleet mounts (Lustre, NFS, any POSIX mount), so that a prefix one server committed is a
 * cache hit on the others. No coordinator: the files themselves are the protocol.
 *
 * - One file per block, content-addressed: `<prefix hash>.<params digest>.kv`, where the
 *   digest covers the quantized format's header (format version, geometry, dtype, bits,
 *   variant, seed) and the block size, so two models or quantizations never share a file.
 * - A file is a 64-byte header (below) and the block's stored bytes, exactly what
 *   `read(..., {format: 'stored'})` returns.
 * - Publishing writes a unique temporary name in the same directory, fsyncs it and renames
 *   it over the final name: a reader sees a whole file or none. A file already there is not
 *   written again; two servers racing past that check both rename whole files.
 * - A read verifies size, header, params digest, prefix hash, payload CRC-32C and the
 *   quantized header; a missing, torn or foreign file is a miss (and a bad one is removed
 *   so that the next publisher replaces it), never data.
 * - Space: `tiers.shared.bytes` for the directory, all servers together. A publisher over
 *   the budget (as of its last scan plus what it wrote since) scans the directory and
 *   removes the files least recently used (mtime, set on every hit) down to 90% of it.
 *   Evictors race freely: a file gone when deleted or read is a miss, never an error.
 */
import { randomBytes, createHash } from 'node:crypto';
import { mkdir, open, readdir, rename, stat, unlink, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { Counter, Gauge, type Registry } from 'prom-client';
import type { Layout } from './layout.js';
import { Semaphore } from './lock.js';
import { addon, quantize } from './native.js';
import { expectedBlockHeader } from './recovery.js';

const MAGIC = Buffer.from('SPWSHARE', 'latin1');
const VERSION = 1;
export const SHARED_HEADER_BYTES = 64;
/** Offsets in the file header; the rest is zero. */
const H = { magic: 0, version: 8, payloadBytes: 12, digest: 16, hash: 32, payloadCrc: 48, headerCrc: 60 } as const;
const SUFFIX = '.kv';
const TEMP_SUFFIX = '.tmp';
/** Eviction stops at this share of the budget, so that every publish does not scan. */
const LOW_WATERMARK = 0.9;
/** A publisher trusts its own count this long before it scans the directory again. */
const RESCAN_MS = 30_000;
/** Temporary files older than this were left by a publisher that died: eviction removes them. */
const STALE_TEMP_MS = 10 * 60_000;
/** Publishes quantizing or writing at once, and waiting; past that a commit is not published (counted as skipped). */
const PUBLISHING = 4;
const MAX_WAITING = 64;
/** Block files read at once by one prefix pull. */
export const FETCH_WINDOW = 16;

export type MissReason = 'missing' | 'torn' | 'foreign' | 'checksum';
export type PublishResult = 'written' | 'exists' | 'skipped' | 'failed';

export interface SharedTierStatus {
  path: string;
  budgetBytes: number;
  /** Bytes in the directory as of the last scan plus what this server wrote since. */
  usedBytes: number;
  /** Files at the last scan; null before the first. */
  files: number | null;
  io: string;
  publish: string;
  hits: number;
  misses: Record<MissReason, number>;
  published: Record<PublishResult, number>;
  bytesRead: number;
  bytesWritten: number;
  evicted: number;
  lastError: string | null;
}

/** A directory entry's code from node:fs, where it has one. */
const errno = (err: unknown) => (err as NodeJS.ErrnoException).code;
/** Gone: deleted by another server's evictor, or a stale NFS handle of a file replaced. */
const gone = (err: unknown) => errno(err) === 'ENOENT' || errno(err) === 'ESTALE';

export class SharedTier {
  readonly path: string;
  readonly budgetBytes: number;
  /** 32 hex digits naming the model and quantization; in every file's name and header. */
  readonly digest: string;
  private readonly layout: Layout;
  private readonly blockHeader: Buffer;
  private readonly fileBytes: number;
  private readonly publishing = new Semaphore(PUBLISHING);
  private readonly inFlight = new Set<Promise<void>>();
  private usedBytes = 0;
  private files: number | null = null;
  private scannedAt = 0;
  private scanning: Promise<unknown> | null = null;
  private lastError: string | null = null;
  private readonly counts = {
    hits: 0, bytesRead: 0, bytesWritten: 0, evicted: 0,
    misses: { missing: 0, torn: 0, foreign: 0, checksum: 0 } as Record<MissReason, number>,
    published: { written: 0, exists: 0, skipped: 0, failed: 0 } as Record<PublishResult, number>,
  };
  private readonly metrics: { hits: Counter; misses: Counter; published: Counter; bytes: Counter; evicted: Counter };

  private constructor(path: string, budgetBytes: number, layout: Layout, blockHeader: Buffer, registry: Registry) {
    this.path = path;
    this.budgetBytes = budgetBytes;
    this.layout = layout;
    this.blockHeader = blockHeader;
    this.fileBytes = SHARED_HEADER_BYTES + layout.quantizedBlockBytes;
    const params = Buffer.alloc(8);
    params.writeBigUInt64LE(BigInt(layout.quantizedBlockBytes));
    this.digest = createHash('sha256').update(blockHeader).update(params).digest().subarray(0, 16).toString('hex');
    const registers = [registry];
    this.metrics = {
      hits: new Counter({ name: 'spillway_shared_hits_total', help: 'Blocks a prefix pull found in the shared tier', registers }),
      misses: new Counter({ name: 'spillway_shared_misses_total', help: 'Shared-tier reads that found no usable file, by why', labelNames: ['reason'], registers }),
      published: new Counter({ name: 'spillway_shared_published_total', help: 'Committed blocks offered to the shared tier, by outcome', labelNames: ['result'], registers }),
      bytes: new Counter({ name: 'spillway_shared_bytes_total', help: 'Bytes read from and written to the shared tier', labelNames: ['direction'], registers }),
      evicted: new Counter({ name: 'spillway_shared_evicted_total', help: 'Shared-tier files this server removed for space', registers }),
    };
    const tier = this;
    new Gauge({
      name: 'spillway_shared_dir_bytes', help: 'Bytes in the shared directory (last scan plus writes since)', registers,
      collect() {
        this.set(tier.usedBytes);
      },
    });
  }

  /** Opens (creating) the directory for the running configuration's blocks. */
  static async open(path: string, budgetBytes: number, layout: Layout, registry: Registry): Promise<SharedTier> {
    await mkdir(path, { recursive: true });
    const tier = new SharedTier(path, budgetBytes, layout, await expectedBlockHeader(layout), registry);
    await tier.scan();
    return tier;
  }

  fileName(hash: string): string {
    return `${hash}.${this.digest.slice(0, 16)}${SUFFIX}`;
  }

  // ---- reading ------------------------------------------------------------------------

  /**
   * The stored bytes of a committed block, verified, or null: a miss for a file that is
   * not there, torn, foreign or corrupt (a bad file is removed). A hit marks the file used.
   */
  async fetch(hash: string): Promise<Buffer | null> {
    const file = join(this.path, this.fileName(hash));
    let fh: FileHandle;
    try {
      fh = await open(file, 'r');
    } catch (err) {
      if (gone(err)) return this.miss('missing');
      throw err;
    }
    let bytes: Buffer;
    try {
      bytes = Buffer.allocUnsafe(this.fileBytes + 1);
      // One byte past the expected size: a longer file is as foreign as a shorter one is torn.
      let got = 0;
      for (;;) {
        const { bytesRead } = await fh.read(bytes, got, bytes.length - got, got);
        if (bytesRead === 0) break;
        got += bytesRead;
        if (got === bytes.length) break;
      }
      bytes = bytes.subarray(0, got);
      const why = this.verify(bytes, hash);
      if (why) {
        await this.remove(file);
        return this.miss(why);
      }
      const now = new Date();
      await fh.utimes(now, now).catch(() => undefined);
    } catch (err) {
      if (gone(err)) return this.miss('missing');
      throw err;
    } finally {
      await fh.close().catch(() => undefined);
    }
    this.counts.hits++;
    this.metrics.hits.inc();
    this.counts.bytesRead += bytes.length;
    this.metrics.bytes.inc({ direction: 'read' }, bytes.length);
    return bytes.subarray(SHARED_HEADER_BYTES);
  }

  /** Why `file` (a whole file's bytes) is not the block `hash` of this configuration, or undefined. */
  private verify(file: Buffer, hash: string): MissReason | undefined {
    if (file.length < SHARED_HEADER_BYTES) return 'torn';
    if (!file.subarray(H.magic, H.magic + MAGIC.length).equals(MAGIC) || file.readUInt16LE(H.version) !== VERSION) return 'foreign';
    if (addon.crc32c(file, 0, H.headerCrc) !== file.readUInt32LE(H.headerCrc)) return 'checksum';
    if (file.subarray(H.digest, H.digest + 16).toString('hex') !== this.digest) return 'foreign';
    if (file.subarray(H.hash, H.hash + 16).toString('hex') !== hash) return 'foreign';
    const payloadBytes = file.readUInt32LE(H.payloadBytes);
    if (payloadBytes !== this.layout.quantizedBlockBytes) return 'foreign';
    if (file.length !== SHARED_HEADER_BYTES + payloadBytes) return file.length < SHARED_HEADER_BYTES + payloadBytes ? 'torn' : 'foreign';
    if (addon.crc32c(file, SHARED_HEADER_BYTES, payloadBytes) !== file.readUInt32LE(H.payloadCrc)) return 'checksum';
    if (!file.subarray(SHARED_HEADER_BYTES, SHARED_HEADER_BYTES + this.blockHeader.length).equals(this.blockHeader)) return 'foreign';
    return undefined;
  }

  private miss(reason: MissReason): null {
    this.counts.misses[reason]++;
    this.metrics.misses.inc({ reason });
    return null;
  }

  // ---- publishing ---------------------------------------------------------------------

  /** The file header for a block's stored bytes. */
  header(hash: string, stored: Buffer): Buffer {
    const h = Buffer.alloc(SHARED_HEADER_BYTES);
    MAGIC.copy(h, H.magic);
    h.writeUInt16LE(VERSION, H.version);
    h.writeUInt32LE(stored.length, H.payloadBytes);
    h.write(this.digest, H.digest, 'hex');
    h.write(hash, H.hash, 'hex');
    h.writeUInt32LE(addon.crc32c(stored), H.payloadCrc);
    h.writeUInt32LE(addon.crc32c(h, 0, H.headerCrc), H.headerCrc);
    return h;
  }

  /**
   * Publishes a committed block's stored bytes: skipped when its file is there, else
   * written under a temporary name, synced and renamed into place.
   */
  async publish(hash: string, stored: Buffer): Promise<'written' | 'exists'> {
    const file = join(this.path, this.fileName(hash));
    if (await exists(file)) return 'exists';
    await this.makeRoom();
    const temp = join(this.path, `.${this.fileName(hash)}.${process.pid}.${randomBytes(6).toString('hex')}${TEMP_SUFFIX}`);
    const fh = await open(temp, 'wx');
    try {
      await fh.writev([this.header(hash, stored), stored]);
      await fh.sync();
      await fh.close();
      await rename(temp, file);
    } catch (err) {
      await fh.close().catch(() => undefined);
      await unlink(temp).catch(() => undefined);
      throw err;
    }
    this.usedBytes += this.fileBytes;
    this.counts.bytesWritten += this.fileBytes;
    this.metrics.bytes.inc({ direction: 'write' }, this.fileBytes);
    return 'written';
  }

  /**
   * Publishes a block committed with these raw bytes, off the caller's path: quantized on
   * the addon's thread pool (the same codes the tiers hold), then published. With too many
   * waiting already it is skipped: a commit never waits for the shared mount.
   */
  publishLater(hash: string, raw: Uint8Array): void {
    if (this.inFlight.size >= PUBLISHING + MAX_WAITING) {
      this.count('skipped');
      return;
    }
    const copy = Buffer.from(raw); // the caller may reuse its buffer once the write answers
    const job = (async () => {
      await this.publishing.acquire();
      try {
        if (await exists(join(this.path, this.fileName(hash)))) return this.count('exists');
        this.count(await this.publish(hash, await quantize(this.layout.quant, copy)));
      } catch (err) {
        this.lastError = `publish of ${hash}: ${(err as Error).message}`;
        this.count('failed');
      } finally {
        this.publishing.release();
      }
    })();
    this.inFlight.add(job);
    void job.finally(() => this.inFlight.delete(job));
  }

  private count(result: PublishResult): void {
    this.counts.published[result]++;
    this.metrics.published.inc({ result });
  }

  /** Resolves when every publish started so far has ended. */
  async settle(): Promise<void> {
    while (this.inFlight.size > 0) await Promise.all([...this.inFlight]);
  }

  // ---- space ----------------------------------------------------------------------------

  /** Before a write: over the budget (or past the rescan interval), scan and evict the least recently used. */
  private async makeRoom(): Promise<void> {
    const over = this.usedBytes + this.fileBytes > this.budgetBytes;
    if (!over && Date.now() - this.scannedAt < RESCAN_MS) return;
    this.scanning ??= this.scan().finally(() => (this.scanning = null));
    await this.scanning;
  }

  /**
   * Lists the directory's block files with size and mtime, and removes the least recently
   * used while they exceed the budget (down to its low watermark), with temporary files a
   * dead publisher left. A file another server removed meanwhile is simply not counted.
   */
  async scan(): Promise<{ files: number; bytes: number; evicted: number }> {
    const entries: Array<{ file: string; bytes: number; used: number }> = [];
    let bytes = 0;
    for (const name of await readdir(this.path)) {
      const file = join(this.path, name);
      const s = await unlessGone(stat(file));
      if (!s?.isFile()) continue;
      if (name.endsWith(TEMP_SUFFIX)) {
        if (Date.now() - s.mtimeMs > STALE_TEMP_MS) await this.remove(file);
        else bytes += s.size;
        continue;
      }
      if (!name.endsWith(SUFFIX)) continue;
      entries.push({ file, bytes: s.size, used: s.mtimeMs });
      bytes += s.size;
    }
    let evicted = 0;
    let kept = entries.length;
    if (bytes + this.fileBytes > this.budgetBytes) {
      entries.sort((a, b) => a.used - b.used);
      const target = this.budgetBytes * LOW_WATERMARK;
      for (const e of entries) {
        if (bytes + this.fileBytes <= target) break;
        if (await this.remove(e.file)) evicted++;
        kept--;
        bytes -= e.bytes;
      }
    }
    this.usedBytes = bytes;
    this.files = kept;
    this.scannedAt = Date.now();
    this.counts.evicted += evicted;
    this.metrics.evicted.inc(evicted);
    return { files: kept, bytes, evicted };
  }

  /** Whether this call removed the file (false: another server did first). */
  private async remove(file: string): Promise<boolean> {
    return (await unlessGone(unlink(file))) !== null;
  }

  describe(): SharedTierStatus {
    return {
      path: this.path, budgetBytes: this.budgetBytes, usedBytes: this.usedBytes, files: this.files,
      io: 'POSIX through node:fs: whole-file reads into host memory, then a copy into tier 1; writes to a temporary name, fsync, rename',
      publish: 'on commit, quantized off the request path',
      hits: this.counts.hits, misses: { ...this.counts.misses }, published: { ...this.counts.published },
      bytesRead: this.counts.bytesRead, bytesWritten: this.counts.bytesWritten, evicted: this.counts.evicted, lastError: this.lastError,
    };
  }
}

async function exists(file: string): Promise<boolean> {
  return (await unlessGone(stat(file))) !== null;
}

/** What `op` answers, or null where its file is gone (another server removed it). */
async function unlessGone<T>(op: Promise<T>): Promise<T | null> {
  try {
    return await op;
  } catch (err) {
    if (gone(err)) return null;
    throw err;
  }
}
