/**
 * The soak's faults: a killed server (and its warm restart), a full disk, a corrupted slot.
 * Each is injected at its point of the fault cycle, checked against what docs/SOAK.md says
 * must hold, and recorded.
 */
import { closeSync, fdatasyncSync, openSync, readSync, writeSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { SLOT_ID_BYTES, SLOT_PAYLOAD_OFFSET, slotBlockId } from '../../runtime/recovery.js';
import { codeOf } from './operations.js';
import type { Soak } from './soak.js';
import type { SequenceModel } from './workload.js';

export type FaultKind = 'kill' | 'disk-full' | 'corrupt';
export const FAULT_KINDS: FaultKind[] = ['kill', 'disk-full', 'corrupt'];
/** Where in each fault cycle a fault comes. */
export const FAULT_AT: Record<FaultKind, number> = { kill: 0.2, 'disk-full': 0.45, corrupt: 0.7 };

export interface FaultRecord {
  kind: FaultKind;
  at: number;
  ok: boolean;
  outcome: string;
  details: Record<string, unknown>;
}


/** Injects the run's faults into the harness it drives and records what each did. */
export class Faults {
  readonly records: FaultRecord[] = [];

  constructor(private readonly soak: Soak) {}

  private record(kind: FaultKind, at: number, ok: boolean, outcome: string, details: Record<string, unknown>): void {
    this.records.push({ kind, at, ok, outcome, details });
    this.soak.o.log(`fault ${kind} at ${at.toFixed(1)} s: ${ok ? 'ok' : 'FAILED'}: ${outcome}`);
    if (!ok) this.soak.fail(`fault ${kind}: ${outcome}`);
  }

  /** Reads back up to `per` written blocks of every live sequence: nothing may be lost or wrong. */
  private async sweep(per: number): Promise<number> {
    let checked = 0;
    for (const seq of this.soak.live) {
      for (let k = 0; k < per && seq.written > 0; k++) {
        const index = Math.floor(this.soak.workload.uniform() * seq.written);
        const r = await this.soak.op('read', seq, (c) => c.readBlock(seq.id, index, { promote: false }), false);
        await this.soak.check(seq, index, r, 'sweep read');
        checked++;
      }
    }
    return checked;
  }

  private async diskErrorsOnServer(kind: string): Promise<number> {
    const text = await this.soak.client.metrics();
    const m = new RegExp(`^spillway_disk_errors_total\\{kind="${kind}"\\} (\\d+)`, 'm').exec(text);
    return m ? Number(m[1]) : 0;
  }

  private async armDiskFault(count: number): Promise<void> {
    const res = await fetch(`${this.soak.server.url}/v1/faults/disk`, {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ op: 'write', error: 'ENOSPC', count }),
    });
    if (!res.ok) throw new Error(`arming the disk fault failed: HTTP ${res.status} ${await res.text()}`);
  }

  /** The disk refuses the next writes with ENOSPC while the workload runs on; afterwards nothing is lost. */
  private async diskFull(at: number): Promise<void> {
    const before = await this.diskErrorsOnServer('DISK_FULL');
    const seenBefore = this.soak.t.faultErrors.DISK_FULL ?? 0;
    const lostBefore = (await this.soak.client.status()).stats.lostBlocks;
    this.soak.diskFullArmed = true;
    await this.armDiskFault(this.soak.o.diskFullWrites);
    const deadline = Date.now() + 30_000;
    let failed = 0;
    while (Date.now() < deadline && !this.soak.stopping) {
      failed = (await this.diskErrorsOnServer('DISK_FULL')) - before;
      if (failed >= this.soak.o.diskFullWrites) break;
      await sleep(200);
    }
    await this.armDiskFault(0);
    await this.soak.gate.drain();
    this.soak.diskFullArmed = false;
    const seen = (this.soak.t.faultErrors.DISK_FULL ?? 0) - seenBefore;
    const swept = await this.sweep(8);
    const lostAfter = (await this.soak.client.status()).stats.lostBlocks;
    this.soak.gate.reopen();
    const ok = failed > 0 && seen > 0 && lostAfter === lostBefore && !this.soak.mismatch;
    this.record('disk-full', at, ok,
      ok ? `${failed} disk writes failed with ENOSPC; ${seen} requests were answered DISK_FULL (507) and succeeded when retried; ${swept} blocks read back intact, none lost`
        : `expected ENOSPC to surface as DISK_FULL and lose nothing: ${failed} disk writes failed, ${seen} requests saw DISK_FULL, lost blocks ${lostBefore} -> ${lostAfter}`,
      { diskWritesFailed: failed, requestsAnsweredDiskFull: seen, sweptBlocks: swept, lostBefore, lostAfter });
  }

  /** Slots of the slot file whose header names `blockId`. */
  private slotsHolding(blockId: number): number[] {
    const fd = openSync(this.soak.diskPath, 'r');
    const header = Buffer.alloc(SLOT_ID_BYTES);
    const found: number[] = [];
    try {
      for (let slot = 0; slot < this.soak.diskSlots; slot++) {
        readSync(fd, header, 0, SLOT_ID_BYTES, slot * this.soak.slotBytes.disk!);
        if (slotBlockId(header) === blockId) found.push(slot);
      }
    } finally {
      closeSync(fd);
    }
    return found;
  }

  /** Flips one payload byte in each slot named; synced, so the server's O_DIRECT reads see it. */
  private corruptSlots(slots: number[]): void {
    const fd = openSync(this.soak.diskPath, 'r+');
    const byte = Buffer.alloc(1);
    try {
      for (const slot of slots) {
        const at = slot * this.soak.slotBytes.disk! + SLOT_PAYLOAD_OFFSET + 100;
        readSync(fd, byte, 0, 1, at);
        byte[0] = byte[0]! ^ 0x5a;
        writeSync(fd, byte, 0, 1, at);
      }
      fdatasyncSync(fd);
    } finally {
      closeSync(fd);
    }
  }

  /**
   * A block whose only copy is on disk has a byte of its slot flipped: reading it must
   * answer CHECKSUM_MISMATCH (or SLOT_MISMATCH), then BLOCK_LOST until it is written
   * again, never wrong bytes; written again, it reads back exact.
   */
  private async corrupt(at: number): Promise<void> {
    await this.soak.gate.drain();
    try {
      const candidates = [...this.soak.live].flatMap((seq) => {
        const own = Array.from({ length: Math.max(0, seq.written - seq.prompt.blocks) }, (_, k) => seq.prompt.blocks + k);
        return own.map((index) => ({ seq, index }));
      }).sort(() => this.soak.workload.uniform() - 0.5).slice(0, 400);
      for (const { seq, index } of candidates) {
        const r = await this.soak.op('read', seq, (c) => c.readBlock(seq.id, index, { promote: false }), false);
        await this.soak.check(seq, index, r, 'read in place (looking for a block on disk only)');
        if (r.tier !== 'disk') continue;
        const blockId = seq.blockIds[index]!;
        const slots = this.slotsHolding(blockId);
        this.corruptSlots(slots);
        this.soak.note(seq, index, `slot(s) ${slots.join(', ')} corrupted on disk`);
        const first = await this.expectFailure(seq, index);
        const second = await this.expectFailure(seq, index);
        const lost = (await this.soak.client.status()).stats.lostBlocks;
        await this.soak.writeDecode(seq, index, false);
        const back = await this.soak.op('read', seq, (c) => c.readBlock(seq.id, index), false);
        await this.soak.check(seq, index, back, 'read after rewriting the corrupted block');
        const lostAfter = (await this.soak.client.status()).stats.lostBlocks;
        const ok = ['CHECKSUM_MISMATCH', 'SLOT_MISMATCH'].includes(first) && second === 'BLOCK_LOST' && lost >= 1 && lostAfter === lost - 1 && !this.soak.mismatch;
        this.record('corrupt', at, ok,
          ok ? `block ${blockId} (${seq.id}#${index}, on disk only, slot ${slots.join(', ')}): first read ${first}, then ${second}, never data; written again it read back exact`
            : `expected CHECKSUM_MISMATCH or SLOT_MISMATCH then BLOCK_LOST: got ${first}, then ${second}; lost blocks ${lost} -> ${lostAfter}`,
          { blockId, sequence: seq.id, index, slots, firstRead: first, secondRead: second, lostBlocks: lost, lostAfterRewrite: lostAfter });
        return;
      }
      this.record('corrupt', at, false, `none of ${candidates.length} blocks looked at was on disk only: the tiers are too large for the load`, {});
    } finally {
      this.soak.gate.reopen();
    }
  }

  /** Reads a block that must fail; returns the error code, or 'DATA' if bytes came back. */
  private async expectFailure(seq: SequenceModel, index: number): Promise<string> {
    try {
      await this.soak.op('read', seq, (c) => c.readBlock(seq.id, index), false);
      this.soak.note(seq, index, 'read of the corrupted block returned data');
      return 'DATA';
    } catch (err) {
      const code = codeOf(err);
      this.soak.t.faultErrors[code] = (this.soak.t.faultErrors[code] ?? 0) + 1;
      this.soak.note(seq, index, `read of the corrupted block refused: ${code}`);
      return code;
    }
  }

  /**
   * SIGKILL under load, then a restart on the same configuration and slot file. The
   * committed blocks on disk at the kill come back (docs/ARCHITECTURE.md, "Warm restart"):
   * each prompt's leading run of them must be cached again and read back as written (within
   * the 4-bit bound); nothing else survives: no sequence, nothing in tiers 0 and 1, nothing lost.
   */
  private async kill(at: number): Promise<void> {
    const old = [...this.soak.live].find((s) => s.written > 0);
    await this.soak.countMoves();
    this.soak.restarting = true;
    // No request in flight at the kill, so that what is on disk is what lookups said.
    await this.soak.gate.drain();
    this.soak.epoch++;
    const onDisk = await this.committedOnDisk();
    const t0 = performance.now();
    this.soak.server.kill('SIGKILL');
    const exit = await this.soak.server.exited;
    await this.soak.startServer();
    const downMs = performance.now() - t0;
    const status = await this.soak.client.status();
    const used = status.stats.tiers.map((t) => t.used);
    let oldSequence = 'none to ask for';
    if (old) {
      try {
        await this.soak.client.readBlock(old.id, 0);
        oldSequence = 'still readable';
      } catch (err) {
        oldSequence = codeOf(err);
      }
    }
    const back = await this.readBackRecovered(onDisk);
    const expected = onDisk.reduce((n, c) => n + c.hashes.length, 0);
    this.soak.live.clear();
    this.soak.workload.forgetPrompts();
    this.soak.restarting = false;
    const opsBefore = Object.values(this.soak.t.ops).reduce((a, b) => a + b, 0);
    this.soak.gate.reopen();
    // New work must be served: wait for some requests to complete on the new server.
    const deadline = Date.now() + 30_000;
    while (Object.values(this.soak.t.ops).reduce((a, b) => a + b, 0) - opsBefore < 50 && Date.now() < deadline && !this.soak.stopping) await sleep(100);
    const served = Object.values(this.soak.t.ops).reduce((a, b) => a + b, 0) - opsBefore;
    const recovered = status.recovery?.recovered ?? 0;
    // Every memory tier empty (raw, quantized, and the host tier where there is one), the disk holding what was recovered.
    const clean = status.stats.sequences === 0 && used.slice(0, -1).every((n) => n === 0) && used[used.length - 1] === recovered && status.stats.lostBlocks === 0;
    const ok = exit.signal === 'SIGKILL' && clean && (oldSequence === 'SEQUENCE_NOT_FOUND' || !old) && back.found === expected && back.checked === back.found && served >= 50;
    this.record('kill', at, ok,
      ok ? `killed with SIGKILL under load; back in ${Math.round(downMs)} ms with ${recovered} committed blocks recovered from disk, ${back.found} of ${expected} prompt blocks on disk at the kill cached again and read back right; old sequence ${oldSequence}; ${served} requests served after`
        : `expected the committed blocks on disk back and nothing else: exit ${exit.signal ?? exit.code}, sequences ${status.stats.sequences}, slots used ${used.join('/')} with ${recovered} recovered, lost ${status.stats.lostBlocks}, old sequence ${oldSequence}, prompt blocks on disk at the kill ${expected}, cached again ${back.found}, read back right ${back.checked}, served ${served}`,
      { exit, downMs: Math.round(downMs), recovery: status.recovery, sequences: status.stats.sequences, slotsUsed: used, lostBlocks: status.stats.lostBlocks, oldSequence, promptBlocksOnDisk: expected, cachedAgain: back.found, readBack: back.checked, requestsServedAfter: served });
  }

  /** Each live prompt's leading committed blocks that are on disk now: what a kill must not lose. */
  private async committedOnDisk(): Promise<Array<{ seq: SequenceModel; hashes: string[] }>> {
    const chains: Array<{ seq: SequenceModel; hashes: string[] }> = [];
    for (const seq of this.soak.live) {
      const hashes = this.soak.workload.promptHashes(seq).slice(0, Math.min(seq.written, seq.prompt.blocks));
      if (hashes.length === 0) continue;
      const { cached } = await this.soak.client.lookupPrefix({ hashes });
      const run = cached.findIndex((b) => b.tier !== 'disk');
      const onDisk = run < 0 ? cached.length : run;
      if (onDisk > 0) chains.push({ seq, hashes: hashes.slice(0, onDisk) });
    }
    return chains;
  }

  /** Attaches each chain on the restarted server and checks every block it reads back. */
  private async readBackRecovered(chains: Array<{ seq: SequenceModel; hashes: string[] }>): Promise<{ found: number; checked: number }> {
    let found = 0;
    let checked = 0;
    for (const [n, { seq, hashes }] of chains.entries()) {
      const id = `recovered-${this.soak.epoch}-${n}`;
      const { attached } = await this.soak.client.createSequence({ id, prefix: hashes });
      found += attached.length;
      for (const { index } of attached) {
        const mismatchesBefore = this.soak.t.mismatches;
        await this.soak.check(seq, index, await this.soak.client.readBlock(id, index), 'read after the restart');
        if (this.soak.t.mismatches === mismatchesBefore) checked++;
      }
      await this.soak.client.freeSequence(id);
    }
    return { found, checked };
  }

  /** Injects each fault at its point of every faultEveryS cycle until the run ends. */
  async loop(): Promise<void> {
    const plan = this.soak.o.faults.map((kind) => ({ kind, offset: FAULT_AT[kind] * this.soak.o.faultEveryS })).sort((a, b) => a.offset - b.offset);
    for (let cycle = 0; plan.length > 0; cycle++) {
      for (const { kind, offset } of plan) {
        const at = cycle * this.soak.o.faultEveryS + offset;
        if (at >= this.soak.o.durationS) return;
        while (this.soak.now() < at && !this.soak.stopping) await sleep(Math.min(500, (at - this.soak.now()) * 1000));
        if (this.soak.stopping) return;
        try {
          if (kind === 'kill') await this.kill(this.soak.now());
          else if (kind === 'disk-full') await this.diskFull(this.soak.now());
          else await this.corrupt(this.soak.now());
        } catch (err) {
          this.soak.restarting = false;
          this.soak.gate.reopen();
          this.record(kind, this.soak.now(), false, `the fault could not be carried out: ${codeOf(err)}: ${(err as Error).message}`, {});
        }
      }
    }
  }
}
