/**
 * Warm restart: the committed blocks of the disk tier survive the process.
 *
 * Every disk slot is self-describing: its 64-byte header names the block (id, generation),
 * carries the prefix hash of a committed block, the payload's length and checksum, and a
 * CRC of itself; the quantized block behind it starts with its own header (format version,
 * geometry, dtype, bits, seed). A write mark per slot (`<path>.writing`) is set while a
 * write of the slot is in flight. At start, `scanDiskTier` reads the first 128 bytes of
 * every slot (headers only, never the payloads) and the marks, and sorts each slot:
 *
 * - recovered: a valid header of a committed block in the running format;
 * - dropped: a write in flight at the crash (torn), a header that fails its CRC (corrupt),
 *   an older generation of a block found newer elsewhere (stale), a second slot of the
 *   same prefix hash (duplicate);
 * - refused: another slot format version, quantized format, geometry, dtype, quantization
 *   parameters or a checksum the backend cannot verify: counted, reported, never served;
 * - left alone: empty slots, and blocks never committed (sequences are the engine's state).
 *
 * Payload checksums are not read here (that would read the whole tier): every read of a
 * disk slot verifies header and payload checksum before a byte leaves it, as for any block,
 * and a recovered block that fails there is lost and leaves the prefix index
 * (docs/ARCHITECTURE.md, "Warm restart").
 */
