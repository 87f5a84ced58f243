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

test('outer layers take their own bit widths: validated naming the field, sized by the rule, reported in bits per value', () => {
  const rule = { keyBits: 3, valueBits: 2.5, outerLayers: { first: 2, last: 2, keyBits: 4, valueBits: 4 } };
  const bad: Array<[unknown, RegExp]> = [
    [{ quantization: { outerLayers: { first: 2, last: 2, keyBits: 4.5, valueBits: 4 } } }, /quantization\.outerLayers\.keyBits/],
    [{ quantization: { outerLayers: { first: 0, last: 0, keyBits: 4, valueBits: 4 } } }, /quantization\.outerLayers\.first: name at least one/],
    [{ model: { layers: 3 }, quantization: rule }, /quantization\.outerLayers\.last: .*model\.layers/],
    [{ quantization: { outerLayers: { first: 1, last: 1, keyBits: 4 } } }, /quantization\.outerLayers\.valueBits/],
    [{ quantization: { outerLayers: { first: 1, last: 1, keyBits: 4, valueBits: 4, middle: 3 } } }, /quantization\.outerLayers/],
  ];
  for (const [input, message] of bad) {
    assert.throws(() => parseConfig(input), (err: SpillwayError) => err.code === 'INVALID_CONFIG' && message.test(err.message), JSON.stringify(input));
  }
  const uniform = computeLayout(parseConfig({ quantization: { keyBits: 3, valueBits: 2.5 } }));
  const ruled = computeLayout(parseConfig({ quantization: rule }));
  const four = computeLayout(parseConfig({}));
  // 4 of 32 layers at 4 bits, 28 at 3 / 2.5: between the uniform sizes, and by the records' sizes exactly
  assert.ok(uniform.quantizedBlockBytes < ruled.quantizedBlockBytes && ruled.quantizedBlockBytes < four.quantizedBlockBytes);
  const perLayer = (l: typeof four) => (l.quantizedBlockBytes - 64) / 32;
  assert.equal(ruled.quantizedBlockBytes, 64 + 4 * perLayer(four) + 28 * perLayer(uniform));
  assert.equal(ruled.tiers[1]!.slots, Math.floor(ruled.tiers[1]!.bytes / ruled.quantizedBlockBytes));
  assert.ok(ruled.tiers[1]!.slots > four.tiers[1]!.slots);
  // bits per value stored: 8 x 16 tokens x 128 values a record; norms (and the fractional mask) on top of the codes
  const q = ruled.quantization;
  assert.deepEqual(q.classes.map((c) => [c.layers, c.keyBits, c.valueBits]), [['0-1', 4, 4], ['2-29', 3, 2.5], ['30-31', 4, 4]]);
  assert.equal(q.classes[0]!.keyBitsStored, 4.25);
  assert.equal(q.classes[1]!.keyBitsStored, 3.25);
  assert.equal(q.classes[1]!.valueBitsStored, 2.5 + 0.5 + 16 * 8 / 2048);
  assert.ok(Math.abs(q.bitsPerValue - (ruled.quantizedBlockBytes * 8) / (32 * 2 * 8 * 16 * 128)) < 1e-12);
  assert.deepEqual(four.quantization.classes.map((c) => c.layers), ['0-31']);
});
