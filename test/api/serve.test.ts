/** `npm start`'s command on the embedded default configuration, as a user runs it. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { expectedBackend } from '../helpers.js';
import { startServe } from './serve-helpers.js';

test('spillway serve starts on the embedded default, honours PORT and answers status', { timeout: 60_000 }, async () => {
  const served = await startServe();
  try {
    const status = (await (await served.until('/v1/status')).json()) as { backend: { name: string }; capacity: { tiers: Array<{ name: string; slots: number }> } };
    assert.equal(status.backend.name, await expectedBackend());
    assert.deepEqual(status.capacity.tiers.map((t) => t.name), ['raw', 'quantized', 'disk']);
    assert.ok(status.capacity.tiers.every((t) => t.slots > 0));
    assert.deepEqual(await (await served.until('/v1/ready')).json(), { ready: true }, 'ready at once without weights');
  } finally {
    await served.server.stop();
  }
});
