/**
 * The store's concurrency suites (faults with their races, and the model-based property
 * test) run again and again, each run in a fresh process with a fresh property seed: a
 * race that fails one run in thirty shows up here, not once in a while in CI.
 * `npm test` runs SPILLWAY_STRESS_RUNS (default 3) of them; `npm run stress` runs 200.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomInt } from 'node:crypto';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const SUITES = ['faults.test.js', 'property.test.js', 'reserve.test.js'].map((f) => join(here, f));
const RUNS = Number(process.env.SPILLWAY_STRESS_RUNS ?? 3);

test(`the store's concurrency suites pass ${RUNS} runs in a row with fresh seeds`, { timeout: RUNS * 120_000 }, () => {
  for (let run = 1; run <= RUNS; run++) {
    const seed = randomInt(-(2 ** 31), 2 ** 31 - 1);
    // Without NODE_TEST_CONTEXT: under it, a nested runner reports to its parent instead of running.
    const { NODE_TEST_CONTEXT: _, ...env } = process.env;
    const child = spawnSync(process.execPath, ['--test', '--test-reporter=tap', ...SUITES], {
      env: { ...env, SPILLWAY_PROPERTY_SEED: String(seed) },
      encoding: 'utf8',
      timeout: 110_000,
    });
    const output = `${child.stdout}${child.stderr}`;
    const passed = Number(/^# pass (\d+)$/m.exec(output)?.[1] ?? 0);
    assert.equal(child.status, 0, `run ${run} of ${RUNS} failed (SPILLWAY_PROPERTY_SEED=${seed} reproduces the property run):\n${output.slice(-6000)}`);
    assert.ok(passed >= 10, `run ${run} of ${RUNS} ran ${passed} tests, not the suites:\n${output.slice(-2000)}`);
    if (RUNS > 3) process.stdout.write(`# stress run ${run}/${RUNS} passed (seed ${seed})\n`);
  }
});
