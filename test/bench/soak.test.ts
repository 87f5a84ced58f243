/**
 * The soak in CI: two minutes of the small preset on this machine's backend, every fault
 * on, through the real server process, the requests sent from a client thread; and the pieces its verdicts rest on (the content
 * check and the growth test), shown to catch what they must.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { drawCharts } from '../../bench/soak/charts.js';
import { soakBlock } from '../../bench/soak/content.js';
import { soakOptions, summarize } from '../../bench/soak/options.js';
import { runSoak } from '../../bench/soak/soak.js';
import { judgeGrowth } from '../../bench/soak/stats.js';
import { distance } from '../../bench/soak/verifier.js';
import { FOUR_BIT_BOUND } from '../../bench/block-content.js';
import { tempDir } from '../helpers.js';

const MiB = 2 ** 20;

test('the content check passes the right block and fails a wrong, misplaced or cut one', () => {
  const bytes = 64 * 1024;
  const block = soakBlock(42, bytes);
  assert.equal(distance(42, bytes, block), 0);
  assert.ok(distance(43, bytes, block) > 1, 'another block is far outside the quantized bound');
  assert.equal(distance(42, bytes, block.subarray(0, bytes / 2)), Infinity);
  const flipped = Buffer.from(block);
  flipped[1000] = flipped[1000]! ^ 0x01;
  assert.ok(distance(42, bytes, flipped) > 0, 'one flipped bit is not bit-exact');
  assert.ok(distance(42, bytes, flipped) < FOUR_BIT_BOUND, 'but it would pass as a quantized read: raw reads must be bit-exact');
});

test('the growth test passes a level series with noise and fails a steady leak', () => {
  const level = Array.from({ length: 120 }, (_, i): [number, number] => [i, 900 * MiB + ((i * 7919) % 13) * MiB]);
  const rule = { relative: 0.1, absolute: 32 * MiB };
  assert.ok(judgeGrowth(level, rule).ok);
  // 4 MiB a second: about 240 MiB across the judged minute, well past 10% of the mean.
  const leak = level.map(([t, v]): [number, number] => [t, v + t * 4 * MiB]);
  const verdict = judgeGrowth(leak, rule);
  assert.equal(verdict.ok, false);
  assert.ok(verdict.growth! > verdict.threshold!);
  assert.equal(judgeGrowth(level.slice(0, 10), rule).ok, false, 'too few samples is no verdict of health');
});

test('a two-minute soak: no wrong read, no leak, every fault handled, the server alive', { timeout: 300_000 }, async (t) => {
  const dir = tempDir('spillway-soak-');
  try {
    // The load's requests on a client thread, so that CI runs that path (and its restarts) too.
    const options = soakOptions('small', { dir: dir.path, durationS: Number(process.env.SOAK_SECONDS ?? 120), clientThreads: 1, log: (line) => t.diagnostic(line) });
    const report = await runSoak(options);
    for (const line of summarize(report).split('\n')) t.diagnostic(line);
    assert.deepEqual(report.failures, [], summarize(report));
    assert.ok(report.passed);
    assert.equal(report.totals.mismatches, 0);
    assert.ok(report.totals.readsChecked > 1000, 'reads were checked');
    assert.ok(report.totals.readsLossy > 0 && report.totals.readsExact > 0, 'raw and quantized reads were both checked');
    assert.ok(report.totals.moves.demotions > 0 && report.totals.moves.promotions > 0, 'blocks moved down and up');
    assert.deepEqual(report.faults.map((f) => [f.kind, f.ok]), [['kill', true], ['disk-full', true], ['corrupt', true]]);
    assert.ok(report.leak.rss.ok && report.leak.fds.ok);
    // Once the first wave has written its prompts, latency is also kept apart from the burst before.
    assert.ok(report.steadyFromS !== null && report.steadyFromS < report.durationS, 'the first wave finished its prompts');
    assert.ok(report.steadyLatencyMs.read!.count > 0 && report.steadyLatencyMs.read!.count < report.latencyMs.read!.count);
    assert.ok((report.gcMs.minor?.count ?? 0) > 0, "the server's collector pauses were measured");
    assert.ok(report.harnessLoopDelayMs.max >= report.harnessLoopDelayMs.p99);
    assert.equal(report.clientThreadsLoopDelayMs.length, 1, 'the client thread says how late its loop ran');
    for (const png of drawCharts(report, join(dir.path, 'charts'))) assert.ok(existsSync(png));
  } finally {
    dir.cleanup();
  }
});
