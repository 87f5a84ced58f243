/**
 * The host tier, on the host backend: quantized blocks pass through it on their way down
 * to disk and come back up from it; it shows in capacity, status, telemetry and the move
 * events; a host tier larger than the memory available is refused naming its field.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { buildServer } from '../../../api/server.js';
import { parseConfig } from '../../../runtime/config.js';
import { computeLayout } from '../../../runtime/layout.js';
import { checkHostMemory, openStore } from '../../../runtime/open.js';
import type { BlockStore } from '../../../runtime/store.js';
import { blockContent, FOUR_BIT_BOUND, relativeError, tempDir, tinyConfig, tinyStore, TINY_QUANT, withHostStore, writeSequence } from '../../helpers.js';

const LADDER = { raw: 2, quantized: 2, host: 4, disk: 8 };


function movesOf(store: BlockStore): Map<string, number> {
  const seen = new Map<string, number>();
  store.telemetry.moves.on('move', (e: { kind: string; from: string; to: string; copied: boolean }) => {
    const key = `${e.kind} ${e.from}->${e.to}${e.copied ? '' : ' (free)'}`;
    seen.set(key, (seen.get(key) ?? 0) + 1);
  });
  return seen;
}

test('blocks go down through the host tier to disk and come back up from it, within the bound', async () => {
  await withHostStore(LADDER, async (store) => {
    const moves = movesOf(store);
    const data = await writeSequence(store, 'ctx', 14, 700);
    // Oldest first down the ladder: 0-5 on disk, 6-9 in host memory, 10-11 in tier 1, 12-13 raw.
    const used = Object.fromEntries(store.stats().tiers.map((t) => [t.name, t.used]));
    assert.deepEqual(Object.keys(used), ['raw', 'quantized', 'host', 'disk']);
    assert.equal(used.raw, 2);
    assert.equal(used.quantized, 2);
    assert.equal(used.host, 4);
    assert.equal(used.disk, 6, JSON.stringify(used));
    assert.ok((moves.get('demote quantized->host') ?? 0) >= 10, JSON.stringify([...moves]));
    assert.ok((moves.get('demote host->disk') ?? 0) >= 6, JSON.stringify([...moves]));
    // A read of a block in host memory brings it up through tier 1.
    const hostBlocks = [];
    for (let i = 0; i < 14; i++) {
      const r = await store.read('ctx', i, { promote: false });
      if (r.tier === 'host') hostBlocks.push(i);
      assert.ok(relativeError(data[i]!, r.data) < FOUR_BIT_BOUND || !r.lossy, `block ${i} from ${r.tier}`);
    }
    assert.deepEqual(hostBlocks, [6, 7, 8, 9], 'read in place from host memory');
    const before = await store.read('ctx', hostBlocks[0]!, { promote: false });
    const up = await store.read('ctx', hostBlocks[0]!);
    assert.equal(up.tier, 'host');
    assert.ok(up.promoted && up.lossy);
    assert.ok(up.data.equals(before.data), 'the same bytes from host memory and from tier 0 after promotion');
    assert.ok((moves.get('promote host->quantized') ?? 0) >= 1, JSON.stringify([...moves]));
    assert.ok((moves.get('promote quantized->raw') ?? 0) >= 1, JSON.stringify([...moves]));

    // Making room for that promotion moved tier 1's oldest block down into host memory and
    // host memory's oldest (but the one promoted) to disk; the newest there stayed.
    const stored = await store.read('ctx', hostBlocks[3]!, { format: 'stored' });
    assert.equal(stored.tier, 'host');
    assert.equal(stored.data.length, TINY_QUANT);
  });
});

test('acquire-many brings blocks up from disk past a full host tier', async () => {
  await withHostStore(LADDER, async (store) => {
    // 14 blocks in a ladder of 16 slots: room to bring two up (a full ladder has none).
    const data = await writeSequence(store, 'a', 14, 900);
    const lease = store.createLease('engine').id;
    const got = await store.acquireMany(lease, 'a', [0, 1]);
    for (const e of got) {
      assert.ok(!('error' in e), JSON.stringify(e));
      if ('error' in e) continue;
      assert.equal(e.tier, 'disk');
      const r = await store.read('a', e.index, { promote: false });
      assert.ok(relativeError(data[e.index]!, r.data) < FOUR_BIT_BOUND);
    }
    await store.releaseMany(lease, got.flatMap((e) => ('error' in e ? [] : [{ blockId: e.blockId }])));
  });
});

test('status, capacity and telemetry show the host tier in blocks, bytes and tokens', async () => {
  const dir = tempDir();
  const app = await buildServer(await tinyStore(dir.path, LADDER, { backend: 'host' }));
  try {
    const status = (await app.inject({ method: 'GET', url: '/v1/status' })).json();
    assert.deepEqual(status.capacity.tiers.map((t: { name: string; slots: number }) => [t.name, t.slots]), [['raw', 2], ['quantized', 2], ['host', 4], ['disk', 8]]);
    const host = status.capacity.tiers.find((t: { name: string }) => t.name === 'host');
    assert.equal(host.bytes, 4 * TINY_QUANT);
    assert.equal(host.tokens, 16);
    assert.equal(status.capacity.totalBlocks, 16);
    assert.match(status.backend.paths.host, /host memory/);
    const telemetry = (await app.inject({ method: 'GET', url: '/v1/telemetry' })).json();
    assert.equal(telemetry.slots.host, 4);
    assert.equal(telemetry.blocks.host, 0);
    const metrics = (await app.inject({ method: 'GET', url: '/metrics' })).body;
    assert.match(metrics, /spillway_tier_slots\{tier="host",state="free"\} 4/);
  } finally {
    await app.close();
    dir.cleanup();
  }
});

test('a ladder without a host tier says so: no host entry anywhere', async () => {
  const dir = tempDir();
  const app = await buildServer(await tinyStore(dir.path, { raw: 2, quantized: 2, disk: 8 }, { backend: 'host' }));
  try {
    const status = (await app.inject({ method: 'GET', url: '/v1/status' })).json();
    assert.deepEqual(status.capacity.tiers.map((t: { name: string }) => t.name), ['raw', 'quantized', 'disk']);
    assert.equal(status.backend.paths.host, undefined);
    const telemetry = (await app.inject({ method: 'GET', url: '/v1/telemetry' })).json();
    assert.equal(telemetry.slots.host, undefined);
  } finally {
    await app.close();
    dir.cleanup();
  }
});

test('a host tier larger than the host memory available is refused, naming tiers.host.bytes', async () => {
  const dir = tempDir();
  try {
    const config = tinyConfig(dir.path, { raw: 2, quantized: 2, host: 2 ** 40, disk: 8 }, { backend: 'host' });
    await assert.rejects(openStore(config), (err: { code: string; details: { field: string } }) => {
      assert.equal(err.code, 'INVALID_CONFIG');
      assert.equal(err.details.field, 'tiers.host.bytes');
      return true;
    });
    const layout = computeLayout(tinyConfig(dir.path, LADDER));
    assert.doesNotThrow(() => checkHostMemory(layout, 'gpu', 4 * TINY_QUANT), 'the host tier alone fits');
    assert.throws(() => checkHostMemory(layout, 'gpu', 4 * TINY_QUANT - 1), /tiers\.host\.bytes/);
    // On the host backend tiers 0 and 1 are host memory too.
    assert.throws(() => checkHostMemory(layout, 'host', 4 * TINY_QUANT), /tiers raw and quantized/);
    assert.throws(() => parseConfig({ tiers: { host: { bytes: 'lots' } } }), /tiers\.host\.bytes/);
  } finally {
    dir.cleanup();
  }
});
