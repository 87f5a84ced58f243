/**
 * The restore bench's parts that need neither torch nor a GPU: its msgpack decoder, HTTP client,
 * plans, tables, and its concurrent clients as processes and as threads against a stub server
 * (`python3 bench/restore/restore.py --self-test`). Skips, saying why, where python3 is not installed.
 */
import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { projectRoot } from '../../runtime/config.js';

const run = promisify(execFile);
const python = spawnSync('python3', ['--version']).status === 0;

test('the restore bench passes its self-test', { skip: python ? false : 'python3 is not installed; the restore bench is not tested', timeout: 60_000 }, async () => {
  const { stdout } = await run('python3', [join(projectRoot, 'bench', 'restore', 'restore.py'), '--self-test'], {
    env: { ...process.env, PYTHONDONTWRITEBYTECODE: '1' },
  });
  assert.match(stdout, /self-test: all passed/);
  assert.doesNotMatch(stdout, /^FAIL/m);
});
