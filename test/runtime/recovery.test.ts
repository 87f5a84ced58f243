/**
 * Warm restart at the store's level (runtime/recovery.ts): committed blocks on disk come
 * back after the store is reopened on the same files; torn, corrupt and foreign slots are
 * dropped or refused, never served. test/runtime/recovery-serve.test.ts kills a real server.
 */
import assert from 'node:assert/strict';
import { openSync, closeSync, readSync, writeSync } from 'node:fs';
import { test } from 'node:test';
import type { ConfigInput } from '../../runtime/config.js';
import { computeLayout } from '../../runtime/layout.js';
import { addon, quantize } from '../../runtime/native.js';
import { chainHashes } from '../../runtime/prefix.js';
import { scanDiskTier } from '../../runtime/recovery.js';
import type { BlockStore } from '../../runtime/store.js';
import { blockContent, FOUR_BIT_BOUND, relativeError, tempDir, tinyConfig, tinyStore, TINY_MODEL } from '../helpers.js';

const SLOTS = { raw: 2, quantized: 2, disk: 32 };
const COMMITTED = 12;
const TPB = TINY_MODEL.tokensPerBlock;
const HOST: ConfigInput = { backend: 'host' };

const tokens = (n: number) => Array.from({ length: n * TPB }, (_, i) => 1000 + i);
const hashes = chainHashes(tokens(COMMITTED), TPB);
const contents = Array.from({ length: COMMITTED }, (_, i) => blockContent(100 + i));

/**
 * Writes COMMITTED committed blocks, frees their sequence, then writes uncommitted blocks
 * until every committed one has been pushed down to disk, and closes the store.
 */
async function committedOnDisk(dir: string, extra: ConfigInput = HOST): Promise<void> {
  const store = await tinyStore(dir, SLOTS, extra);
  try {
    const { id } = store.createSequence('prompt');
    store.allocate(id, COMMITTED);
    for (let i = 0; i < COMMITTED; i++) await store.write(id, i, contents[i]!, tokens(COMMITTED).slice(i * TPB, (i + 1) * TPB));
    store.freeSequence(id);
    const filler = store.createSequence('filler').id;
    store.allocate(filler, SLOTS.raw + SLOTS.quantized);
    for (let i = 0; i < SLOTS.raw + SLOTS.quantized; i++) await store.write(filler, i, blockContent(900 + i));
    assert.ok(store.lookupPrefix(hashes).every((b) => b.tier === 'disk'), 'every committed block is on disk before the restart');
  } finally {
    await store.close();
  }
}

async function reopen(dir: string, extra: ConfigInput = HOST): Promise<BlockStore> {
  return tinyStore(dir, SLOTS, extra);
}

/** The disk slot each recovered prefix hash was found in. */
async function slotsByHash(dir: string): Promise<Map<string, number>> {
  const config = tinyConfig(dir, SLOTS, HOST);
  const { blocks } = await scanDiskTier(config, computeLayout(config), 'host');
  return new Map(blocks.map((b) => [b.hash, b.diskSlot]));
}

function patchFile(path: string, offset: number, bytes: Buffer): void {
  const fd = openSync(path, 'r+');
  try {
    writeSync(fd, bytes, 0, bytes.length, offset);
  } finally {
    closeSync(fd);
  }
}

function readFileAt(path: string, offset: number, length: number): Buffer {
  const fd = openSync(path, 'r');
  try {
    const out = Buffer.alloc(length);
    readSync(fd, out, 0, length, offset);
    return out;
  } finally {
    closeSync(fd);
  }
}

const probe = await addon.probe();
const noGpu = probe.gpu.present && addon.GpuTiers ? false : `no GPU backend here: ${probe.gpu.error || 'addon built without CUDA'}`;

