/**
 * Format 4's halves kinds (kernels/tq_halves_tile.cuh, run by bench/quant/halves_probe.cu,
 * docs/QUANTIZATION.md): the tile code the GPU's kernels run, lane by lane on CPU threads that
 * emulate the warp's shuffles and int8 MMAs (signed and unsigned A), writes the C++ reference's
 * records byte for byte at 3.5 and 2.5 bits and decodes them to its values, on groups with every
 * key equal, zero tokens among NaN and infinite values, and one-hot tokens among them; and the
 * reference codes Gaussian groups about as well as format 2's.
 * This keeps the kernels' orders right between the runs that only a GPU can make.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import { quantBench } from '../helpers.js';

test("format 4's halves tile code agrees with the C++ reference on an emulated warp", (t) => {
  const probe = quantBench(t, 'halves_probe');
  if (!probe) return;
  const run = spawnSync(probe, ['--emulate', '48'], { encoding: 'utf8' });
  assert.equal(run.status, 0, run.stdout + run.stderr);
  for (const rate of ['3.5', '2.5']) {
    const line = new RegExp(`${rate} bits: 48 groups, records differing from the reference in (\\d+), dequantized values in (\\d+) of \\d+; Gaussian groups' relative squared error ([\\d.]+) \\(format 2's reference ([\\d.]+)\\)`).exec(run.stdout);
    assert.ok(line, run.stdout);
    const [records, values, error, format2] = line.slice(1).map(Number) as [number, number, number, number];
    assert.deepEqual([records, values], [0, 0], run.stdout);
    assert.ok(error > 0 && error < format2 * 1.05, `${rate} bits: within 5 % of format 2's error on the same groups, got ${error} against ${format2}`);
  }
});
