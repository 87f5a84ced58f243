/**
 * The device weights sink where there is a GPU (skipped elsewhere, saying so): tensors
 * read with cuFileRead (or the POSIX fallback, forced) land in HBM byte for byte as in the
 * files.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseConfig } from '../../../runtime/config.js';
import { addon } from '../../../runtime/native.js';
import { DeviceSink } from '../../../runtime/weights/device-sink.js';
import { executePlan, planWeights } from '../../../runtime/weights/load.js';
import { tempDir } from '../../helpers.js';
import { tinyLlama, writeCheckpoint } from './fixtures.js';

const probe = await addon.probe();
const noGpu = probe.gpu.present && addon.DeviceArena ? false : `no GPU here: ${probe.gpu.error || 'addon built without CUDA'}`;

for (const io of ['auto', 'posix'] as const) {
  test(`GPU: weights read into HBM equal the files' bytes (io ${io})`, { skip: noGpu }, async () => {
    const dir = tempDir();
    try {
      const tensors = tinyLlama();
      const source = await writeCheckpoint(dir.path, tensors, 3);
      const plan = await planWeights(parseConfig({ weights: { source, requestBytes: 8192 } }).weights);
      const sink = new DeviceSink({ io });
      try {
        const loaded = await executePlan(plan, sink, { concurrency: 8 });
        assert.equal(loaded.tensors.length, tensors.length);
        assert.match(sink.describe().io, io === 'posix' ? /posix/ : /cufile|posix/);
        for (const t of plan.tensors) {
          const expected = tensors.find((x) => x.name === t.name)!;
          assert.ok((await sink.bytes(t)).equals(expected.data), `${t.name} differs in HBM`);
        }
      } finally {
        sink.free();
      }
    } finally {
      dir.cleanup();
    }
  });
}
