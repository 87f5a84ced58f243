/**
 * GPU backend tests. They run where the addon finds a GPU and skip elsewhere, saying so.
 * (Where there is a GPU, every other suite runs on the GPU backend as well, since an
 * 'auto' configuration picks it.) Here: the GPU and host paths agree byte for byte on the
 * stored format, spill/fill round trips hold under pressure on cuFile and on the forced
 * POSIX fallback, and status names the path in use.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { parseConfig } from '../../../runtime/config.js';
import { addon } from '../../../runtime/native.js';
import { openStore } from '../../../runtime/open.js';
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

/**
 * Writes 4 blocks to a GPU store and to a host store (each with a tier 0 of one block, so
 * three are quantized into tier 1) and compares what both hold: the stored bytes and the
 * dequantized values, exactly.
 */
async function agree(open: (dir: string, backend: 'gpu' | 'host') => Promise<BlockStore>, blockBytes: number): Promise<void> {
  const dirs = [tempDir(), tempDir()];
  const gpu = await open(dirs[0]!.path, 'gpu');
  const host = await open(dirs[1]!.path, 'host');
  try {
    let differing = 0;
    for (const store of [gpu, host]) {
      const { id } = store.createSequence('agree');
      store.allocate(id, 4);
      for (let i = 0; i < 4; i++) await store.write(id, i, blockContent(42 + i, blockBytes));
    }
    for (let i = 0; i < 3; i++) {
      const a = await gpu.read('agree', i, { format: 'stored' });
      const b = await host.read('agree', i, { format: 'stored' });
      assert.equal(a.format, 'quantized');
      for (let k = 0; k < a.data.length; k++) if (a.data[k] !== b.data[k]) differing++;
      const ra = await gpu.read('agree', i, { promote: false });
      const rb = await host.read('agree', i, { promote: false });
      assert.ok(ra.data.equals(rb.data), `dequantized block ${i} differs between GPU and host`);
    }
    assert.equal(differing, 0, `${differing} stored bytes differ between the GPU kernels and the C++ reference`);
  } finally {
    await gpu.close();
    await host.close();
    for (const d of dirs) d.cleanup();
  }
}

// 4 bits throughout, and layer 0 at 4 bits with the other at 3 for keys and 2.5 for values
const RATES = [{}, { keyBits: 3, valueBits: 2.5, outerLayers: { first: 1, last: 0, keyBits: 4, valueBits: 4 } }];

for (const quantization of RATES) {
  test(`GPU (general kernels) and host agree on stored bytes and dequantized values (${JSON.stringify(quantization)})`, { skip: noGpu }, async () => {
    // Blocks 0-1 end in the host tier, block 2 in tier 1: stored bytes come from both.
    await agree((dir, backend) => tinyStore(dir, { raw: 1, quantized: 1, host: 2, disk: 4 }, { backend, quantization }), 4096);
  });
}

type Model = { layers: number; kvHeads: number; headDim: number; tokensPerBlock: number; dtype: 'bf16' | 'fp16' | 'fp32' };

/** agree() over a store of one block a tier of this geometry and rates. */
function agreeOn(model: Model, quantization: object): Promise<void> {
  const raw = model.layers * 2 * model.kvHeads * model.tokensPerBlock * model.headDim * (model.dtype === 'fp32' ? 4 : 2);
  return agree((dir, backend) => openStore(parseConfig({
    backend, model, quantization,
    tiers: { raw: { bytes: raw }, quantized: { bytes: 4 * raw }, disk: { path: join(dir, 'tier2.slots'), bytes: 8 * raw } },
  })), raw);
}

test('GPU (head_dim-128 kernels, three layer ranges) and host agree on stored bytes and dequantized values', { skip: noGpu }, async () => {
  await agreeOn({ layers: 4, kvHeads: 2, headDim: 128, tokensPerBlock: 16, dtype: 'bf16' },
    { keyBits: 3, valueBits: 2.5, outerLayers: { first: 1, last: 1, keyBits: 4, valueBits: 3.5 } });
});

// format 3's matrix kinds in every dtype, in runs of one tile (24 tokens) and of two (16)
for (const [dtype, tokensPerBlock] of [['fp32', 24], ['fp16', 16], ['bf16', 24]] as const) {
  test(`GPU (format 3's matrix kernels, ${dtype}, ${tokensPerBlock} tokens) and host agree on stored bytes and dequantized values`, { skip: noGpu }, async () => {
    await agreeOn({ layers: 2, kvHeads: 2, headDim: 128, tokensPerBlock, dtype }, { keyBits: 4, valueBits: 4 });
  });
}

// format 4's halves kinds at both rates, beside 4-bit outer layers (format 3's matrix kinds) and
// 3-bit ones (the head_dim-128 kernels)
test("GPU (format 4's halves kernels, bf16, 16 tokens) and host agree on stored bytes and dequantized values", { skip: noGpu }, async () => {
  await agreeOn({ layers: 4, kvHeads: 2, headDim: 128, tokensPerBlock: 16, dtype: 'bf16' },
    { keyBits: 3.5, valueBits: 2.5, outerLayers: { first: 1, last: 1, keyBits: 4, valueBits: 3 } });
});
