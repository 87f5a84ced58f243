/** `npm start`'s command on the embedded default configuration, as a user runs it. */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { test } from 'node:test';
import { projectRoot } from '../runtime/config.js';
import { expectedBackend } from './helpers.js';

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

test('spillway serve starts on the embedded default, honours PORT and answers status', { timeout: 60_000 }, async () => {
  const port = await freePort();
  const child = spawn(process.execPath, [join(projectRoot, 'dist', 'runtime', 'cli.js'), 'serve'], {
    env: { ...process.env, PORT: String(port), HOST: '127.0.0.1' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout.on('data', (d) => (output += d));
  child.stderr.on('data', (d) => (output += d));
  try {
    let status: { backend: { name: string }; capacity: { tiers: Array<{ name: string; slots: number }> } } | undefined;
    for (let i = 0; i < 100 && !status; i++) {
      await new Promise((r) => setTimeout(r, 200));
      if (child.exitCode !== null) assert.fail(`server exited with ${child.exitCode}: ${output}`);
      try {
        const res = await fetch(`http://127.0.0.1:${port}/v1/status`);
        if (res.ok) status = (await res.json()) as typeof status;
      } catch {
        // not listening yet
      }
    }
    assert.ok(status, `server did not answer: ${output}`);
    assert.equal(status.backend.name, await expectedBackend());
    assert.deepEqual(status.capacity.tiers.map((t) => t.name), ['raw', 'quantized', 'disk']);
    assert.ok(status.capacity.tiers.every((t) => t.slots > 0));
  } finally {
    child.kill('SIGTERM');
    await new Promise((r) => child.once('exit', r));
  }
});
