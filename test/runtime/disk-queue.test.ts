/**
 * The disk queue's hold on the process (addon/src/io/disk_queue.cc): its results come back
 * through a thread-safe function that keeps the event loop alive while an operation is
 * unsettled, and only then. Each case runs in a child process, as only a process's exit shows it.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { tempDir } from '../helpers.js';

const native = pathToFileURL(join(fileURLToPath(new URL('.', import.meta.url)), '..', '..', 'runtime', 'native.js')).href;

/** Runs `body` as an ES module with openSlotFile imported and FILE the tier file's path. */
function child(body: string, file: string): { status: number | null; stdout: string; stderr: string; ms: number } {
  const started = Date.now();
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', `import { openSlotFile } from ${JSON.stringify(native)};\nconst FILE = ${JSON.stringify(file)};\n${body}`], {
    encoding: 'utf8', timeout: 20_000,
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr, ms: Date.now() - started };
}

test('an operation nobody awaits still settles before the process exits', () => {
  const dir = tempDir();
  try {
    // The write is held 300 ms on the queue's thread; nothing else keeps the event loop alive.
    const r = child(`
      const f = openSlotFile(FILE, 4096, 4, false, 2);
      f.injectFault('write', 0, 1, 300);
      f.write(1, 9, 1, Buffer.alloc(100, 7), 0, 100).then(() => console.log('settled'), (e) => console.log('failed', e.code));
    `, join(dir.path, 'tier.bin'));
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout.trim(), 'settled');
  } finally {
    dir.cleanup();
  }
});

test('an open, idle disk queue does not keep the process alive, and what it wrote reads back', () => {
  const dir = tempDir();
  try {
    const file = join(dir.path, 'tier.bin');
    const r = child(`
      const f = openSlotFile(FILE, 4096, 4, false, 3);
      await Promise.all([0, 1, 2, 3].map((s) => f.write(s, 10 + s, 1, Buffer.alloc(64, s), 0, 64)));
      const back = Buffer.alloc(64);
      await f.read(2, 12, 1, back, 0, 64);
      console.log(back.every((b) => b === 2) ? 'read back' : 'wrong');
      // not closed: the process must still end here
    `, file);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout.trim(), 'read back');
    assert.ok(r.ms < 10_000, `exited after ${r.ms} ms`);
  } finally {
    dir.cleanup();
  }
});

test('a disk queue is not closed under an operation in flight, and a closed one refuses new operations', () => {
  const dir = tempDir();
  try {
    const r = child(`
      const f = openSlotFile(FILE, 4096, 2, false, 1);
      f.injectFault('write', 0, 1, 200); // held on the queue's thread while close is asked
      const busy = f.write(0, 5, 1, Buffer.alloc(32, 1), 0, 32);
      try { f.close(); } catch (e) { console.log('close while busy:', e.code); }
      await busy;
      f.close();
      try { await f.read(0, 5, 1, Buffer.alloc(32), 0, 32); } catch (e) { console.log('after close:', e.code); }
    `, join(dir.path, 'tier.bin'));
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(r.stdout.trim().split('\n'), ['close while busy: BUSY', 'after close: CLOSED']);
  } finally {
    dir.cleanup();
  }
});