for (const backend of ['host', 'gpu'] as const) {
  test(`${backend}: committed blocks on disk are found by prefix lookup after a restart and read back as written`, { skip: backend === 'gpu' && noGpu }, async () => {
    const dir = tempDir();
    try {
      await committedOnDisk(dir.path, { backend });
      const store = await reopen(dir.path, { backend });
      try {
        const report = store.recovery!;
        assert.equal(report.recovered, COMMITTED);
        assert.deepEqual(Object.values(report.dropped).reduce((a, b) => a + b), 0);
        assert.deepEqual(Object.values(report.refused).reduce((a, b) => a + b), 0);
        assert.ok(report.bytesScanned <= SLOTS.disk * 4096);

        const found = store.lookupPrefix(hashes);
        assert.equal(found.length, COMMITTED, 'the whole chain is cached again');
        assert.ok(found.every((b) => b.tier === 'disk'));
        const stats = store.stats();
        assert.equal(stats.cachedBlocks, COMMITTED);
        assert.equal(stats.liveBlocks, 0, 'recovered blocks are referenced by no sequence');

        // Attach the chain as a new sequence and read every block: the stored bytes are the
        // quantized form of what was written, the raw read is within the 4-bit bound.
        const { id, attached } = store.createSequence('again', hashes);
        assert.equal(attached.length, COMMITTED);
        const layout = store.layout;
        for (let i = 0; i < COMMITTED; i++) {
          const stored = await store.read(id, i, { format: 'stored', promote: false });
          assert.ok(stored.data.equals(await quantize(layout.quant, contents[i]!)), `block ${i}: stored bytes as before the restart`);
          const raw = await store.read(id, i);
          assert.ok(relativeError(contents[i]!, raw.data) < FOUR_BIT_BOUND, `block ${i} within the 4-bit bound`);
        }
        // The chain continues: the next block commits on the recovered parent, with a new id.
        store.allocate(id, 1);
        const next = await store.write(id, COMMITTED, blockContent(7), tokens(COMMITTED + 1).slice(COMMITTED * TPB));
        assert.equal(next.hash, chainHashes(tokens(COMMITTED + 1), TPB)[COMMITTED]);
        assert.ok(!found.some((b) => b.blockId === next.blockId), 'new blocks are numbered after the recovered ones');
        store.checkInvariants();
      } finally {
        await store.close();
      }
    } finally {
      dir.cleanup();
    }
  });
}

test('GPU: slots the host path wrote (CRC-32C) are refused, not served, by the GPU path', { skip: noGpu }, async () => {
  const dir = tempDir();
  try {
    await committedOnDisk(dir.path);
    const store = await reopen(dir.path, { backend: 'gpu' });
    try {
      assert.equal(store.recovery!.refused.checksum, COMMITTED);
      assert.equal(store.lookupPrefix(hashes).length, 0);
    } finally {
      await store.close();
    }
  } finally {
    dir.cleanup();
  }
});

test('a slot whose write was in flight at the crash is dropped at start, never offered', async () => {
  const dir = tempDir();
  try {
    await committedOnDisk(dir.path);
    const path = `${dir.path}/tier2.slots`;
    const slot = (await slotsByHash(dir.path)).get(hashes[5]!)!;
    // The crash between the two halves of a slot write: new payload bytes over the first
    // half of the block, its header (and mark) as the writer left them.
    patchFile(path, slot * 4096 + 64, blockContent(55).subarray(0, 600));
    patchFile(path + addon.slotFormat.marksSuffix, slot, Buffer.from([1]));
    const store = await reopen(dir.path);
    try {
      assert.equal(store.recovery!.dropped.torn, 1);
      assert.equal(store.recovery!.recovered, COMMITTED - 1);
      assert.equal(store.lookupPrefix(hashes).length, 5, 'the chain stops before the torn block');
      assert.ok(store.recovery!.examples.some((e) => e.slot === slot && e.reason === 'torn'));
      store.checkInvariants();
    } finally {
      await store.close();
    }
  } finally {
    dir.cleanup();
  }
});

