/**
 * The loader: plan alignment and coalescing, the host sink across arena pages, progress
 * events, failures, configuration, and the CLI (split, doctor --weights).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { loadConfig, parseConfig, projectRoot } from '../../../runtime/config.js';
import { SpillwayError } from '../../../runtime/errors.js';
import { openCheckpoint } from '../../../runtime/weights/checkpoint.js';
import { executePlan, loadWeights, planWeights } from '../../../runtime/weights/load.js';
import { ALIGN, weightsBytes, type ReadRequest } from '../../../runtime/weights/plan.js';
import { terminalProgress, type Progress } from '../../../runtime/weights/progress.js';
import { createSink, HostSink, type WeightsSink } from '../../../runtime/weights/sink.js';
import { tempDir } from '../../helpers.js';
import { tensor, tinyLlama, writeCheckpoint } from './fixtures.js';
import { writeSafetensors } from '../../../runtime/weights/writer.js';

const options = (source: string, extra: Record<string, unknown> = {}) => parseConfig({ weights: { source, ...extra } }).weights;
const cli = join(projectRoot, 'dist', 'runtime', 'cli.js');

test('the plan reads whole files in aligned requests, interleaved across files, into an aligned arena', async () => {
  const dir = tempDir();
  try {
    const tensors = tinyLlama();
    const source = await writeCheckpoint(dir.path, tensors, 3, false);
    const plan = await planWeights(options(source, { requestBytes: ALIGN }));
    assert.equal(plan.layout, 'whole');
    for (const r of plan.requests) {
      for (const v of [r.fileOffset, r.length, r.arenaOffset]) assert.equal(v % ALIGN, 0, JSON.stringify(r));
      assert.ok(r.required > 0 && r.required <= r.length);
    }
    assert.deepEqual(plan.requests.slice(0, 3).map((r) => r.file), [0, 1, 2], 'the first reads go to different files');
    // Whole files are one segment each: requests tile each file from offset 0, and the arena.
    const sizes = plan.files.map((f) => Math.ceil(f.bytes / ALIGN) * ALIGN);
    assert.equal(plan.arenaBytes, sizes.reduce((a, b) => a + b, 0));
    assert.equal(weightsBytes(plan), plan.arenaBytes);
    assert.equal(plan.tensorBytes, tensors.reduce((n, t) => n + t.data.length, 0));
    assert.equal(plan.readBytes, plan.files.reduce((n, f) => n + f.bytes, 0));
    const big = await planWeights(options(source));
    assert.equal(big.requests.length, 3, 'one request per file when a file fits in one');
  } finally {
    dir.cleanup();
  }
});

test('a direct slice reads only its aligned window, and lands where its unaligned start says', async () => {
  const dir = tempDir();
  try {
    const file = join(dir.path, 'one.safetensors');
    const big = tensor('model.embed_tokens.weight', 'F32', [64, 1024], 7);
    await writeSafetensors(file, [tensor('model.norm.weight', 'F32', [3], 8), big]);
    const plan = await planWeights(options(file, { rank: 1, world: 4 }));
    assert.equal(plan.layout, 'slice');
    const slice = big.data.subarray(big.data.length / 4, big.data.length / 2);
    const t = plan.tensors.find((x) => x.name === big.name)!;
    assert.deepEqual(t.shape, [16, 1024]);
    assert.notEqual(t.arenaOffset % ALIGN, 0, 'the slice starts mid-page: the aligned read begins before it');
    assert.ok(plan.readBytes <= slice.length + 2 * ALIGN, `read ${plan.readBytes} bytes for a ${slice.length}-byte slice`);
    const sink = new HostSink();
    await executePlan(plan, sink, { concurrency: 2 });
    assert.ok(sink.bytes(t).equals(slice));
  } finally {
    dir.cleanup();
  }
});

test('the host sink delivers every tensor across arena pages, and progress is monotonic and ends at the total', async () => {
  const dir = tempDir();
  try {
    const tensors = tinyLlama();
    const source = await writeCheckpoint(dir.path, tensors);
    const plan = await planWeights(options(source, { requestBytes: 2 * ALIGN }));
    const pageBytes = 2 * ALIGN;
    assert.ok(plan.tensors.some((t) => Math.floor(t.arenaOffset / pageBytes) !== Math.floor((t.arenaOffset + t.bytes - 1) / pageBytes)), 'some tensor straddles two pages');
    const sink = new HostSink(pageBytes);
    const events: Progress[] = [];
    const loaded = await executePlan(plan, sink, { concurrency: 5, onProgress: (p) => events.push(p) });
    for (const t of tensors) assert.ok(sink.bytes(loaded.byName.get(t.name)!).equals(t.data), t.name);

    assert.equal(events[0]!.bytesDone, 0);
    assert.equal(events.length, plan.requests.length + 1);
    for (let i = 1; i < events.length; i++) {
      assert.ok(events[i]!.bytesDone > events[i - 1]!.bytesDone, 'bytes done only grow');
      assert.ok(events[i]!.seconds >= events[i - 1]!.seconds);
    }
    const last = events[events.length - 1]!;
    assert.equal(last.bytesDone, last.bytesTotal);
    assert.equal(last.bytesTotal, plan.readBytes);
    assert.equal(last.etaSeconds, 0);
    assert.ok(loaded.gbps > 0 && loaded.seconds > 0);
    assert.equal(loaded.bytesRead, plan.readBytes);
  } finally {
    dir.cleanup();
  }
});

test('a file that shrinks after planning fails the load with IO_ERROR naming it, and the sink is ended', async () => {
  const dir = tempDir();
  try {
    const source = await writeCheckpoint(dir.path, tinyLlama());
    const plan = await planWeights(options(source, { requestBytes: ALIGN }));
    const victim = plan.files[1]!.path;
    truncateSync(victim, 100);
    const host = new HostSink();
    let ended = 0;
    const sink: WeightsSink = { name: 'watched', begin: (p) => host.begin(p), read: (r: ReadRequest) => host.read(r), end: () => (ended++, host.end()) };
    await assert.rejects(executePlan(plan, sink, { concurrency: 4 }), (err: SpillwayError) => {
      assert.equal(err.code, 'IO_ERROR');
      assert.ok(err.message.startsWith(`${victim}: short read`), err.message);
      return true;
    });
    assert.equal(ended, 1);
    assert.throws(() => createSink('tape'), /unknown weights sink "tape" \(known: host, gpu\)/);
  } finally {
    dir.cleanup();
  }
});

test('configuration: loadWeights reads the configured rank; paths resolve beside the config file; bad values name their field', async () => {
  const dir = tempDir();
  try {
    const tensors = tinyLlama();
    await writeCheckpoint(join(dir.path, 'ckpt'), tensors);
    const file = join(dir.path, 'spillway.json');
    writeFileSync(file, JSON.stringify({ weights: { source: 'ckpt', requestBytes: '8KiB' } }));
    const config = loadConfig({ file }, {});
    assert.equal(config.weights.source, join(dir.path, 'ckpt'));
    const sink = new HostSink();
    const loaded = await loadWeights(config, sink);
    assert.equal(loaded.tensors.length, tensors.length);
    assert.ok(sink.bytes(loaded.byName.get('lm_head.weight')!).equals(tensors.at(-1)!.data));

    const bad: Array<[unknown, RegExp]> = [
      [{ rank: 2, world: 2 }, /config weights\.rank: must be below weights\.world/],
      [{ requestBytes: 1000 }, /config weights\.requestBytes: must be a multiple of 4 KiB/],
      [{ world: 0 }, /config weights\.world/],
    ];
    for (const [weights, message] of bad) assert.throws(() => parseConfig({ weights }), message);
    await assert.rejects(loadWeights(parseConfig({}), sink), /weights\.source: no weights are configured/);
  } finally {
    dir.cleanup();
  }
});

test('the terminal progress bar draws only on a terminal and ends its line at the total', () => {
  const written: string[] = [];
  const tty = { isTTY: true, write: (s: string) => written.push(s) } as unknown as NodeJS.WriteStream;
  assert.equal(terminalProgress('x', { isTTY: false } as NodeJS.WriteStream), undefined);
  const bar = terminalProgress('weights', tty)!;
  bar({ bytesDone: 0, bytesTotal: 2 ** 30, seconds: 0, gbps: 0, etaSeconds: null });
  bar({ bytesDone: 2 ** 29, bytesTotal: 2 ** 30, seconds: 0.05, gbps: 10.7, etaSeconds: 0.05 });
  bar({ bytesDone: 2 ** 30, bytesTotal: 2 ** 30, seconds: 0.1, gbps: 10.7, etaSeconds: 0 });
  assert.equal(written.length, 2, 'redraws are throttled, the final one always drawn');
  assert.match(written[0]!, /weights \[-{30}\] 0 B \/ 1\.00 GiB {2}0\.00 GB\/s {2}ETA \?/);
  assert.match(written[1]!, /\[#{30}\] 1\.00 GiB \/ 1\.00 GiB {2}10\.70 GB\/s {2}ETA 0s.*\n$/);
});

test('CLI: weights split, then doctor --weights reports the split; a broken checkpoint lists its problems and exits 1', async () => {
  const dir = tempDir();
  try {
    const source = await writeCheckpoint(join(dir.path, 'ckpt'), tinyLlama());
    const out = join(dir.path, 'split');
    const run = (...args: string[]) => spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8' });
    const disk = ['--set', `tiers.disk.path=${join(dir.path, 't2.slots')}`];

    const split = run('weights', 'split', '--in', source, '--out', out, '--world', '2', '--json');
    assert.equal(split.status, 0, split.stderr);
    const summary = JSON.parse(split.stdout);
    assert.equal(summary.world, 2);
    assert.deepEqual(summary.tensors, { column: 14, row: 4, replicated: 7 });

    const doctor = run('doctor', '--weights', out, '--json', ...disk);
    assert.equal(doctor.status, 0, doctor.stderr);
    const report = JSON.parse(doctor.stdout).weights;
    assert.equal(report.layout, 'split');
    assert.equal(report.world, 2);
    assert.deepEqual(report.rankBytes, [summary.rankBytes, summary.rankBytes]);
    assert.equal(report.tensors, 25);
    assert.equal(report.totalBytes, (await openCheckpoint(source)).totalBytes);

    const plain = run('doctor', '--weights', source, '--set', 'weights.world=4', ...disk);
    assert.equal(plain.status, 0, plain.stderr);
    assert.match(plain.stdout, /weights: +.*ckpt \(one checkpoint\): 3 files, 25 tensors, /);
    assert.match(plain.stdout, /per rank: +world 4: .* each/);
    assert.match(plain.stdout, /direct slice: 4 tensors have strided rank slices/);
    assert.match(plain.stdout, /problems: +none/);

    const shard = join(source, 'model-00002-of-00003.safetensors');
    const bytes = readFileSync(shard);
    writeFileSync(shard, bytes.subarray(0, bytes.length - 10));
    const broken = run('doctor', '--weights', source, '--set', 'weights.world=3', ...disk);
    assert.equal(broken.status, 1);
    assert.match(broken.stdout, /problems: +\d+/);
    assert.match(broken.stdout, /- .*model-00002-of-00003\.safetensors: tensor ".*": data_offsets .* run past the end/);
    assert.match(broken.stdout, /- .*does not divide by world 3/);
    assert.match(broken.stdout, /per rank: +world 3: unknown/);

    const usage = run('weights', 'split', '--in', source);
    assert.equal(usage.status, 2);
    assert.match(usage.stderr, /usage: spillway weights split/);
  } finally {
    dir.cleanup();
  }
});
