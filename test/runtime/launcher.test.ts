/**
 * `spillway serve --gpus`: the GPU list, each rank's port, device, weights rank and disk
 * file, and the group's processes (host-backend runtimes, so that it runs without a GPU):
 * both serve, a runtime's exit is reported and stops the other, signals reach both.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { loadConfig, parseConfig } from '../../runtime/config.js';
import { SpillwayError } from '../../runtime/errors.js';
import { parseGpuList, planRanks, rankArgs } from '../../runtime/launcher.js';
import { tempDir } from '../helpers.js';
import { startServerGroup } from '../../api/process.js';

test('--gpus takes distinct device indices separated by commas', () => {
  assert.deepEqual(parseGpuList('0,1'), [0, 1]);
  assert.deepEqual(parseGpuList('3, 1'), [3, 1]);
  assert.deepEqual(parseGpuList('2'), [2]);
  for (const bad of ['', '0,', 'a', '-1', '0;1', '1.5']) assert.throws(() => parseGpuList(bad), /--gpus wants device indices/, bad);
  assert.throws(() => parseGpuList('0,1,0'), /names device 0 twice/);
});

test('rank r runs on the r-th GPU listed, on port server.port + r, with weights rank r of N and a disk file of its own', () => {
  const config = loadConfig({ sets: ['server.port=9000', 'tiers.disk.path=/data/kv/tier2.slots'] }, {});
  const plans = planRanks(config, [2, 0]);
  assert.deepEqual(plans.map((p) => [p.rank, p.device, p.port, p.diskPath]), [
    [0, 2, 9000, '/data/kv/tier2.rank-0.slots'],
    [1, 0, 9001, '/data/kv/tier2.rank-1.slots'],
  ]);
  assert.deepEqual(plans[1]!.sets, ['gpu.device=0', 'weights.rank=1', 'weights.world=2', 'tiers.disk.path=/data/kv/tier2.rank-1.slots']);
  // The rank's settings come after the user's, so that they win.
  assert.deepEqual(rankArgs({ file: 'my.json', sets: ['weights.source=/w'] }, plans[1]!), [
    'serve', '--config', 'my.json', '--set', 'weights.source=/w',
    '--set', 'gpu.device=0', '--set', 'weights.rank=1', '--set', 'weights.world=2', '--set', 'tiers.disk.path=/data/kv/tier2.rank-1.slots',
  ]);
  assert.deepEqual(planRanks(parseConfig({ server: { port: 0 } }), [0, 1]).map((p) => p.port), [0, 0], 'port 0: each runtime picks its own');
});

test('a configured weights.world other than the GPU count, or ports past 65535, are refused naming the field', () => {
  assert.throws(() => planRanks(parseConfig({ weights: { world: 4 } }), [0, 1]), (err: SpillwayError) =>
    err.code === 'INVALID_CONFIG' && /^config weights\.world: 4, but --gpus names 2 GPUs/.test(err.message));
  assert.equal(planRanks(parseConfig({ weights: { world: 2 } }), [0, 1]).length, 2, 'the same world is fine');
  assert.throws(() => planRanks(parseConfig({ server: { port: 65535 } }), [0, 1]), /config server\.port: 65535 leaves no room for 2 consecutive ports/);
});

/** Host-backend runtimes on small tiers, each on a port of its own choosing. */
const hostGroup = (dir: string) => startServerGroup('0,1', ['--set', 'backend=host', '--set', 'server.port=0', '--set', `tiers.disk.path=${join(dir, 't2.slots')}`,
  '--set', 'tiers.raw.bytes=16MiB', '--set', 'tiers.quantized.bytes=16MiB', '--set', 'tiers.disk.bytes=64MiB']);

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

test('serve --gpus 0,1: two runtimes with their ranks; SIGTERM stops both and the launcher exits 0', { timeout: 120_000 }, async () => {
  const dir = tempDir();
  try {
    const group = await hostGroup(dir.path);
    try {
      for (const [rank, url] of group.urls.entries()) {
        const status = (await (await fetch(`${url}/v1/status`)).json()) as {
          config: { gpu: { device: number }; weights: { rank: number; world: number }; tiers: { disk: { path: string } } };
          backend: { disk: { path: string } };
        };
        assert.equal(status.config.gpu.device, rank);
        assert.deepEqual([status.config.weights.rank, status.config.weights.world], [rank, 2]);
        assert.equal(status.backend.disk.path, join(dir.path, `t2.rank-${rank}.slots`));
      }
    } finally {
      group.kill('SIGTERM');
    }
    const { code, stderr } = await group.exited;
    assert.equal(code, 0, stderr);
    assert.match(stderr, /rank 0 of 2 \(GPU 0\) exited with code 0/);
    assert.match(stderr, /rank 1 of 2 \(GPU 1\) exited with code 0/);
    assert.ok(group.pids.every((pid) => !alive(pid)), 'no runtime outlives the launcher');
  } finally {
    dir.cleanup();
  }
});

test('serve --gpus 0,1: a runtime that dies is reported, the other is stopped, the launcher exits 1', { timeout: 120_000 }, async () => {
  const dir = tempDir();
  try {
    const group = await hostGroup(dir.path);
    process.kill(group.pids[1]!, 'SIGKILL');
    const { code, stderr } = await group.exited;
    assert.equal(code, 1, stderr);
    assert.match(stderr, /rank 1 of 2 \(GPU 1\) exited on SIGKILL; stopping the others/);
    assert.match(stderr, /rank 0 of 2 \(GPU 0\) exited with code 0/);
    assert.ok(!alive(group.pids[0]!));
  } finally {
    dir.cleanup();
  }
});