test('a torn header is dropped at start; a torn payload under a whole header is refused on its first read, never served', async () => {
  const dir = tempDir();
  try {
    await committedOnDisk(dir.path);
    const path = `${dir.path}/tier2.slots`;
    const slots = await slotsByHash(dir.path);
    // Header half written: its second half from another write.
    patchFile(path, slots.get(hashes[3]!)! * 4096 + 32, Buffer.alloc(32, 0xab));
    // Payload half written, header whole, no mark (the machine, not the process, went down).
    patchFile(path, slots.get(hashes[8]!)! * 4096 + 64 + 600, blockContent(56).subarray(0, 500));
    const store = await reopen(dir.path);
    try {
      assert.equal(store.recovery!.dropped.corrupt, 1);
      assert.equal(store.recovery!.recovered, COMMITTED - 1);
      const tail = hashes.slice(4);
      assert.equal(store.lookupPrefix(tail).length, COMMITTED - 4, 'the blocks after the torn header are cached');
      const { id } = store.createSequence('tail', tail);
      await assert.rejects(store.read(id, 8 - 4), { code: 'CHECKSUM_MISMATCH' });
      await assert.rejects(store.read(id, 8 - 4), { code: 'BLOCK_LOST' });
      assert.equal(store.lookupPrefix(tail).length, 8 - 4, 'the torn block left the prefix index');
      store.checkInvariants();
    } finally {
      await store.close();
    }
  } finally {
    dir.cleanup();
  }
});

for (const [name, change, reason] of [
  ['dtype', { model: { ...TINY_MODEL, dtype: 'fp16' } }, 'dtype'],
  ['geometry (layers)', { model: { ...TINY_MODEL, layers: 3 } }, 'geometry'],
  ['key bits', { quantization: { keyBits: 3 } }, 'quantization'],
  ['rotation seed', { quantization: { seed: 1 } }, 'quantization'],
] as const) {
  test(`blocks written under another ${name} are refused and counted, not served`, async () => {
    const dir = tempDir();
    try {
      await committedOnDisk(dir.path);
      const store = await reopen(dir.path, { ...HOST, ...change } as ConfigInput);
      try {
        assert.equal(store.recovery!.refused[reason], COMMITTED);
        assert.equal(store.recovery!.recovered, 0);
        assert.equal(store.lookupPrefix(hashes).length, 0);
        assert.equal(store.stats().tiers[2]!.used, 0, 'refused slots are free for new blocks');
      } finally {
        await store.close();
      }
    } finally {
      dir.cleanup();
    }
  });
}

test('tiers.disk.recover: false starts empty; the default is true; a non-boolean is refused naming the field', async () => {
  const dir = tempDir();
  try {
    await committedOnDisk(dir.path);
    const off = await reopen(dir.path, { ...HOST, tiers: { disk: { recover: false } } } as ConfigInput);
    try {
      assert.equal(off.recovery!.enabled, false);
      assert.equal(off.lookupPrefix(hashes).length, 0);
    } finally {
      await off.close();
    }
    assert.equal(tinyConfig(dir.path, SLOTS).tiers.disk.recover, true);
    assert.throws(() => tinyConfig(dir.path, SLOTS, { tiers: { disk: { recover: 'yes' } } } as unknown as ConfigInput), /config tiers\.disk\.recover/);
  } finally {
    dir.cleanup();
  }
});

test('a stale generation or a second slot of the same prefix is dropped, one block kept', async () => {
  const dir = tempDir();
  try {
    await committedOnDisk(dir.path);
    const path = `${dir.path}/tier2.slots`;
    const slots = await slotsByHash(dir.path);
    const free = [...Array(SLOTS.disk).keys()].filter((s) => ![...slots.values()].includes(s));
    // Copy block 2's slot (header and payload) into a free slot: the same block twice.
    const copy = readFileAt(path, slots.get(hashes[2]!)! * 4096, 4096);
    patchFile(path, free[0]! * 4096, copy);
    const store = await reopen(dir.path);
    try {
      assert.equal(store.recovery!.dropped.duplicate, 1);
      assert.equal(store.recovery!.recovered, COMMITTED);
      assert.equal(store.lookupPrefix(hashes).length, COMMITTED);
      store.checkInvariants();
    } finally {
      await store.close();
    }
  } finally {
    dir.cleanup();
  }
});
