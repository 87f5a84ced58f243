/**
 * The shared tier (runtime/shared-tier.ts) on its own and under two stores in one process:
 * the file format and its verification, atomic idempotent publishing, eviction by last
 * use, evictors racing readers, and a prefix committed by one store pulled by another.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync, truncateSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { Registry } from 'prom-client';
import { parseConfig } from '../../runtime/config.js';
import { computeLayout } from '../../runtime/layout.js';
import { addon, quantize } from '../../runtime/native.js';
import { chainHashes } from '../../runtime/prefix.js';
import { SHARED_HEADER_BYTES, SharedTier } from '../../runtime/shared-tier.js';
import type { BlockStore } from '../../runtime/store.js';
import { blockContent, FOUR_BIT_BOUND, relativeError, tempDir, tinyConfig, tinyStore, TINY_MODEL, TINY_QUANT } from '../helpers.js';

const SLOTS = { raw: 2, quantized: 2, disk: 16 };
const hashOf = (i: number) => i.toString(16).padStart(32, '0');

async function openTier(dir: string, budgetBytes = 1 << 30, keyBits = 4): Promise<{ tier: SharedTier; stored: (seed: number) => Promise<Buffer> }> {
  const config = tinyConfig(dir, SLOTS, { quantization: { keyBits } });
  const layout = computeLayout(config);
  const tier = await SharedTier.open(join(dir, 'shared'), budgetBytes, layout, new Registry());
  return { tier, stored: (seed) => quantize(layout.quant, blockContent(seed)) };
}

/** Runs `fn` in a fresh temporary directory, removed after. */
async function inTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = tempDir();
  try {
    await fn(dir.path);
  } finally {
    dir.cleanup();
  }
}

/** Commits `count` blocks of contents seed, seed + 1, ... as one prefix chain; answers its hashes. */
async function commitChain(store: BlockStore, count: number, seed: number): Promise<string[]> {
  const tpb = TINY_MODEL.tokensPerBlock;
  const tokens = Array.from({ length: count * tpb }, (_, i) => seed * 1000 + i);
  const { id } = store.createSequence();
  store.allocate(id, count);
  for (let i = 0; i < count; i++) await store.write(id, i, blockContent(seed + i), tokens.slice(i * tpb, (i + 1) * tpb));
  return chainHashes(tokens, tpb);
}

const blockFiles = (dir: string) => readdirSync(join(dir, 'shared')).filter((n) => n.endsWith('.kv'));

test('a published block reads back byte for byte; a second publish of it writes nothing', () => inTempDir(async (dir) => {
  const { tier, stored } = await openTier(dir);
  const bytes = await stored(1);
  assert.equal(await tier.publish(hashOf(1), bytes), 'written');
  assert.equal(await tier.publish(hashOf(1), bytes), 'exists');
  assert.deepEqual(blockFiles(dir), [tier.fileName(hashOf(1))]);
  assert.equal(statSync(join(dir, 'shared', tier.fileName(hashOf(1)))).size, SHARED_HEADER_BYTES + TINY_QUANT);
  assert.deepEqual(await tier.fetch(hashOf(1)), bytes);
  assert.equal(await tier.fetch(hashOf(2)), null);
  const s = tier.describe();
  assert.equal(s.hits, 1);
  assert.equal(s.misses.missing, 1);
  assert.equal(s.bytesWritten, SHARED_HEADER_BYTES + TINY_QUANT);
}));

test('two quantizations never share a file: the params digest is in the name and the header', () => inTempDir(async (dir) => {
  const four = await openTier(dir, 1 << 30, 4);
  const three = await openTier(dir, 1 << 30, 3);
  assert.notEqual(four.tier.digest, three.tier.digest);
  await four.tier.publish(hashOf(1), await four.stored(1));
  assert.equal(await three.tier.fetch(hashOf(1)), null, 'another configuration does not see it');
  // A file of the other configuration renamed to this one's name is foreign, never data.
  const shared = join(dir, 'shared');
  writeFileSync(join(shared, three.tier.fileName(hashOf(1))), readFileSync(join(shared, four.tier.fileName(hashOf(1)))));
  assert.equal(await three.tier.fetch(hashOf(1)), null);
  assert.equal(three.tier.describe().misses.foreign, 1);
}));

