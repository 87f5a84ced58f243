/** doctor and the backend choice, on whatever machine the tests run on. */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { test } from 'node:test';
import { projectRoot } from '../../runtime/config.js';
import { addon } from '../../runtime/native.js';
import { tempDir } from '../helpers.js';

test('doctor prints GPU, CUDA, cuFile, disk, O_DIRECT and the backend with its reason', () => {
  const dir = tempDir();
  try {
    const cli = join(projectRoot, 'dist', 'runtime', 'cli.js');
    const r = spawnSync(process.execPath, [cli, 'doctor', '--set', `tiers.disk.path=${join(dir.path, 't2.slots')}`], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    for (const label of ['GPU:', 'CUDA:', 'cuFile:', 'disk tier:', 'O_DIRECT:', 'backend:']) assert.match(r.stdout, new RegExp(label));
    const json = spawnSync(process.execPath, [cli, 'doctor', '--json', '--set', `tiers.disk.path=${join(dir.path, 't2.slots')}`], { encoding: 'utf8' });
    const report = JSON.parse(json.stdout);
    assert.ok(['not-found', 'driver-error', 'compat', 'gds'].includes(report.probe.cufile.status));
    assert.equal(typeof report.disk.directIo.works, 'boolean');
    assert.ok(report.backend.reason.length > 0);
  } finally {
    dir.cleanup();
  }
});

test('without a GPU the addon still loads and says why the host backend runs', async (t) => {
  const probe = await addon.probe();
  if (probe.gpu.present) {
    t.skip(`a GPU is present (${probe.gpu.name}): this checks the no-GPU path`);
    return;
  }
  assert.ok(probe.gpu.error.length > 0, 'the probe must say why there is no GPU');
  assert.notEqual(probe.cufile.status, 'gds');
});
