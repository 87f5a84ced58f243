/**
 * Zero-copy on the GPU backend: the pool export and its geometry, and an engine in another
 * process (clients/python/zero_copy_engine.py, with torch and CuPy) that maps tier 0,
 * writes blocks into their slots, forces them down the ladder and reads them back through
 * promotion. Skips, saying why, where there is no GPU or no torch with CUDA and CuPy.
 */
import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { buildServer } from '../../../api/server.js';
import { projectRoot } from '../../../runtime/config.js';
import { addon } from '../../../runtime/native.js';
import { blockContent, FOUR_BIT_BOUND, relativeError, tempDir, tinyStore, TINY_MODEL, TINY_RAW } from '../../helpers.js';

const probe = await addon.probe();
const noGpu = probe.gpu.present && addon.GpuTiers ? false : `no GPU backend here: ${probe.gpu.error || 'addon built without CUDA'}`;
const CHECK_TORCH = 'import torch, cupy; assert torch.cuda.is_available(), "torch sees no GPU"';
const noTorch = noGpu || (spawnSync('python3', ['-c', CHECK_TORCH]).status === 0 ? false : 'python3 with torch (CUDA) and cupy is not installed here');
const LADDER = { raw: 4, quantized: 4, disk: 32 };

test('GPU: tier 0 is exported as a CUDA IPC handle with its slot geometry', { skip: noGpu }, async () => {
  const dir = tempDir();
  const store = await tinyStore(dir.path, LADDER);
  try {
    const pool = store.exportPool();
    assert.equal(pool.handle.length, 64, 'a cudaIpcMemHandle_t');
    assert.equal(pool.slots, LADDER.raw);
    assert.equal(pool.slotBytes, TINY_RAW);
    assert.deepEqual(pool.shape, [TINY_MODEL.layers, 2, TINY_MODEL.kvHeads, TINY_MODEL.tokensPerBlock, TINY_MODEL.headDim]);
    const lease = store.createLease('engine').id;
    store.createSequence('g');
    store.allocate('g', 1);
    const held = await store.acquire(lease, 'g', 0);
    assert.ok(held.slot >= 0 && held.slot < pool.slots);
    await store.endLease(lease);
    store.checkInvariants();
  } finally {
    await store.close();
    dir.cleanup();
  }
});

test('GPU: an engine in another process writes slots, forces eviction and reads back through promotion', { skip: noTorch, timeout: 120_000 }, async () => {
  const dir = tempDir();
  const app = await buildServer(await tinyStore(dir.path, LADDER));
  try {
    const url = await app.listen({ host: '127.0.0.1', port: 0 });
    const example = join(projectRoot, 'clients', 'python', 'zero_copy_engine.py');
    const { stdout } = await promisify(execFile)('python3', [example, '--url', url, '--blocks', '24', '--rounds', '1'], {
      env: { ...process.env, PYTHONPATH: join(projectRoot, 'clients', 'python'), PYTHONDONTWRITEBYTECODE: '1' },
    });
    assert.match(stdout, /^ok$/m);
    const report = JSON.parse(stdout.slice(0, stdout.indexOf('\n}\n') + 2)) as { checks: Record<string, { foundIn: Record<string, number>; exact: number; lossy: number }> };
    for (const path of ['zeroCopy', 'http']) {
      const c = report.checks[path]!;
      assert.equal(c.exact + c.lossy, 24, path);
      assert.ok(c.exact >= 1 && (c.foundIn.disk ?? 0) >= 1, `${path}: blocks came back from tier 0 and from disk: ${JSON.stringify(c)}`);
    }
  } finally {
    await app.close();
    dir.cleanup();
  }
});

test('GPU: acquire-many brings blocks from disk and tier 1 into tier 0 in one pipeline, each within the quantization bound', { skip: noGpu }, async () => {
  const dir = tempDir();
  const store = await tinyStore(dir.path, { raw: 16, quantized: 4, disk: 64 });
  try {
    store.createSequence('many');
    store.allocate('many', 40);
    const data = Array.from({ length: 40 }, (_, i) => blockContent(700 + i));
    for (let i = 0; i < 40; i++) await store.write('many', i, data[i]!);
    const lease = store.createLease('engine').id;
    const got = await store.acquireMany(lease, 'many', Array.from({ length: 16 }, (_, i) => i));
    const tiers = new Map<string, number>();
    const ids: number[] = [];
    for (const e of got) {
      if ('error' in e) assert.fail(JSON.stringify(e));
      ids.push(e.blockId);
      tiers.set(String(e.tier), (tiers.get(String(e.tier)) ?? 0) + 1);
      const now = await store.read('many', e.index, { promote: false });
      assert.equal(now.tier, 'raw');
      assert.ok(relativeError(data[e.index]!, now.data) < FOUR_BIT_BOUND, `block ${e.index}`);
    }
    assert.ok((tiers.get('disk') ?? 0) >= 8, `most came from disk: ${JSON.stringify([...tiers])}`);
    const released = await store.releaseMany(lease, ids.map((blockId) => ({ blockId })));
    assert.ok(released.every((e) => !('error' in e) && e.pins === 0));
    store.checkInvariants();
  } finally {
    await store.close();
    dir.cleanup();
  }
});
