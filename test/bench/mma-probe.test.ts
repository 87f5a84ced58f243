/**
 * The tensor-core rotation probe (bench/quant/mma_probe.cu, docs/QUANTIZATION.md): its tile
 * code, run lane by lane on CPU threads that emulate the warp's shuffles and int8 MMAs, gives
 * the same codes, norms and dequantized values as its C++ model: 16-bit and 8-bit operands,
 * the three ways of finding a code, a warp coding 1, 2 or 4 tiles at a time, centroids looked up
 * in shared memory or in registers; and the polynomial's codes are the thresholds' but for a few.
 * Format 3's kernels run the same tile code: as they call it, in fp32, fp16 and bf16, it writes
 * the C++ reference's records and values byte for byte.
 * This keeps the probe's fragment orders right between the runs that only a GPU can make.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import { quantBench } from '../helpers.js';

test('the tensor-core probe agrees with its model on an emulated warp', (t) => {
  const probe = quantBench(t, 'mma_probe');
  if (!probe) return;
  const run = spawnSync(probe, ['--emulate', '256'], { encoding: 'utf8' });
  assert.equal(run.status, 0, run.stdout + run.stderr);
  // every kernel's count of vectors differing: nine quantize ways, nine dequantize ones
  const line = /256 vectors: quantize differs from the model on (.*); Gaussian/.exec(run.stdout)?.[1] ?? '';
  const differing = [...line.matchAll(/(\d+) \(/g)].map((m) => Number(m[1]));
  assert.deepEqual(differing, Array(18).fill(0), run.stdout);
  const errors = /relative squared error ([\d.]+) \(16-bit operands\), ([\d.]+) \(8-bit\); coded by the polynomial ([\d.]+) \(16-bit\), ([\d.]+) \(8-bit\), (\d+) of (\d+) codes/.exec(run.stdout);
  assert.ok(errors, run.stdout);
  const [threshold16, threshold8, polynomial16, polynomial8, recoded, codes] = errors.slice(1).map(Number) as [number, number, number, number, number, number];
  for (const [what, error] of [['16-bit operands', threshold16], ['8-bit operands', threshold8], ['16-bit, polynomial', polynomial16], ['8-bit, polynomial', polynomial8]] as const)
    assert.ok(error > 0.008 && error < 0.0105, `${what}: Gaussian vectors round-trip near the 4-bit codebook's error (0.0093), got ${error}`);
  assert.ok(recoded < codes / 1000, `the polynomial codes all but a few coordinates as the thresholds do: ${recoded} of ${codes} differ`);
  // format 3's kernels' tile code against the C++ reference's blocks, in each dtype
  const format = /records differing from the C\+\+ reference's in (\d+) \(fp32\), (\d+) \(fp16\), (\d+) \(bf16\) of (\d+) groups; dequantized vectors differing in (\d+) \(fp32\), (\d+) \(fp16\), (\d+) \(bf16\)/.exec(run.stdout);
  assert.ok(format, run.stdout);
  const [records32, records16, recordsBf16, groups, values32, values16, valuesBf16] = format.slice(1).map(Number);
  assert.ok(groups! > 0, run.stdout);
  assert.deepEqual([records32, records16, recordsBf16, values32, values16, valuesBf16], [0, 0, 0, 0, 0, 0], run.stdout);
});
