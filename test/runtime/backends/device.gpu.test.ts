/**
 * gpu.device on a GPU machine: device 0 named explicitly, an index past the visible GPUs
 * refused at start naming the field, and, where two GPUs are visible, tiers, kernels and
 * the weights arena on device 1, and `serve --gpus 0,1` with a split checkpoint. They skip
 * without a GPU (or a second one), saying so.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { ServerProcess, startServerGroup } from '../../../api/process.js';
import { parseConfig } from '../../../runtime/config.js';
import { addon } from '../../../runtime/native.js';
import { DeviceSink } from '../../../runtime/weights/device-sink.js';
import { executePlan, planWeights } from '../../../runtime/weights/load.js';
import { splitCheckpoint } from '../../../runtime/weights/split.js';
import { blockContent, FOUR_BIT_BOUND, relativeError, tempDir, tinyStore } from '../../helpers.js';
import { startServe } from '../../api/serve-helpers.js';
import { tinyLlama, writeCheckpoint } from '../weights/fixtures.js';

const probe = await addon.probe();
const noGpu = probe.gpu.present && addon.GpuTiers ? false : `no GPU backend here: ${probe.gpu.error || 'addon built without CUDA'}`;
const noSecondGpu = noGpu || (probe.gpu.count < 2 ? `one GPU visible (${probe.gpu.name}): device 1 needs two` : false);
const SMALL = ['--set', 'tiers.raw.bytes=64MiB', '--set', 'tiers.quantized.bytes=64MiB', '--set', 'tiers.disk.bytes=256MiB'];

test('GPU: gpu.device 0 named explicitly: status, the pool and the log name device 0 by index and PCI bus id', { skip: noGpu, timeout: 120_000 }, async () => {
  const dir = tempDir();
  const served = await startServe(['--set', 'backend=gpu', '--set', 'gpu.device=0', '--set', `tiers.disk.path=${join(dir.path, 't2.slots')}`, ...SMALL]);
  try {
    const status = (await (await served.until('/v1/status')).json()) as { backend: { name: string; device: unknown; paths: { raw: string } } };
    const expected = probe.gpus[0]!;
    assert.equal(status.backend.name, 'gpu');
    assert.deepEqual(status.backend.device, { index: 0, name: expected.name, pciBusId: expected.pciBusId });
    assert.match(status.backend.paths.raw, new RegExp(`^HBM on GPU 0 \\(.*${expected.pciBusId}\\)`));
    const pool = (await (await fetch(`${served.url}/v1/zero-copy/pool`)).json()) as { deviceIndex: number; pciBusId: string };
    assert.deepEqual([pool.deviceIndex, pool.pciBusId], [0, expected.pciBusId]);
  } finally {
    await served.server.stop();
    dir.cleanup();
  }
});

test('GPU: a gpu.device past the visible GPUs is refused at start, naming the field and the count', { skip: noGpu, timeout: 120_000 }, async () => {
  const dir = tempDir();
  try {
    for (const backend of ['gpu', 'auto']) {
      const start = ServerProcess.start({ args: ['--set', `backend=${backend}`, '--set', `gpu.device=${probe.gpu.count}`, '--set', `tiers.disk.path=${join(dir.path, 't2.slots')}`] });
      await assert.rejects(start, (err: Error) => {
        assert.match(err.message, /server exited \(code 1,/);
        assert.match(err.message, new RegExp(`config gpu\\.device: ${probe.gpu.count} is not a visible GPU: ${probe.gpu.count} visible`));
        return true;
      }, backend);
    }
  } finally {
    dir.cleanup();
  }
});

test('GPU: gpu.device 1: the tiers, the kernels and the disk path run on the second GPU', { skip: noSecondGpu, timeout: 120_000 }, async () => {
  const dir = tempDir();
  const store = await tinyStore(dir.path, { raw: 1, quantized: 2, disk: 16 }, { gpu: { device: 1 } });
  try {
    assert.deepEqual(store.describeBackend().device, { index: 1, name: probe.gpus[1]!.name, pciBusId: probe.gpus[1]!.pciBusId });
    const { id } = store.createSequence();
    store.allocate(id, 8);
    const data = Array.from({ length: 8 }, (_, i) => blockContent(300 + i));
    for (let i = 0; i < 8; i++) await store.write(id, i, data[i]!); // quantized on device 1, spilled from it
    for (let i = 0; i < 8; i++) {
      const r = await store.read(id, i);
      if (r.lossy) assert.ok(relativeError(data[i]!, r.data) < FOUR_BIT_BOUND, `block ${i}`);
      else assert.ok(r.data.equals(data[i]!), `block ${i} differs`);
    }
    store.checkInvariants();
  } finally {
    await store.close();
    dir.cleanup();
  }
});

test('GPU: a weights arena on device 1 holds the files\' bytes', { skip: noSecondGpu, timeout: 120_000 }, async () => {
  const dir = tempDir();
  try {
    const tensors = tinyLlama();
    const plan = await planWeights(parseConfig({ weights: { source: await writeCheckpoint(dir.path, tensors, 3), requestBytes: 8192 } }).weights);
    const sink = new DeviceSink({ device: 1 });
    try {
      await executePlan(plan, sink, { concurrency: 8 });
      for (const t of plan.tensors) assert.ok((await sink.bytes(t)).equals(tensors.find((x) => x.name === t.name)!.data), `${t.name} differs on device 1`);
    } finally {
      sink.free();
    }
  } finally {
    dir.cleanup();
  }
});

test('GPU: serve --gpus 0,1 with a split checkpoint: each rank on its GPU, its weights loaded, ready', { skip: noSecondGpu, timeout: 180_000 }, async () => {
  const dir = tempDir();
  try {
    const split = join(dir.path, 'split');
    await splitCheckpoint({ input: await writeCheckpoint(join(dir.path, 'ckpt'), tinyLlama()), out: split, world: 2 });
    const group = await startServerGroup('0,1', ['--set', 'backend=gpu', '--set', 'server.port=0', '--set', `weights.source=${split}`,
      '--set', `tiers.disk.path=${join(dir.path, 't2.slots')}`, ...SMALL]);
    try {
      for (const [rank, url] of group.urls.entries()) {
        for (let ready = await fetch(`${url}/v1/ready`); ready.status !== 200; ready = await fetch(`${url}/v1/ready`)) {
          assert.equal(ready.status, 503);
          await new Promise((r) => setTimeout(r, 100));
        }
        const status = (await (await fetch(`${url}/v1/status`)).json()) as { backend: { device: { index: number; pciBusId: string } } };
        assert.deepEqual(status.backend.device.index, rank);
        assert.equal(status.backend.device.pciBusId, probe.gpus[rank]!.pciBusId);
        const weights = (await (await fetch(`${url}/v1/weights`)).json()) as { state: string; rank: number; world: number; memory: string };
        assert.deepEqual([weights.state, weights.rank, weights.world, weights.memory], ['ready', rank, 2, 'gpu']);
        const ipc = (await (await fetch(`${url}/v1/weights/ipc`)).json()) as { deviceIndex: number; pciBusId: string };
        assert.deepEqual([ipc.deviceIndex, ipc.pciBusId], [rank, probe.gpus[rank]!.pciBusId]);
      }
    } finally {
      group.kill('SIGTERM');
    }
    const { code, stderr } = await group.exited;
    assert.equal(code, 0, stderr);
  } finally {
    dir.cleanup();
  }
});
