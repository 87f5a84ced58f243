/**
 * The disk tier's queue depth (tiers.disk.inFlight): a disk past its best depth reads slower, not
 * faster, so the backend's disk queue runs at most that many disk operations at once and queues
 * the rest, however many reads and spills the store's requests ask for together. The queue
 * reports when each operation ran, which is what these tests count.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Backend } from '../../../runtime/backends/backend.js';
import { assertReadBack, tempDir, tinyStore, writeSequence } from '../../helpers.js';

/** The most operations running at one time, from the queue's (direction, start, end) triples. */
function mostAtOnce(runs: Float64Array): number {
  const edges: Array<[number, number]> = [];
  for (let i = 0; i + 2 < runs.length; i += 3) edges.push([runs[i + 1]!, 1], [runs[i + 2]!, -1]);
  edges.sort((a, b) => a[0] - b[0] || a[1] - b[1]); // an end before a start at the same time
  let now = 0;
  let most = 0;
  for (const [, step] of edges) most = Math.max(most, (now += step));
  return most;
}

test('no more disk operations run at once than tiers.disk.inFlight, and every block reads back', async () => {
  for (const inFlight of [1, 3]) {
    const dir = tempDir();
    const store = await tinyStore(dir.path, { raw: 2, quantized: 2, disk: 64 }, { backend: 'host', tiers: { disk: { inFlight } } });
    try {
      const backend = (store as unknown as { backend: Backend }).backend;
      const data = await writeSequence(store, 's', 24, 1); // all but the last few on disk only
      // Every read held a little, so that those asked for together overlap.
      backend.injectDiskFault('read', 0, 1000, 3);
      const back = await Promise.all(data.map((_, i) => store.read('s', i)));
      backend.injectDiskFault('read', 0, 0);
      back.forEach((r, i) => assertReadBack(data[i]!, r, `block ${i}`));
      const runs = backend.takeDiskRuns();
      assert.ok(runs.length / 3 >= 20, `${runs.length / 3} disk operations ran`);
      assert.equal(mostAtOnce(runs), inFlight, `disk operations at once with tiers.disk.inFlight ${inFlight}`);
      store.checkInvariants();
    } finally {
      await store.close();
      dir.cleanup();
    }
  }
});

test('the disk queue reports each operation once, by direction, and they reach spillway_disk_op_seconds', async () => {
  const dir = tempDir();
  const store = await tinyStore(dir.path, { raw: 2, quantized: 2, disk: 64 }, { backend: 'host', tiers: { disk: { inFlight: 2 } } });
  try {
    const backend = (store as unknown as { backend: Backend }).backend;
    const data = await writeSequence(store, 's', 12, 1);
    await Promise.all(data.map((_, i) => store.read('s', i)));
    const metrics = await store.telemetry.registry.getSingleMetricAsString('spillway_disk_op_seconds');
    const count = (direction: string) => Number(new RegExp(`spillway_disk_op_seconds_count\\{direction="${direction}"\\} (\\d+)`).exec(metrics)?.[1] ?? 0);
    const bytes = await store.telemetry.diskBytes.get();
    const moved = (direction: string) => (bytes.values.find((v) => v.labels.direction === direction)?.value ?? 0) / store.layout.tiers.at(-1)!.slotBytes;
    assert.ok(count('write') > 0 && count('read') > 0, metrics);
    assert.equal(count('write'), moved('write'), 'one run a write');
    assert.equal(count('read'), moved('read'), 'one run a read');
    assert.equal(backend.takeDiskRuns().length, 0, 'the scrape took them');
  } finally {
    await store.close();
    dir.cleanup();
  }
});
