/**
 * The disk tier's queue depth (tiers.disk.inFlight): a disk past its best depth reads slower, not
 * faster, so the store runs at most that many disk operations at once and queues the rest, however
 * many reads and spills its requests ask for together.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import type { Backend } from '../../../runtime/backends/backend.js';
import { assertReadBack, tempDir, tinyStore, writeSequence } from '../../helpers.js';

test('no more disk operations run at once than tiers.disk.inFlight, and every block reads back', async () => {
  for (const inFlight of [1, 3]) {
    const dir = tempDir();
    const store = await tinyStore(dir.path, { raw: 2, quantized: 2, disk: 64 }, { backend: 'host', tiers: { disk: { inFlight } } });
    try {
      // Every disk operation the store runs, held a little so that those asked for together overlap.
      const backend = (store as unknown as { backend: Backend }).backend as unknown as Record<string, (...args: unknown[]) => Promise<unknown>>;
      let running = 0;
      let most = 0;
      for (const name of ['spill', 'fill', 'readDisk']) {
        const original = backend[name]!.bind(backend);
        backend[name] = async (...args: unknown[]) => {
          most = Math.max(most, ++running);
          try {
            await delay(2);
            return await original(...args);
          } finally {
            running--;
          }
        };
      }
      const data = await writeSequence(store, 's', 24, 1); // all but the last few on disk only
      const back = await Promise.all(data.map((_, i) => store.read('s', i)));
      back.forEach((r, i) => assertReadBack(data[i]!, r, `block ${i}`));
      assert.equal(most, inFlight, `disk operations at once with tiers.disk.inFlight ${inFlight}`);
      store.checkInvariants();
    } finally {
      await store.close();
      dir.cleanup();
    }
  }
});
