/**
 * Weights at startup: readiness false until they are loaded, progress and the final rate
 * through the API, the tensor table, the memory budget in the capacity report, a failed
 * load reported, and `spillway serve` loading a configured checkpoint before it is ready.
 */
import assert from 'node:assert/strict';
import { truncateSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { buildServer } from '../../../api/server.js';
import { addon } from '../../../runtime/native.js';
import { openStore } from '../../../runtime/open.js';
import { doctor, formatDoctor } from '../../../runtime/doctor.js';
import type { SpillwayError } from '../../../runtime/errors.js';
import { assertBudgetFits, memoryBudget, ModelWeights } from '../../../runtime/weights/model.js';
import { tempDir, tinyConfig } from '../../helpers.js';
import { startServe } from '../../api/serve-helpers.js';
import { tinyLlama, writeCheckpoint } from './fixtures.js';

async function withWeights(dir: string, source: string) {
  const config = tinyConfig(dir, { raw: 2, quantized: 2, disk: 4 }, { weights: { source } });
  const store = await openStore(config);
  const backend = store.describeBackend().name;
  const weights = (await ModelWeights.plan(config, backend, await addon.probe()))!;
  const app = await buildServer(store, { weights });
  return { app, weights, backend };
}

test('not ready while the weights load; then ready, with progress, final rate, tensor table and memory budget', async () => {
  const dir = tempDir();
  try {
    const tensors = tinyLlama();
    const source = await writeCheckpoint(dir.path, tensors, 3);
    const { app, weights, backend } = await withWeights(dir.path, source);
    try {
      let res = await app.inject({ url: '/v1/ready' });
      assert.equal(res.statusCode, 503);
      assert.deepEqual(res.json(), { ready: false, reason: 'weights loading' });
      const before = res = await app.inject({ url: '/v1/weights' });
      assert.equal(before.json().state, 'loading');
      assert.equal(before.json().progress.bytesDone, 0);
      assert.equal((await app.inject({ url: '/v1/weights/ipc' })).json().error.code, backend === 'gpu' ? 'NOT_READY' : 'NO_DEVICE_MEMORY');

      await weights.load();
      assert.deepEqual((await app.inject({ url: '/v1/ready' })).json(), { ready: true });
      const after = (await app.inject({ url: '/v1/weights' })).json();
      assert.equal(after.state, 'ready');
      assert.equal(after.progress.bytesDone, after.progress.bytesTotal);
      assert.ok(after.result.gbps > 0 && after.result.seconds > 0, JSON.stringify(after.result));
      assert.equal(after.tensors, tensors.length);
      assert.equal(after.io, backend === 'gpu' ? after.io : 'fs');

      const table = (await app.inject({ url: '/v1/weights/tensors' })).json().tensors as Array<{ name: string; shape: number[]; offset: number; bytes: number }>;
      assert.deepEqual(table.map((t) => t.name).sort(), tensors.map((t) => t.name).sort());
      for (const t of tensors) {
        const row = table.find((r) => r.name === t.name)!;
        assert.deepEqual(row.shape, t.shape);
        assert.equal(row.bytes, t.data.length);
        assert.ok(row.offset + row.bytes <= weights.bytes);
      }

      const memory = (await app.inject({ url: '/v1/status' })).json().capacity.memory;
      assert.equal(memory.weightsBytes, weights.bytes);
      assert.equal(memory.totalBytes, memory.tierBytes + weights.bytes);

      const ipc = await app.inject({ url: '/v1/weights/ipc' });
      if (backend === 'gpu') {
        assert.equal(ipc.statusCode, 200);
        assert.equal(Buffer.from(ipc.json().handle, 'base64').length, 64);
      } else {
        assert.equal(ipc.statusCode, 409);
        assert.match(ipc.json().error.message, /host memory/);
      }
    } finally {
      await app.close();
    }
  } finally {
    dir.cleanup();
  }
});

test('a load that fails is reported by readiness and /v1/weights, naming the file', async () => {
  const dir = tempDir();
  try {
    const source = await writeCheckpoint(dir.path, tinyLlama(), 3, false);
    const { app, weights } = await withWeights(dir.path, source);
    try {
      const victim = weights.plan.files[1]!.path;
      truncateSync(victim, 64); // after planning: the headers were fine, the data is gone
      await assert.rejects(weights.load(), (err: Error) => err.message.includes(victim));
      assert.deepEqual((await app.inject({ url: '/v1/ready' })).json(), { ready: false, reason: 'weights load failed' });
      const w = (await app.inject({ url: '/v1/weights' })).json();
      assert.equal(w.state, 'failed');
      assert.ok(w.error.message.includes(victim), w.error.message);
    } finally {
      await app.close();
    }
  } finally {
    dir.cleanup();
  }
});

test('without weights: state none, an empty table, and the ipc route says none are configured', async () => {
  const dir = tempDir();
  try {
    const app = await buildServer(await openStore(tinyConfig(dir.path, { raw: 2, quantized: 2, disk: 4 })));
    try {
      assert.deepEqual((await app.inject({ url: '/v1/weights' })).json(), { state: 'none' });
      assert.deepEqual((await app.inject({ url: '/v1/weights/tensors' })).json(), { tensors: [] });
      const ipc = (await app.inject({ url: '/v1/weights/ipc' })).json();
      assert.equal(ipc.error.code, 'NOT_FOUND');
      assert.equal(ipc.error.field, 'weights.source');
      assert.equal((await app.inject({ url: '/v1/status' })).json().capacity.memory.weightsBytes, 0);
    } finally {
      await app.close();
    }
  } finally {
    dir.cleanup();
  }
});

test('spillway serve loads configured weights, logging progress, and is ready once they are in', { timeout: 60_000 }, async () => {
  const dir = tempDir();
  try {
    const source = await writeCheckpoint(dir.path, tinyLlama(), 3);
    const served = await startServe(['--set', `weights.source=${source}`, '--set', `tiers.disk.path=${join(dir.path, 'tier2.slots')}`]);
    try {
      await served.until('/v1/ready');
      const w = (await (await fetch(`${served.url}/v1/weights`)).json()) as { state: string; result: { gbps: number } };
      assert.equal(w.state, 'ready');
      assert.ok(w.result.gbps > 0);
      assert.match(served.server.output(), /"msg":"weights [\d.]+ (B|KiB|MiB) of [\d.]+ (B|KiB|MiB)"/, 'progress logged when not on a terminal');
      assert.match(served.server.output(), /weights loaded; ready/);
    } finally {
      await served.server.stop();
    }
  } finally {
    dir.cleanup();
  }
});

test('spillway serve refuses weights that are malformed before it listens, naming the file', { timeout: 60_000 }, async () => {
  const dir = tempDir();
  try {
    const source = await writeCheckpoint(dir.path, tinyLlama(), 2, false);
    truncateSync(join(source, 'model-00001-of-00002.safetensors'), 4);
    const start = startServe(['--set', `weights.source=${source}`, '--set', `tiers.disk.path=${join(dir.path, 'tier2.slots')}`]);
    await assert.rejects(start, (err: Error) => {
      assert.match(err.message, /exited \(code 1,/);
      assert.match(err.message, /model-00001-of-00002\.safetensors/);
      return true;
    });
  } finally {
    dir.cleanup();
  }
});

test('the memory budget: doctor counts the rank\'s weights; a GPU budget that does not fit is refused naming the tiers', async () => {
  const dir = tempDir();
  try {
    const tensors = tinyLlama();
    const source = await writeCheckpoint(dir.path, tensors, 3);
    const config = tinyConfig(dir.path, { raw: 2, quantized: 2, disk: 4 }, { weights: { source } });
    const report = await doctor(config);
    assert.equal(report.memory?.weightsBytes, tensors.reduce((n, t) => n + t.data.length, 0));
    assert.match(formatDoctor(report), /memory: +tiers 0-1 .* \+ weights .* GiB/);

    const probe = await addon.probe();
    const tight = { ...probe, gpu: { ...probe.gpu, name: 'test GPU', freeBytes: config.tiers.raw.bytes } };
    const budget = memoryBudget(config, 'gpu', tight, 1 << 20);
    assert.equal(budget.fits, false);
    assert.throws(() => assertBudgetFits(budget), (err: SpillwayError) => err.code === 'INVALID_CONFIG' && err.details.field === 'tiers' && /does not fit/.test(err.message));
    assert.equal(memoryBudget(config, 'host', probe, 1 << 20).fits, null, 'host memory is not budgeted against a device');
  } finally {
    dir.cleanup();
  }
});
