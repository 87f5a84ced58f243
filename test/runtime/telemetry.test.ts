/** Telemetry: what the store's registry reports beyond the counters the other suites check. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { tempDir, tinyStore, writeSequence } from '../helpers.js';

test('the addon\'s tasks are timed by phase: queued, run on a worker thread, returned to the JS thread', async () => {
  const dir = tempDir();
  // two raw slots and two quantized ones: writing eight blocks quantizes and spills on the addon's threads
  const store = await tinyStore(dir.path, { raw: 2, quantized: 2, disk: 24 });
  try {
    await writeSequence(store, 's', 8, 40);
    const text = await store.telemetry.registry.getSingleMetricAsString('spillway_native_task_seconds');
    const count = (phase: string) => Number(new RegExp(`^spillway_native_task_seconds_count\\{phase="${phase}"\\} (\\d+)`, 'm').exec(text)?.[1] ?? 0);
    for (const phase of ['queued', 'run', 'returned']) assert.ok(count(phase) > 0, `no ${phase} timings in\n${text}`);
    assert.equal(count('queued'), count('run'));
    assert.equal(count('run'), count('returned'));
    // taken once: a second scrape adds only what ran since
    const again = await store.telemetry.registry.getSingleMetricAsString('spillway_native_task_seconds');
    assert.equal(Number(/^spillway_native_task_seconds_count\{phase="run"\} (\d+)/m.exec(again)?.[1]), count('run'));
  } finally {
    await store.close();
    dir.cleanup();
  }
});
