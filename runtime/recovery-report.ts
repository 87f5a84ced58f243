/**
 * What a start's recovery of the disk tier found (runtime/recovery.ts), in a module free of
 * the addon, so that the API's schemas and clients can name it.
 */
export const DROP_REASONS = ['torn', 'corrupt', 'stale', 'duplicate'] as const;
export const REFUSE_REASONS = ['slot-format', 'block-format', 'geometry', 'dtype', 'quantization', 'checksum'] as const;
export type DropReason = (typeof DROP_REASONS)[number];
export type RefuseReason = (typeof REFUSE_REASONS)[number];

/** A committed block found on disk, as the store adopts it. */
export interface RecoveredBlock {
  id: number;
  generation: number;
  hash: string;
  diskSlot: number;
}

export interface RecoveryReport {
  /** `tiers.disk.recover`: false skips the scan and starts empty. */
  enabled: boolean;
  path: string;
  slots: number;
  /** Bytes read to decide: the heads of the slots, not their payloads. */
  bytesScanned: number;
  recovered: number;
  empty: number;
  /** Valid slots of blocks never committed to the prefix cache: not recovered, by design. */
  uncommitted: number;
  dropped: Record<DropReason, number>;
  refused: Record<RefuseReason, number>;
  /** The first few slots dropped or refused, with what was wrong. */
  examples: Array<{ slot: number; reason: DropReason | RefuseReason; detail: string }>;
  /** Time to read the heads, and the whole recovery (scan, sorting, adoption). */
  scanMs: number;
  totalMs: number;
}

/** One line for logs and doctor. */
export function formatRecovery(r: RecoveryReport): string {
  if (!r.enabled) return 'off (tiers.disk.recover is false): the disk tier starts empty';
  const list = (counts: Record<string, number>) => Object.entries(counts).filter(([, n]) => n > 0).map(([k, n]) => `${n} ${k}`).join(', ') || 'none';
  return `${r.recovered} committed blocks recovered of ${r.slots} slots in ${r.totalMs.toFixed(1)} ms (heads read in ${r.scanMs.toFixed(1)} ms); `
    + `dropped: ${list(r.dropped)}; refused: ${list(r.refused)}; ${r.uncommitted} uncommitted left, ${r.empty} empty`;
}
