/** The configuration schema: defaults, units, CLI flags, environment, errors naming fields. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { loadConfig, parseConfig } from '../../runtime/config.js';
import { SpillwayError } from '../../runtime/errors.js';
import { computeLayout } from '../../runtime/layout.js';

test('the embedded default is a Llama-3-8B-like geometry on a three-tier ladder', () => {
  const c = parseConfig({});
  assert.deepEqual(c.model, { layers: 32, kvHeads: 8, headDim: 128, dtype: 'bf16', tokensPerBlock: 16 });
  const layout = computeLayout(c);
  assert.equal(layout.rawBlockBytes, 32 * 2 * 8 * 16 * 128 * 2);
  assert.ok(layout.compressionRatio > 3.5, `4-bit blocks are ${layout.compressionRatio}x smaller`);
  assert.ok(layout.tiers.every((t) => t.slots > 0));
});

test('byte sizes accept units, and bad values name their field', () => {
  assert.equal(parseConfig({ tiers: { raw: { bytes: '64MiB' } } }).tiers.raw.bytes, 64 * 2 ** 20);
  assert.equal(parseConfig({ tiers: { disk: { bytes: '1.5 GB' } } }).tiers.disk.bytes, 1.5e9);
  const bad: Array<[unknown, RegExp]> = [
    [{ tiers: { raw: { bytes: 'lots' } } }, /tiers\.raw\.bytes/],
    [{ model: { headDim: 100 } }, /model\.headDim: must be a power of two/],
    [{ quantization: { keyBits: 2.25 } }, /quantization\.keyBits/],
    [{ model: { dtype: 'int8' } }, /model\.dtype/],
    [{ surprise: 1 }, /\(root\)|surprise/],
  ];
  for (const [input, message] of bad) {
    assert.throws(() => parseConfig(input), (err: SpillwayError) => err.code === 'INVALID_CONFIG' && message.test(err.message), JSON.stringify(input));
  }
});

test('CLI flags and the environment feed the same schema', () => {
  const c = loadConfig({ sets: ['model.layers=4', 'tiers.disk.path=/tmp/x.slots', 'eviction.policy=fifo'] }, { HOST: '0.0.0.0', PORT: '9000' });
  assert.equal(c.model.layers, 4);
  assert.equal(c.eviction.policy, 'fifo');
  assert.equal(c.server.host, '0.0.0.0');
  assert.equal(c.server.port, 9000);
  assert.throws(() => loadConfig({ sets: ['model.layers=zero'] }), /model\.layers/);
  assert.throws(() => loadConfig({}, { PORT: '99999' }), /server\.port/);
});

test('request body limits: the JSON limit, and a body byte budget of at least the largest body, four of it by default', () => {
  const c = parseConfig({});
  assert.equal(c.server.maxJsonBytes, 2 * 2 ** 20);
  assert.equal(c.server.maxBodyBytesInFlight, 4 * c.server.maxBatchBytes);
  assert.equal(parseConfig({ server: { maxBatchBytes: '1KiB' } }).server.maxBodyBytesInFlight, 4 * 2 * 2 ** 20, 'four JSON bodies when they are the largest');
  assert.equal(parseConfig({ server: { maxBodyBytesInFlight: '1GiB' } }).server.maxBodyBytesInFlight, 2 ** 30);
  for (const server of [{ maxBodyBytesInFlight: '63MiB' }, { maxBatchBytes: '1MiB', maxBodyBytesInFlight: '1MiB' }]) {
    assert.throws(() => parseConfig({ server }), (err: SpillwayError) => err.code === 'INVALID_CONFIG' && /^config server\.maxBodyBytesInFlight: must be at least the largest request body/.test(err.message), JSON.stringify(server));
  }
  assert.throws(() => parseConfig({ server: { maxJsonBytes: 0 } }), /server\.maxJsonBytes: must be positive/);
});

test('gpu.device: 0 by default, a visible device index, refused naming the field otherwise', () => {
  assert.equal(parseConfig({}).gpu.device, 0);
  assert.equal(loadConfig({ sets: ['gpu.device=3'] }, {}).gpu.device, 3);
  for (const device of [-1, 1.5, 'one']) {
    assert.throws(() => parseConfig({ gpu: { device } }), (err: SpillwayError) => err.code === 'INVALID_CONFIG' && /^config gpu\.device: /.test(err.message), String(device));
  }
});
