/**
 * Three `spillway serve` processes sharing one directory as their shared tier: one commits
 * a prefix, the others attach it (stored bytes equal, raw within the 4-bit bound); two
 * commit the same prefix at once and leave one whole file a block; a torn file is a miss.
 */
import assert from 'node:assert/strict';
import { readdirSync, truncateSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { computeLayout } from '../../runtime/layout.js';
import { quantize } from '../../runtime/native.js';
import type { SharedTierStatus } from '../../runtime/shared-tier.js';
import { blockContent, FOUR_BIT_BOUND, relativeError, tempDir, tinyConfig, TINY_MODEL, TINY_QUANT, TINY_RAW } from '../helpers.js';
import { startServe, type ServedProcess } from '../api/serve-helpers.js';

const BLOCKS = 8;
const TPB = TINY_MODEL.tokensPerBlock;
const json = (body: unknown) => ({ method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });

async function commitPrefix(url: string, id: string, tokens: number[], seed: number): Promise<void> {
  assert.equal((await fetch(`${url}/v1/sequences`, json({ id }))).status, 201);
  assert.equal((await fetch(`${url}/v1/sequences/${id}/blocks`, json({ count: BLOCKS }))).status, 201);
  for (let i = 0; i < BLOCKS; i++) {
    const res = await fetch(`${url}/v1/sequences/${id}/blocks/${i}?tokens=${tokens.slice(i * TPB, (i + 1) * TPB).join(',')}`, {
      method: 'PUT', headers: { 'content-type': 'application/octet-stream' }, body: new Uint8Array(blockContent(seed + i)),
    });
    assert.equal(res.status, 200, await res.text());
  }
}

async function sharedStatus(url: string): Promise<SharedTierStatus> {
  return ((await (await fetch(`${url}/v1/status`)).json()) as { shared: SharedTierStatus }).shared;
}

/** Waits until the server has offered `count` blocks to the shared tier (publishing is off the write's path). */
async function published(url: string, count: number): Promise<SharedTierStatus> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const s = await sharedStatus(url);
    const offered = s.published.written! + s.published.exists!;
    if (offered >= count || Date.now() > deadline) return s;
    await new Promise((r) => setTimeout(r, 50));
  }
}

test('servers sharing a directory: a prefix committed on one is attached and read on the others; concurrent publishers; a torn file is a miss', { timeout: 180_000 }, async () => {
  const dir = tempDir();
  const sharedDir = join(dir.path, 'shared');
  const args = (name: string) => [
    '--set', `model.layers=${TINY_MODEL.layers}`, '--set', `model.kvHeads=${TINY_MODEL.kvHeads}`, '--set', `model.headDim=${TINY_MODEL.headDim}`,
    '--set', `model.tokensPerBlock=${TPB}`, '--set', 'backend=host',
    '--set', `tiers.raw.bytes=${4 * TINY_RAW}`, '--set', `tiers.quantized.bytes=${4 * TINY_QUANT}`,
    '--set', `tiers.disk.bytes=${64 * 4096}`, '--set', `tiers.disk.path=${join(dir.path, name, 'tier2.slots')}`,
    '--set', `tiers.shared.path=${sharedDir}`, '--set', 'tiers.shared.bytes=64MiB',
  ];
  const quant = computeLayout(tinyConfig(dir.path, { raw: 4, quantized: 4, disk: 64 })).quant;
  const tokens = Array.from({ length: BLOCKS * TPB }, (_, i) => 3 + 5 * i);
  const servers: ServedProcess[] = [];
  try {
    for (const name of ['a', 'b', 'c']) servers.push(await startServe(args(name)));
    const [a, b, c] = servers.map((s) => s.url) as [string, string, string];

    // One commits; the others attach the prefix by its token ids.
    await commitPrefix(a, 'prompt', tokens, 100);
    const offered = await published(a, BLOCKS);
    assert.equal(offered.published.written, BLOCKS, JSON.stringify(offered));
    assert.equal(readdirSync(sharedDir).filter((n) => n.endsWith('.kv')).length, BLOCKS);

    const lookup = (await (await fetch(`${b}/v1/prefix/lookup`, json({ tokens }))).json()) as { cached: unknown[]; hashes: string[] };
    assert.equal(lookup.cached.length, BLOCKS, 'b finds the whole prefix a committed');
    const created = (await (await fetch(`${b}/v1/sequences`, json({ id: 'again', prefix: lookup.hashes }))).json()) as { attached: unknown[] };
    assert.equal(created.attached.length, BLOCKS);
    for (let i = 0; i < BLOCKS; i++) {
      const stored = await fetch(`${b}/v1/sequences/again/blocks/${i}?format=stored&promote=false`);
      assert.equal(stored.headers.get('spillway-format'), 'quantized');
      assert.deepEqual(Buffer.from(await stored.arrayBuffer()), await quantize(quant, blockContent(100 + i)));
      const raw = Buffer.from(await (await fetch(`${b}/v1/sequences/again/blocks/${i}`)).arrayBuffer());
      assert.ok(relativeError(blockContent(100 + i), raw) < FOUR_BIT_BOUND, `block ${i}`);
    }
    const bStatus = await sharedStatus(b);
    assert.equal(bStatus.hits, BLOCKS);
    assert.match(await (await fetch(`${b}/metrics`)).text(), new RegExp(`spillway_shared_hits_total ${BLOCKS}`));
    const telemetry = (await (await fetch(`${b}/v1/telemetry`)).json()) as { shared: { hits: number; bytesRead: number } };
    assert.equal(telemetry.shared.hits, BLOCKS, 'the dashboard\'s feed shows the shared tier');
    assert.ok(telemetry.shared.bytesRead >= BLOCKS * TINY_QUANT);

    // A torn file is a miss: the chain stops before it on the third server.
    const hashes = lookup.hashes;
    truncateSync(join(sharedDir, readdirSync(sharedDir).find((n) => n.startsWith(hashes[5]!))!), 100);
    const cLookup = (await (await fetch(`${c}/v1/prefix/lookup`, json({ hashes }))).json()) as { cached: unknown[] };
    assert.equal(cLookup.cached.length, 5);
    assert.equal((await sharedStatus(c)).misses.torn, 1);

    // Two servers commit another prefix at once: one whole file a block, no temporary files left.
    const other = tokens.map((t) => t + 1_000_000);
    await Promise.all([commitPrefix(b, 'race', other, 300), commitPrefix(c, 'race', other, 300)]);
    const [bRace, cRace] = await Promise.all([published(b, BLOCKS), published(c, BLOCKS)]);
    const files = readdirSync(sharedDir);
    assert.equal(files.filter((n) => n.endsWith('.kv')).length, 2 * BLOCKS - 1, 'the torn file went; the new prefix has one file a block');
    assert.deepEqual(files.filter((n) => !n.endsWith('.kv')), [], 'no temporary files');
    assert.ok(bRace.published.written! + cRace.published.written! >= BLOCKS);
    const check = (await (await fetch(`${a}/v1/prefix/lookup`, json({ tokens: other }))).json()) as { cached: unknown[] };
    assert.equal(check.cached.length, BLOCKS, 'a third server reads what the two raced to publish');
  } finally {
    for (const s of servers) s.server.kill('SIGTERM');
    await Promise.all(servers.map((s) => s.server.exited));
    dir.cleanup();
  }
});
