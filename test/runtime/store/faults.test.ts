/**
 * Failure paths of the store: disk full, a corrupted slot, I/O errors, a read racing the
 * eviction of the same block, and limits exceeded. Each must give a clear typed error and
 * lose nothing that was not on the failed slot itself.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { openSync, readSync, writeSync, closeSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { SpillwayError } from '../../../runtime/errors.js';
import type { BlockStore } from '../../../runtime/store.js';
import { assertReadBack, blockContent, tempDir, tinyStore } from '../../helpers.js';

const ENOSPC = 28;
const EIO = 5;

async function writeBlocks(store: BlockStore, seq: string, count: number, seedBase = 1): Promise<Buffer[]> {
  const data: Buffer[] = [];
  const refs = store.allocate(seq, count);
  for (const r of refs) {
    const d = blockContent(seedBase + r.index);
    data.push(d);
    await store.write(seq, r.index, d);
  }
  return data;
}

async function assertIntact(store: BlockStore, seq: string, data: Buffer[], skip = new Set<number>()): Promise<void> {
  for (let i = 0; i < data.length; i++) {
    if (skip.has(i)) continue;
    const r = await store.read(seq, i);
    assertReadBack(data[i]!, r, `block ${i}`);
  }
  store.checkInvariants();
}


test('a disk tier that cannot be reserved fails at open with DISK_FULL naming the file', () => {
  // A real size cap: the process may not grow files past 64 KiB (ulimit -f), so
  // reserving a 256 KiB slot file fails inside the filesystem call, as on a full disk.
  const dir = tempDir();
  try {
    const script = `
      import { tinyStore } from ${JSON.stringify(new URL('../../helpers.js', import.meta.url).href)};
      try { await tinyStore(${JSON.stringify(dir.path)}, { raw: 2, quantized: 2, disk: 64 }); console.log('opened'); }
      catch (e) { console.log(JSON.stringify({ code: e.code, message: e.message })); }`;
    const r = spawnSync('bash', ['-c', `ulimit -f 64; exec "${process.execPath}" --input-type=module -e '${script.replace(/'/g, "'\\''")}'`], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const out = JSON.parse(r.stdout.trim()) as { code: string; message: string };
    assert.equal(out.code, 'DISK_FULL');
    assert.match(out.message, /tier2\.slots/);
    assert.match(out.message, /cannot reserve 262144 bytes/);
  } finally {
    dir.cleanup();
  }
});

test('ENOSPC while spilling fails the write that needed room, and loses nothing', async () => {
  const dir = tempDir();
  const store = await tinyStore(dir.path, { raw: 2, quantized: 2, disk: 8 });
  try {
    const { id } = store.createSequence();
    const data = await writeBlocks(store, id, 4); // fills raw and quantized tiers
    store.allocate(id, 1);
    store.injectDiskFault('write', ENOSPC, 1);
    const extra = blockContent(99);
    await assert.rejects(store.write(id, 4, extra), (err: SpillwayError) => {
      assert.equal(err.code, 'DISK_FULL');
      assert.equal(err.status, 507);
      assert.match(err.message, /No space left on device/);
      return true;
    });
    const failures = await store.telemetry.diskErrors.get();
    assert.equal(failures.values.find((v) => v.labels.kind === 'DISK_FULL')?.value, 1);
    await assertIntact(store, id, data);
    // The disk has room again: the same write now succeeds.
    await store.write(id, 4, extra);
    await assertIntact(store, id, [...data, extra]);
  } finally {
    await store.close();
    dir.cleanup();
  }
});

test('a rewrite refused by a full disk leaves the block as it was, readable', async () => {
  const dir = tempDir();
  const store = await tinyStore(dir.path, { raw: 1, quantized: 1, disk: 8 });
  try {
    const { id } = store.createSequence();
    const data = await writeBlocks(store, id, 3); // block 0 on disk only, block 1 in tier 1, block 2 raw
    store.injectDiskFault('write', ENOSPC, 1);
    // Room for block 0 in tier 0 needs block 1 spilled: the disk refuses it.
    await assert.rejects(store.write(id, 0, blockContent(99)), (err: SpillwayError) => err.code === 'DISK_FULL');
    store.checkInvariants();
    await assertIntact(store, id, data);
  } finally {
    await store.close();
    dir.cleanup();
  }
});

test('a corrupted slot on disk is refused by its checksum; that block is lost, others are not', async () => {
  const dir = tempDir();
  const store = await tinyStore(dir.path, { raw: 2, quantized: 2, disk: 8 });
  try {
    const { id } = store.createSequence();
    const data = await writeBlocks(store, id, 6); // blocks 0 and 1 end up on disk, in slots 0 and 1
    assert.equal(store.stats().tiers[2]!.used, 2);
    // Flip one payload byte of slot 0.
    const fd = openSync(join(dir.path, 'tier2.slots'), 'r+');
    const byte = Buffer.alloc(1);
    readSync(fd, byte, 0, 1, 200);
    byte[0] = byte[0]! ^ 0x40;
    writeSync(fd, byte, 0, 1, 200);
    closeSync(fd);

    await assert.rejects(store.read(id, 0), (err: SpillwayError) => {
      assert.equal(err.code, 'CHECKSUM_MISMATCH');
      assert.match(err.message, /payload checksum does not match/);
      return true;
    });
    // It stays refused, never served from the bad bytes.
    await assert.rejects(store.read(id, 0), (err: SpillwayError) => err.code === 'BLOCK_LOST');
    assert.equal(store.stats().lostBlocks, 1);
    const failures = await store.telemetry.diskErrors.get();
    assert.equal(failures.values.find((v) => v.labels.kind === 'CHECKSUM_MISMATCH')?.value, 1);
    await assertIntact(store, id, data, new Set([0]));
    // Writing the block again brings it back.
    await store.write(id, 0, data[0]!);
    await assertIntact(store, id, data);
    assert.equal(store.stats().lostBlocks, 0);
  } finally {
    await store.close();
    dir.cleanup();
  }
});

test('an I/O error on a disk read fails that read only; the block reads fine afterwards', async () => {
  const dir = tempDir();
  const store = await tinyStore(dir.path, { raw: 2, quantized: 2, disk: 8 });
  try {
    const { id } = store.createSequence();
    const data = await writeBlocks(store, id, 6);
    store.injectDiskFault('read', EIO, 1);
    await assert.rejects(store.read(id, 0), (err: SpillwayError) => {
      assert.equal(err.code, 'IO_ERROR');
      assert.match(err.message, /Input\/output error/);
      return true;
    });
    assert.equal(store.stats().lostBlocks, 0);
    await assertIntact(store, id, data);
  } finally {
    await store.close();
    dir.cleanup();
  }
});

test('reads racing evictions of the same blocks always return the right data', async () => {
  const dir = tempDir();
  const store = await tinyStore(dir.path, { raw: 2, quantized: 2, disk: 16 });
  try {
    const { id } = store.createSequence();
    const data = await writeBlocks(store, id, 6);
    const { id: churn } = store.createSequence();
    store.allocate(churn, 8);
    for (let round = 0; round < 40; round++) {
      // Writes to the churn sequence evict the very blocks the reads are promoting.
      const reads = data.map(async (d, i) => {
        const r = await store.read(id, i, { promote: (round + i) % 3 !== 0 });
        assertReadBack(d, r, `round ${round} block ${i}`);
      });
      const writes = [0, 1, 2].map((k) => store.write(churn, (round * 3 + k) % 8, blockContent(1000 + round * 3 + k)));
      await Promise.all([...reads, ...writes]);
      store.checkInvariants();
    }
    const moves = await store.telemetry.moveCount.get();
    const count = (kind: string, from: string) => moves.values.filter((v) => v.labels.kind === kind && v.labels.from === from).reduce((a, v) => a + v.value, 0);
    assert.ok(count('demote', 'raw') > 50 && count('promote', 'disk') > 20, 'the race test must really move blocks');
  } finally {
    await store.close();
    dir.cleanup();
  }
});

test('limits: per sequence, live sequences and total tokens, each saying what is left', async () => {
  const dir = tempDir();
  const store = await tinyStore(dir.path, { raw: 2, quantized: 2, disk: 8 }, {
    limits: { maxTokensPerSequence: 16, maxLiveSequences: 2, maxTotalTokens: 24 },
  });
  try {
    const { id } = store.createSequence('a');
    store.allocate(id, 3);
    assert.throws(() => store.allocate(id, 2), (err: SpillwayError) => {
      assert.equal(err.code, 'LIMIT_EXCEEDED');
      assert.equal(err.status, 429);
      assert.equal(err.details.limit, 'maxTokensPerSequence');
      assert.equal(err.details.remainingBlocks, 1);
      return true;
    });
    store.createSequence('b');
    assert.throws(() => store.createSequence('c'), (err: SpillwayError) => err.code === 'LIMIT_EXCEEDED' && err.details.limit === 'maxLiveSequences');
    assert.throws(() => store.allocate('b', 4), (err: SpillwayError) => {
      assert.equal(err.details.limit, 'maxTotalTokens');
      assert.equal(err.details.remainingBlocks, 3);
      return true;
    });
    store.allocate('b', 3);
    // Raising a limit at run time lets more in; past the ladder it is capped to capacity.
    assert.equal(store.setLimits({ maxTotalTokens: 10_000 }).maxTotalTokens, 48);
    store.allocate('b', 1);
    assert.throws(() => store.setLimits({ maxLiveSequences: 0 }), (err: SpillwayError) => err.code === 'INVALID_ARGUMENT' && err.details.field === 'limits.maxLiveSequences');
    // Nothing was half-allocated by the refusals.
    assert.equal(store.stats().liveBlocks, 7);
    store.checkInvariants();
  } finally {
    await store.close();
    dir.cleanup();
  }
});

test('a block a lease holds after its sequence was freed is not dropped by an eviction that finds no room below', async () => {
  const dir = tempDir();
  // raw 2, quantized 2, disk 1: small enough that the leased block's quantized copy has nowhere to go.
  const store = await tinyStore(dir.path, { raw: 2, quantized: 2, disk: 1 });
  try {
    store.createSequence('b');
    store.createSequence('a');
    store.allocate('b', 4);
    store.allocate('a', 1);
    await store.write('b', 0, blockContent(10));
    await store.write('a', 0, blockContent(20));
    await store.write('b', 1, blockContent(11));
    await store.write('b', 2, blockContent(12));
    // a's block comes back up from the quantized tier (b's first block goes to disk for the room).
    const lease = store.createLease('engine').id;
    const held = await store.acquire(lease, 'a', 0);
    assert.equal(held.tier, 'quantized');
    store.freeSequence('a');
    // Room for b's last block means moving the leased block's quantized copy to a full disk,
    // whose only block b still needs: refused, and the leased block stays.
    await assert.rejects(store.write('b', 3, blockContent(13)), (err: SpillwayError) => err.code === 'CAPACITY_EXCEEDED');
    store.checkInvariants();
    const released = await store.release(lease, held.blockId);
    assert.equal(released.pins, 0);
    await new Promise((r) => setImmediate(r)); // the unreferenced block's drop
    await store.write('b', 3, blockContent(13));
    await assertIntact(store, 'b', [10, 11, 12, 13].map((seed) => blockContent(seed)));
  } finally {
    await store.close();
    dir.cleanup();
  }
});

test('a tier full of pinned blocks refuses new writes with CAPACITY_EXCEEDED, and recovers on unpin', async () => {
  const dir = tempDir();
  const store = await tinyStore(dir.path, { raw: 2, quantized: 2, disk: 8 });
  try {
    const { id } = store.createSequence();
    const data = await writeBlocks(store, id, 2);
    store.pin(id, 0);
    store.pin(id, 1);
    store.allocate(id, 1);
    await assert.rejects(store.write(id, 2, blockContent(7)), (err: SpillwayError) => {
      assert.equal(err.code, 'CAPACITY_EXCEEDED');
      assert.equal(err.details.tier, 'raw');
      return true;
    });
    // Pinned blocks did not move.
    for (let i = 0; i < 2; i++) assert.equal((await store.read(id, i)).tier, 'raw');
    store.unpin(id, 0);
    await store.write(id, 2, blockContent(7));
    await assertIntact(store, id, [...data, blockContent(7)]);
  } finally {
    await store.close();
    dir.cleanup();
  }
});