import { existsSync, readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import type { Config } from './config.js';
import { diskTier, type Layout } from './layout.js';
import { addon, quantize } from './native.js';
import { DROP_REASONS, REFUSE_REASONS, type DropReason, type RecoveredBlock, type RecoveryReport, type RefuseReason } from './recovery-report.js';

export type { RecoveryReport } from './recovery-report.js';

export interface DiskTierScan {
  blocks: RecoveredBlock[];
  report: RecoveryReport;
}

const MAX_EXAMPLES = 16;
const SLOT_MAGIC_LE = addon.slotFormat.magic;
/** Offsets in the scanned head of a slot: the slot header (addon/src/io/disk_io.h), then the quantized block's (docs/QUANTIZATION.md). */
const HEAD = { version: 4, flags: 6, blockId: 8, generation: 16, payloadBytes: 24, hash: 32, headerCrc: 60 } as const;

/** Bytes of a slot's start that `slotBlockId` reads. */
export const SLOT_ID_BYTES = HEAD.blockId + 8;

/** The block a slot's header names, or undefined where the slot holds no header (no magic). */
export function slotBlockId(head: Buffer): number | undefined {
  return head.readUInt32LE(0) === SLOT_MAGIC_LE ? Number(head.readBigUInt64LE(HEAD.blockId)) : undefined;
}

/** Where a slot's payload, the quantized block, starts: after the slot header. */
export const SLOT_PAYLOAD_OFFSET = addon.slotFormat.headerBytes;
/** The quantized block's header in the scanned head: as long as the slot header (scanBytes holds both). */
const BLOCK = SLOT_PAYLOAD_OFFSET;
/** Which fields of the quantized block's header say what; the rest must match too. */
const BLOCK_FIELDS: Array<{ reason: RefuseReason; start: number; end: number; what: string }> = [
  { reason: 'block-format', start: 0, end: 6, what: 'quantized format magic or version' },
  { reason: 'dtype', start: 6, end: 7, what: 'dtype' },
  { reason: 'quantization', start: 7, end: 8, what: 'quantizer variant' },
  { reason: 'geometry', start: 8, end: 16, what: 'layers, KV heads, head dim or tokens per block' },
  { reason: 'quantization', start: 16, end: 18, what: 'key or value bits' },
  { reason: 'block-format', start: 18, end: 24, what: 'quantized block layout' },
  { reason: 'quantization', start: 24, end: 32, what: 'rotation seed' },
  { reason: 'block-format', start: 32, end: 64, what: 'reserved bytes' },
];
const MIXSUM_FLAG = 1;

function emptyReport(config: Config, layout: Layout, enabled: boolean): RecoveryReport {
  return {
    enabled, path: config.tiers.disk.path, slots: diskTier(layout).slots, bytesScanned: 0, recovered: 0, empty: 0, uncommitted: 0,
    dropped: Object.fromEntries(DROP_REASONS.map((r) => [r, 0])) as Record<DropReason, number>,
    refused: Object.fromEntries(REFUSE_REASONS.map((r) => [r, 0])) as Record<RefuseReason, number>,
    examples: [], scanMs: 0, totalMs: 0,
  };
}

/** The header the running configuration's quantizer writes in front of every block. */
export async function expectedBlockHeader(layout: Layout): Promise<Buffer> {
  const stored = await quantize(layout.quant, Buffer.alloc(layout.rawBlockBytes));
  return stored.subarray(0, BLOCK);
}

function readMarks(path: string, slots: number): Buffer {
  const file = path + addon.slotFormat.marksSuffix;
  return existsSync(file) ? readFileSync(file).subarray(0, slots) : Buffer.alloc(0);
}

/**
 * Reads the heads of every disk slot and sorts them (module comment). Read-only: doctor
 * runs it on a tier file a server may be using. `backend` decides which payload checksums
 * can be verified (the GPU path verifies only its own).
 */
export async function scanDiskTier(config: Config, layout: Layout, backend: 'host' | 'gpu'): Promise<DiskTierScan> {
  const started = performance.now();
  const report = emptyReport(config, layout, config.tiers.disk.recover);
  if (!report.enabled) return { blocks: [], report };
  const { path } = config.tiers.disk;
  const { slots, slotBytes } = diskTier(layout);
  const scanBytes = addon.slotFormat.scanBytes;
  const heads = await addon.scanSlotHeads(path, slotBytes, slots);
  report.scanMs = performance.now() - started;
  report.bytesScanned = slots * Math.min(slotBytes, 4096);
  const marks = readMarks(path, slots);
  const expected = await expectedBlockHeader(layout);

  const note = (slot: number, reason: DropReason | RefuseReason, detail: string) => {
    if (report.examples.length < MAX_EXAMPLES) report.examples.push({ slot, reason, detail });
  };
  const drop = (slot: number, reason: DropReason, detail: string) => {
    report.dropped[reason]++;
    note(slot, reason, detail);
  };
  const refuse = (slot: number, reason: RefuseReason, detail: string) => {
    report.refused[reason]++;
    note(slot, reason, detail);
  };

  const candidates: RecoveredBlock[] = [];
  for (let slot = 0; slot < slots; slot++) {
    const head = heads.subarray(slot * scanBytes, (slot + 1) * scanBytes);
    if (marks[slot] === 1) {
      drop(slot, 'torn', 'a write of the slot was in flight when the process ended');
      continue;
    }
    if (head.subarray(0, BLOCK).every((v) => v === 0)) {
      report.empty++;
      continue;
    }
    if (head.readUInt32LE(0) !== SLOT_MAGIC_LE) {
      drop(slot, 'corrupt', 'no slot header magic');
      continue;
    }
    const version = head.readUInt16LE(HEAD.version);
    if (version !== addon.slotFormat.version) {
      refuse(slot, 'slot-format', `slot format ${version}, this build writes ${addon.slotFormat.version}`);
      continue;
    }
    if (addon.crc32c(head, 0, HEAD.headerCrc) !== head.readUInt32LE(HEAD.headerCrc)) {
      drop(slot, 'corrupt', 'slot header CRC does not match');
      continue;
    }
    const flags = head.readUInt16LE(HEAD.flags);
    if ((flags & addon.slotFormat.committedFlag) === 0) {
      report.uncommitted++;
      continue;
    }
    const refusal = blockRefusal(head, expected, layout);
    if (refusal) {
      refuse(slot, refusal.reason, refusal.detail);
      continue;
    }
    if (backend === 'gpu' && (flags & MIXSUM_FLAG) === 0) {
      refuse(slot, 'checksum', 'written by the host path (CRC-32C), which the GPU path does not verify');
      continue;
    }
    const id = Number(head.readBigUInt64LE(HEAD.blockId));
    const generation = Number(head.readBigUInt64LE(HEAD.generation));
    if (!Number.isSafeInteger(id) || id < 1 || !Number.isSafeInteger(generation)) {
      drop(slot, 'corrupt', `block id ${id} or generation ${generation} out of range`);
      continue;
    }
    candidates.push({ id, generation, hash: head.subarray(HEAD.hash, HEAD.hash + 16).toString('hex'), diskSlot: slot });
  }

  const blocks = newestOnce(candidates, drop);
  report.recovered = blocks.length;
  report.totalMs = performance.now() - started;
  return { blocks, report };
}

/** Why a committed slot's block cannot be read under the running configuration, or undefined. */
function blockRefusal(head: Buffer, expected: Buffer, layout: Layout): { reason: RefuseReason; detail: string } | undefined {
  const block = head.subarray(BLOCK, 2 * BLOCK);
  for (const f of BLOCK_FIELDS) {
    if (!block.subarray(f.start, f.end).equals(expected.subarray(f.start, f.end))) {
      return { reason: f.reason, detail: `${f.what} differ from the running configuration's` };
    }
  }
  const payloadBytes = head.readUInt32LE(HEAD.payloadBytes);
  if (payloadBytes !== layout.quantizedBlockBytes) {
    return { reason: 'block-format', detail: `payload of ${payloadBytes} bytes, a block is ${layout.quantizedBlockBytes}` };
  }
  return undefined;
}

/**
 * One slot per block id (the newest generation; older ones are stale) and one block per
 * prefix hash (the newest id; the others are duplicates), oldest first: the order the
 * eviction policy learns them in.
 */
function newestOnce(found: RecoveredBlock[], drop: (slot: number, reason: DropReason, detail: string) => void): RecoveredBlock[] {
  const byId = new Map<number, RecoveredBlock>();
  for (const b of found) {
    const kept = byId.get(b.id);
    if (!kept) {
      byId.set(b.id, b);
      continue;
    }
    const [newer, older] = b.generation > kept.generation ? [b, kept] : [kept, b];
    byId.set(b.id, newer);
    if (older.generation < newer.generation) drop(older.diskSlot, 'stale', `block ${b.id} generation ${older.generation}; slot ${newer.diskSlot} holds ${newer.generation}`);
    else drop(older.diskSlot, 'duplicate', `block ${b.id} generation ${b.generation} is also in slot ${newer.diskSlot}`);
  }
  const byHash = new Map<string, RecoveredBlock>();
  for (const b of byId.values()) {
    const kept = byHash.get(b.hash);
    const [newer, older] = !kept || b.id > kept.id ? [b, kept] : [kept, b];
    byHash.set(b.hash, newer);
    if (older) drop(older.diskSlot, 'duplicate', `prefix ${b.hash} is also block ${newer.id} in slot ${newer.diskSlot}`);
  }
  return [...byHash.values()].sort((a, b) => a.id - b.id);
}