test('a torn file, a flipped payload byte and a flipped header byte are misses, and the bad file goes', () => inTempDir(async (dir) => {
  const { tier, stored } = await openTier(dir);
  const file = (i: number) => join(dir, 'shared', tier.fileName(hashOf(i)));
  for (let i = 1; i <= 3; i++) await tier.publish(hashOf(i), await stored(i));
  truncateSync(file(1), SHARED_HEADER_BYTES + 100);
  const payload = readFileSync(file(2));
  payload[SHARED_HEADER_BYTES + 500]! ^= 1;
  writeFileSync(file(2), payload);
  const header = readFileSync(file(3));
  header[13]! ^= 1; // the payload length
  writeFileSync(file(3), header);
  for (let i = 1; i <= 3; i++) assert.equal(await tier.fetch(hashOf(i)), null, `file ${i}`);
  assert.deepEqual(tier.describe().misses, { missing: 0, torn: 1, foreign: 0, checksum: 2 });
  assert.deepEqual(blockFiles(dir), [], 'bad files are removed so that the next publisher replaces them');
  assert.equal(await tier.publish(hashOf(1), await stored(1)), 'written');
  assert.deepEqual(await tier.fetch(hashOf(1)), await stored(1));
}));

test('concurrent publishers of the same blocks leave one whole file each and no temporary files', () => inTempDir(async (dir) => {
  const a = await openTier(dir);
  const b = await openTier(dir);
  const blocks = await Promise.all(Array.from({ length: 8 }, (_, i) => a.stored(i)));
  const results = await Promise.all(blocks.flatMap((bytes, i) => [a.tier.publish(hashOf(i), bytes), b.tier.publish(hashOf(i), bytes)]));
  assert.ok(results.filter((r) => r === 'written').length >= 8);
  assert.deepEqual(readdirSync(join(dir, 'shared')).sort(), blocks.map((_, i) => a.tier.fileName(hashOf(i))).sort());
  for (const [i, bytes] of blocks.entries()) assert.deepEqual(await b.tier.fetch(hashOf(i)), bytes);
}));

test('over its budget a publisher removes the least recently used files; a hit counts as a use', () => inTempDir(async (dir) => {
  const fileBytes = SHARED_HEADER_BYTES + TINY_QUANT;
  const { tier, stored } = await openTier(dir, 6 * fileBytes);
  const shared = join(dir, 'shared');
  for (let i = 0; i < 6; i++) {
    await tier.publish(hashOf(i), await stored(i));
    // Ages one second apart, oldest first, whatever the filesystem's time resolution.
    const t = new Date(Date.now() - (100 - i) * 1000);
    utimesSync(join(shared, tier.fileName(hashOf(i))), t, t);
  }
  assert.ok(await tier.fetch(hashOf(0)), 'block 0 is used: now the newest');
  await tier.publish(hashOf(6), await stored(6));
  const left = new Set(blockFiles(dir));
  // 90% of 6 files is 5.4: room for the new one means 4 old ones stay.
  assert.equal(left.size, 5);
  assert.ok(left.has(tier.fileName(hashOf(0))), 'the block just hit stays');
  assert.ok(!left.has(tier.fileName(hashOf(1))) && !left.has(tier.fileName(hashOf(2))), 'the two least recently used went');
  assert.equal(tier.describe().evicted, 2);
}));

test('an evictor racing readers: every read is the published bytes or a miss, never an error', () => inTempDir(async (dir) => {
  const fileBytes = SHARED_HEADER_BYTES + TINY_QUANT;
  const reader = await openTier(dir);
  const evictor = await openTier(dir, 4 * fileBytes);
  const blocks = await Promise.all(Array.from({ length: 24 }, (_, i) => reader.stored(i)));
  let hits = 0;
  let misses = 0;
  for (let round = 0; round < 10; round++) {
    await Promise.all(blocks.map((bytes, i) => reader.tier.publish(hashOf(i), bytes)));
    const firstScan = evictor.tier.scan();
    // Half the reads race the scans; the other half come after the first, so that some find
    // their file gone however slow the machine is.
    const reads = blocks.map(async (bytes, i) => {
      await (i % 2 ? firstScan : sleep(Math.random() * 20));
      const got = await reader.tier.fetch(hashOf(i));
      if (got === null) misses++;
      else {
        assert.deepEqual(got, bytes);
        hits++;
      }
    });
    const scans = [firstScan, ...[5, 10].map(async (ms) => {
      await sleep(ms);
      await evictor.tier.scan();
    })];
    await Promise.all([...reads, ...scans]);
  }
  assert.ok(evictor.tier.describe().evicted > 0 && misses > 0, `the evictors removed files under the readers: ${JSON.stringify(evictor.tier.describe())}, ${misses}`);
  assert.equal(reader.tier.describe().misses.missing, misses);
  assert.equal(hits + misses, 240);
}));

