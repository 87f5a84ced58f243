/** The backend choice against what the probe found: gpu.device within the visible GPUs. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseConfig } from '../../runtime/config.js';
import { SpillwayError } from '../../runtime/errors.js';
import type { ProbeResult } from '../../runtime/native.js';
import { chooseBackend } from '../../runtime/open.js';

/** What a probe of `device` answers on a machine with `count` visible GPUs. */
function probeOf(count: number, device: number): ProbeResult {
  const gpus = Array.from({ length: count }, (_, index) => ({
    index, name: `GPU model ${index}`, pciBusId: `0000:0${index}:00.0`, computeCapability: '9.0', totalBytes: 80e9,
  }));
  const present = device < count;
  return {
    cudaBuilt: true,
    gpu: {
      present, error: present ? '' : `device ${device} is not visible: ${count} visible`, count, device,
      name: gpus[device]?.name ?? '', pciBusId: gpus[device]?.pciBusId ?? '', computeCapability: '9.0',
      totalBytes: 80e9, freeBytes: 79e9, driverVersion: 13000, runtimeVersion: 13000,
    },
    gpus,
    cufile: { status: 'not-found', detail: 'not here', nvfsVersion: '' },
  };
}

test('a gpu.device past the visible GPUs is refused naming the field and the count, never a fallback', () => {
  for (const backend of ['auto', 'gpu'] as const) {
    const config = parseConfig({ backend, gpu: { device: 2 } });
    assert.throws(() => chooseBackend(config, probeOf(2, 2)), (err: SpillwayError) => {
      assert.equal(err.code, 'INVALID_CONFIG');
      assert.match(err.message, /^config gpu\.device: 2 is not a visible GPU: 2 visible, indices 0 to 1/);
      assert.equal(err.details.field, 'gpu.device');
      return true;
    }, backend);
  }
});

test('the host backend, asked for, needs no GPU whatever gpu.device says; no GPU at all leaves auto on the host', () => {
  assert.equal(chooseBackend(parseConfig({ backend: 'host', gpu: { device: 7 } }), probeOf(2, 7)).name, 'host');
  assert.equal(chooseBackend(parseConfig({ gpu: { device: 1 } }), probeOf(0, 1)).name, 'host');
});

test('a visible gpu.device names the GPU, its index and PCI bus id in the reason', (t) => {
  const choice = chooseBackend(parseConfig({ gpu: { device: 1 } }), probeOf(2, 1));
  if (choice.name === 'host') {
    t.skip(`the addon has no GPU backend here: ${choice.reason}`);
    return;
  }
  assert.match(choice.reason, /^GPU 1 GPU model 1 \(sm_90, PCI 0000:01:00\.0\) found/);
});
