/**
 * Warm restart of a real server: `spillway serve` killed with SIGKILL while 32 committed
 * blocks sit on disk, started again on the same files; prefix lookup finds all 32 and
 * reads return the bytes written (the stored form exactly, the raw form within the 4-bit bound).
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { quantParams } from '../../runtime/layout.js';
import { quantize } from '../../runtime/native.js';
import { blockContent, FOUR_BIT_BOUND, relativeError, tempDir, tinyConfig, TINY_MODEL, TINY_QUANT, TINY_RAW } from '../helpers.js';
import { startServe } from '../api/serve-helpers.js';

const BLOCKS = 32;
const TPB = TINY_MODEL.tokensPerBlock;

test('committed blocks on disk survive kill -9: lookup finds them after a restart on the same files and reads return the same bytes', { timeout: 120_000 }, async () => {
  const dir = tempDir();
  const args = [
    '--set', `model.layers=${TINY_MODEL.layers}`, '--set', `model.kvHeads=${TINY_MODEL.kvHeads}`, '--set', `model.headDim=${TINY_MODEL.headDim}`,
    '--set', `model.tokensPerBlock=${TPB}`, '--set', 'backend=host',
    '--set', `tiers.raw.bytes=${2 * TINY_RAW}`, '--set', `tiers.quantized.bytes=${2 * TINY_QUANT}`,
    '--set', `tiers.disk.bytes=${64 * 4096}`, '--set', `tiers.disk.path=${join(dir.path, 'tier2.slots')}`,
  ];
  const quant = quantParams(tinyConfig(dir.path, { raw: 2, quantized: 2, disk: 64 }));
  const tokens = Array.from({ length: BLOCKS * TPB }, (_, i) => 7 + 3 * i);
  const contents = Array.from({ length: BLOCKS }, (_, i) => blockContent(500 + i));
  const json = (body: unknown) => ({ method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  const lookup = async (url: string) =>
    (await (await fetch(`${url}/v1/prefix/lookup`, json({ tokens }))).json()) as { cached: Array<{ tier: string }>; hashes: string[] };
  try {
    const first = await startServe(args);
    try {
      const url = first.url;
      assert.equal((await fetch(`${url}/v1/sequences`, json({ id: 'prompt' }))).status, 201);
      assert.equal((await fetch(`${url}/v1/sequences/prompt/blocks`, json({ count: BLOCKS }))).status, 201);
      for (let i = 0; i < BLOCKS; i++) {
        const res = await fetch(`${url}/v1/sequences/prompt/blocks/${i}?tokens=${tokens.slice(i * TPB, (i + 1) * TPB).join(',')}`, {
          method: 'PUT', headers: { 'content-type': 'application/octet-stream' }, body: new Uint8Array(contents[i]!),
        });
        assert.equal(res.status, 200, await res.text());
      }
      assert.equal((await fetch(`${url}/v1/sequences/prompt`, { method: 'DELETE' })).status, 200);
      // Uncommitted blocks of a live sequence push every cached block down to disk.
      assert.equal((await fetch(`${url}/v1/sequences`, json({ id: 'live' }))).status, 201);
      assert.equal((await fetch(`${url}/v1/sequences/live/blocks`, json({ count: 4 }))).status, 201);
      for (let i = 0; i < 4; i++) {
        await fetch(`${url}/v1/sequences/live/blocks/${i}`, { method: 'PUT', headers: { 'content-type': 'application/octet-stream' }, body: new Uint8Array(blockContent(i)) });
      }
      const before = await lookup(url);
      assert.equal(before.cached.length, BLOCKS);
      assert.ok(before.cached.every((b) => b.tier === 'disk'), 'all 32 on disk at the kill');
    } finally {
      first.server.kill('SIGKILL');
      assert.equal((await first.server.exited).signal, 'SIGKILL');
    }

    const second = await startServe(args);
    try {
      const url = second.url;
      await second.until('/v1/ready');
      const status = (await (await fetch(`${url}/v1/status`)).json()) as { recovery: { recovered: number; uncommitted: number; dropped: Record<string, number>; totalMs: number } };
      assert.equal(status.recovery.recovered, BLOCKS);
      assert.ok(Object.values(status.recovery.dropped).every((n) => n === 0), JSON.stringify(status.recovery));
      const after = await lookup(url);
      assert.equal(after.cached.length, BLOCKS, 'prefix lookup finds all 32 after the restart');
      const created = await fetch(`${url}/v1/sequences`, json({ id: 'again', prefix: after.hashes }));
      assert.equal(((await created.json()) as { attached: unknown[] }).attached.length, BLOCKS);
      for (let i = 0; i < BLOCKS; i++) {
        const stored = Buffer.from(await (await fetch(`${url}/v1/sequences/again/blocks/${i}?format=stored&promote=false`)).arrayBuffer());
        assert.ok(stored.equals(await quantize(quant, contents[i]!)), `block ${i}: the stored bytes written before the kill`);
        const raw = Buffer.from(await (await fetch(`${url}/v1/sequences/again/blocks/${i}`)).arrayBuffer());
        assert.ok(relativeError(contents[i]!, raw) < FOUR_BIT_BOUND, `block ${i} within the 4-bit bound`);
      }
    } finally {
      await second.server.stop();
    }
  } finally {
    dir.cleanup();
  }
});
