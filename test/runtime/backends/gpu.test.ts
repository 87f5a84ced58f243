/**
 * GPU backend tests. They run where the addon finds a GPU and skip elsewhere, saying so.
 * (Where there is a GPU, every other suite runs on the GPU backend as well, since an
 * 'auto' configuration picks it.) Here: the GPU and host paths agree byte for byte on the
 * stored format, spill/fill round trips hold under pressure on cuFile and on the forced
 * POSIX fallback, and status names the path in use.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { addon } from '../../../runtime/native.js';
import type { BlockStore } from '../../../runtime/store.js';
import { blockContent, FOUR_BIT_BOUND, relativeError, tempDir, tinyStore } from '../../helpers.js';

const probe = await addon.probe();
const noGpu = probe.gpu.present && addon.GpuTiers ? false : `no GPU backend here: ${probe.gpu.error || 'addon built without CUDA'}`;

async function roundTrips(store: BlockStore, blocks: number): Promise<void> {
  const { id } = store.createSequence();
  store.allocate(id, blocks);
  const data = Array.from({ length: blocks }, (_, i) => blockContent(7000 + i));
  for (let i = 0; i < blocks; i++) await store.write(id, i, data[i]!);
  const check = async (i: number, promote: boolean) => {
    const r = await store.read(id, i, { promote });
    if (r.lossy) assert.ok(relativeError(data[i]!, r.data) < FOUR_BIT_BOUND, `block ${i}: error ${relativeError(data[i]!, r.data)}`);
    else assert.ok(r.data.equals(data[i]!), `block ${i} differs`);
  };
  // One pass in order, each read promoting its block (filling it from disk), then passes
  // of concurrent reads, where promotions that find every slot busy read in place.
  for (let i = 0; i < blocks; i++) await check(i, true);
  for (let round = 0; round < 3; round++) {
    await Promise.all(data.map((_, i) => check(i, (i + round) % 2 === 0)));
    store.checkInvariants();
  }
  const moves = await store.telemetry.moveCount.get();
  const count = (from: string, to: string) => moves.values.filter((v) => v.labels.from === from && v.labels.to === to && v.value > 0).reduce((a, v) => a + v.value, 0);
  const spills = count('quantized', 'disk') + count('host', 'disk');
  const fills = count('disk', 'quantized');
  assert.ok(spills > 5 && fills > 5, `the ladder must have moved: ${spills} spills, ${fills} fills`);
  if (store.layout.tiers.some((t) => t.name === 'host')) {
    assert.ok(count('quantized', 'host') > 5 && count('host', 'quantized') > 5, `blocks must have passed through host memory: ${JSON.stringify(moves.values)}`);
  }
}

test('GPU: spill and fill round trips under pressure through cuFile', { skip: noGpu }, async () => {
  const dir = tempDir();
  const store = await tinyStore(dir.path, { raw: 2, quantized: 2, disk: 24 });
  try {
    const b = store.describeBackend();
    assert.equal(b.name, 'gpu');
    assert.match(b.paths.disk, probe.cufile.status === 'compat' || probe.cufile.status === 'gds' ? /cuFileWrite\/cuFileRead/ : /POSIX/);
    await roundTrips(store, 20);
  } finally {
    await store.close();
    dir.cleanup();
  }
});

for (const io of ['auto', 'posix'] as const) {
  test(`GPU: a pinned host tier between HBM and disk keeps every block (disk I/O ${io})`, { skip: noGpu }, async () => {
    const dir = tempDir();
    const store = await tinyStore(dir.path, { raw: 2, quantized: 2, host: 6, disk: 24 }, { tiers: { disk: { io } } });
    try {
      assert.match(store.describeBackend().paths.host ?? '', /pinned host memory/);
      await roundTrips(store, 24);
    } finally {
      await store.close();
      dir.cleanup();
    }
  });
}

test('GPU: the POSIX fallback, forced on, keeps every block and says it is in use', { skip: noGpu }, async () => {
  const dir = tempDir();
  const store = await tinyStore(dir.path, { raw: 2, quantized: 2, disk: 24 }, { tiers: { disk: { io: 'posix' } } });
  try {
    assert.match(store.describeBackend().paths.disk, /POSIX pread\/pwrite through pinned bounce buffers.*requested by configuration/);
    await roundTrips(store, 20);
  } finally {
    await store.close();
    dir.cleanup();
  }
});

test('GPU and host quantize a block to the same stored bytes', { skip: noGpu }, async () => {
  const dirs = [tempDir(), tempDir()];
  // Blocks 0-1 end in the host tier, block 2 in tier 1: stored bytes come from both.
  const ladder = { raw: 1, quantized: 1, host: 2, disk: 4 };
  const gpu = await tinyStore(dirs[0]!.path, ladder);
  const host = await tinyStore(dirs[1]!.path, ladder, { backend: 'host' });
  try {
    let differing = 0;
    for (const store of [gpu, host]) {
      const { id } = store.createSequence('agree');
      store.allocate(id, 4);
      for (let i = 0; i < 4; i++) await store.write(id, i, blockContent(42 + i));
    }
    assert.deepEqual((await Promise.all([0, 1, 2].map((i) => gpu.read('agree', i, { promote: false })))).map((r) => r.tier), ['host', 'host', 'quantized']);
    for (let i = 0; i < 3; i++) {
      const a = await gpu.read('agree', i, { format: 'stored' });
      const b = await host.read('agree', i, { format: 'stored' });
      assert.equal(a.format, 'quantized');
      for (let k = 0; k < a.data.length; k++) if (a.data[k] !== b.data[k]) differing++;
      const ra = await gpu.read('agree', i, { promote: false });
      const rb = await host.read('agree', i, { promote: false });
      assert.ok(relativeError(ra.data, rb.data) < 1e-4, `dequantized block ${i} differs between GPU and host`);
    }
    assert.equal(differing, 0, `${differing} stored bytes differ between the GPU kernels and the C++ reference`);
  } finally {
    await gpu.close();
    await host.close();
    for (const d of dirs) d.cleanup();
  }
});