test('a prefix committed by one store is pulled by another sharing the directory: stored bytes equal, raw within the 4-bit bound', async () => {
  const dir = tempDir();
  const shared = { tiers: { shared: { path: join(dir.path, 'shared') } }, backend: 'host' as const };
  const a = await tinyStore(join(dir.path, 'a'), SLOTS, shared);
  const b = await tinyStore(join(dir.path, 'b'), SLOTS, shared);
  try {
    const hashes = await commitChain(a, 6, 40);
    // The stored form of what was written: what the tiers hold once the blocks leave tier 0.
    const expected = await Promise.all(hashes.map((_, i) => quantize(computeLayout(a.config).quant, blockContent(40 + i))));
    await a.close(); // waits for the publishes in flight

    assert.equal(b.lookupPrefix(hashes).length, 0);
    assert.equal(await b.pullShared(hashes), 6);
    assert.equal(await b.pullShared(hashes), 0, 'a second pull finds them local and reads nothing');
    assert.equal(b.sharedStatus()!.hits, 6);
    const seq = b.createSequence('again', hashes);
    assert.equal(seq.attached.length, 6);
    for (let i = 0; i < 6; i++) {
      const stored = await b.read('again', i, { format: 'stored', promote: false });
      assert.equal(stored.format, 'quantized');
      assert.deepEqual(stored.data, expected[i]);
      const raw = await b.read('again', i);
      assert.ok(relativeError(blockContent(40 + i), raw.data) < FOUR_BIT_BOUND);
    }
    b.checkInvariants();
    const metrics = await b.telemetry.registry.getSingleMetricAsString('spillway_shared_hits_total');
    assert.match(metrics, /spillway_shared_hits_total 6/);
  } finally {
    await a.close();
    await b.close();
    dir.cleanup();
  }
});

test('a chain stops at the first block the shared tier lacks', async () => {
  const dir = tempDir();
  const shared = { tiers: { shared: { path: join(dir.path, 'shared') } }, backend: 'host' as const };
  const a = await tinyStore(join(dir.path, 'a'), SLOTS, shared);
  try {
    const hashes = [hashOf(1), hashOf(2), hashOf(3)];
    const { tier, stored } = await openTier(dir.path);
    await tier.publish(hashOf(1), await stored(1));
    await tier.publish(hashOf(3), await stored(3));
    assert.equal(await a.pullShared(hashes), 1);
    assert.deepEqual(a.lookupPrefix(hashes).map((b) => b.hash), [hashOf(1)]);
    a.checkInvariants();
  } finally {
    await a.close();
    dir.cleanup();
  }
});

test('tiers.shared is off without a path, and bad values fail naming the field', () => {
  assert.equal(parseConfig({}).tiers.shared.path, undefined);
  assert.throws(() => parseConfig({ tiers: { shared: { path: '/mnt/kv', bytes: 0 } } }), /config tiers\.shared\.bytes: must be positive/);
  assert.throws(() => parseConfig({ tiers: { shared: { path: '' } } }), /config tiers\.shared\.path:/);
  assert.throws(() => parseConfig({ tiers: { shared: { path: '/mnt/kv', bytes: '12 parsecs' } } }), /config tiers\.shared\.bytes:/);
  assert.throws(() => parseConfig({ tiers: { shared: { dir: '/mnt/kv' } } }), /config tiers\.shared/);
  assert.equal(parseConfig({ tiers: { shared: { path: '/mnt/kv', bytes: '2TiB' } } }).tiers.shared.bytes, 2 * 2 ** 40);
});

const probe = await addon.probe();
const noGpu = probe.gpu.present && addon.GpuTiers ? false : `no GPU backend here: ${probe.gpu.error || 'addon built without CUDA'}`;

test('GPU: a prefix a host-backend store published is pulled into HBM by a GPU-backend store', { skip: noGpu }, async () => {
  const dir = tempDir();
  const shared = { path: join(dir.path, 'shared') };
  const host = await tinyStore(join(dir.path, 'host'), SLOTS, { tiers: { shared }, backend: 'host' });
  const gpu = await tinyStore(join(dir.path, 'gpu'), SLOTS, { tiers: { shared }, backend: 'gpu' });
  try {
    const hashes = await commitChain(host, 4, 60);
    await host.close();
    assert.equal(await gpu.pullShared(hashes), 4);
    assert.match(gpu.sharedStatus()!.io, /POSIX/);
    gpu.createSequence('q', hashes);
    for (let i = 0; i < 4; i++) {
      const raw = await gpu.read('q', i);
      assert.equal(raw.promoted, true, 'dequantized from its tier-1 copy in HBM');
      assert.ok(relativeError(blockContent(60 + i), raw.data) < FOUR_BIT_BOUND, `block ${i}`);
    }
    gpu.checkInvariants();
  } finally {
    await host.close();
    await gpu.close();
    dir.cleanup();
  }
});
