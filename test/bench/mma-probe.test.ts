/**
 * The tensor-core rotation probe (bench/quant/mma_probe.cu, docs/QUANTIZATION.md): its tile
 * code, run lane by lane on CPU threads that emulate the warp's shuffles and int8 MMAs, gives
 * the same codes, norms and dequantized values as its C++ model: 16-bit and 8-bit operands,
 * both ways of finding a code, a warp coding 1, 2 or 4 tiles at a time.
 * This keeps the probe's fragment orders right between the runs that only a GPU can make.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { test } from 'node:test';
import { projectRoot } from '../../runtime/config.js';

test('the tensor-core probe agrees with its model on an emulated warp', (t) => {
  const build = spawnSync('sh', [join(projectRoot, 'bench/quant/build.sh'), 'mma_probe'], { encoding: 'utf8' });
  assert.equal(build.status, 0, build.stderr);
  if (build.stderr.includes('nvcc not found')) {
    t.skip('no nvcc here: the probe is CUDA C++ and needs it to build');
    return;
  }
  const run = spawnSync(join(projectRoot, 'build/bench/mma_probe'), ['--emulate', '256'], { encoding: 'utf8' });
  assert.equal(run.status, 0, run.stdout + run.stderr);
  // every kernel's count of vectors differing: six quantize ways, nine dequantize ones
  const line = /256 vectors: quantize differs from the model on (.*); Gaussian/.exec(run.stdout)?.[1] ?? '';
  const differing = [...line.matchAll(/(\d+) \(/g)].map((m) => Number(m[1]));
  assert.deepEqual(differing, Array(15).fill(0), run.stdout);
  const errors = /relative squared error ([\d.]+) \(16-bit operands\), ([\d.]+) \(8-bit\)/.exec(run.stdout);
  for (const [width, error] of [['16-bit', Number(errors?.[1])], ['8-bit', Number(errors?.[2])]] as const)
    assert.ok(error > 0.008 && error < 0.0105, `${width} operands: Gaussian vectors round-trip near the 4-bit codebook's error (0.0093), got ${error}`);
});
