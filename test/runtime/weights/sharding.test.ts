/**
 * Tensor-parallel sharding: a pre-split checkpoint loads, rank by rank, exactly the slices
 * the documented rules give (checked element by element, independently of the split code);
 * direct slices of an unsplit checkpoint equal the pre-split ones; refusals are clear.
 */
import assert from 'node:assert/strict';
import { copyFileSync, existsSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { parseConfig } from '../../../runtime/config.js';
import { SpillwayError } from '../../../runtime/errors.js';
import { openCheckpoint } from '../../../runtime/weights/checkpoint.js';
import { executePlan, planWeights, type LoadedWeights } from '../../../runtime/weights/load.js';
import { rankDirName, SPLIT_MANIFEST, type SplitKind } from '../../../runtime/weights/sharding.js';
import { HostSink } from '../../../runtime/weights/sink.js';
import { splitCheckpoint } from '../../../runtime/weights/split.js';
import { writeSafetensors } from '../../../runtime/weights/writer.js';
import { tempDir } from '../../helpers.js';
import { expectedSlice, tensor, tinyLlama, writeCheckpoint, type FixtureTensor } from './fixtures.js';

/** The defaults as docs/WEIGHTS.md states them, written out independently of LLAMA_RULES. */
function documentedKind(name: string): SplitKind {
  if (/\.(q|k|v|gate|up)_proj\.|embed_tokens|lm_head/.test(name)) return 'column';
  if (/\.(o|down)_proj\./.test(name)) return 'row';
  return 'replicated';
}

async function load(source: string, rank: number, world: number, extra: Record<string, unknown> = {}): Promise<{ loaded: LoadedWeights; sink: HostSink }> {
  const options = parseConfig({ weights: { source, rank, world, ...extra } }).weights;
  const sink = new HostSink();
  const loaded = await executePlan(await planWeights(options), sink, { concurrency: 4 });
  return { loaded, sink };
}

function assertRank(tensors: FixtureTensor[], got: { loaded: LoadedWeights; sink: HostSink }, rank: number, world: number, kindOf: (name: string) => SplitKind) {
  assert.equal(got.loaded.tensors.length, tensors.length);
  for (const t of tensors) {
    const planned = got.loaded.byName.get(t.name);
    assert.ok(planned, `${t.name} missing from rank ${rank}`);
    const want = expectedSlice(t, kindOf(t.name), rank, world);
    assert.ok(got.sink.bytes(planned).equals(want), `${t.name} (${kindOf(t.name)}, ${t.dtype} ${JSON.stringify(t.shape)}) differs on rank ${rank} of ${world}`);
    assert.equal(planned.shape.reduce((a, b) => a * b, 1) * (t.dtype === 'F32' ? 4 : 2), want.length);
  }
}

test('split, then load each rank: every tensor equals its column, row or replicated slice byte for byte', async () => {
  const dir = tempDir();
  try {
    const tensors = tinyLlama();
    const source = await writeCheckpoint(join(dir.path, 'full'), tensors);
    for (const world of [1, 2, 4]) {
      const out = join(dir.path, `split${world}`);
      const summary = await splitCheckpoint({ input: source, out, world, chunkBytes: 1000 });
      assert.deepEqual(summary.tensors, { column: 14, row: 4, replicated: 7 });
      assert.ok(existsSync(join(out, SPLIT_MANIFEST)));
      for (let rank = 0; rank < world; rank++) {
        const rankDir = join(out, rankDirName(rank, world));
        assert.deepEqual(readdirSync(rankDir).sort(), [
          'model-00001-of-00003.safetensors', 'model-00002-of-00003.safetensors', 'model-00003-of-00003.safetensors', 'model.safetensors.index.json',
        ]);
        const cp = await openCheckpoint(rankDir);
        assert.equal(cp.files[0]!.metadata['spillway.rank'], String(rank));
        assert.equal(cp.totalBytes, summary.rankBytes);
        const got = await load(out, rank, world);
        assert.equal(got.loaded.plan.layout, 'presplit');
        assertRank(tensors, got, rank, world, documentedKind);
      }
    }
  } finally {
    dir.cleanup();
  }
});

test('a dimension that does not divide by the world is refused, naming file, tensor, dim and world, before anything is written', async () => {
  const dir = tempDir();
  try {
    const file = join(dir.path, 'm.safetensors');
    await writeSafetensors(file, [tensor('model.layers.0.self_attn.q_proj.weight', 'BF16', [30, 8], 1), tensor('model.layers.0.mlp.down_proj.weight', 'F32', [8, 6], 2)]);
    const out = join(dir.path, 'out');
    await assert.rejects(splitCheckpoint({ input: file, out, world: 4 }), (err: SpillwayError) => {
      assert.equal(err.code, 'WEIGHTS_SHARDING');
      assert.match(err.message, /m\.safetensors: tensor "model\.layers\.0\.self_attn\.q_proj\.weight": column-parallel split of dim 0 \(30\) of shape \[30,8\] does not divide by world 4 \(and 1 more problems\)/);
      assert.match(String((err.details.problems as string[])[1]), /down_proj\.weight": row-parallel split of dim 1 \(6\)/);
      return true;
    });
    assert.ok(!existsSync(out));
    await assert.rejects(load(file, 1, 4), /WEIGHTS_SHARDING|does not divide by world 4/);
  } finally {
    dir.cleanup();
  }
});

test('direct slices of an unsplit checkpoint equal the pre-split ones; a strided slice is refused with advice', async () => {
  const dir = tempDir();
  try {
    const tensors = tinyLlama();
    const source = await writeCheckpoint(join(dir.path, 'full'), tensors, 2);
    const rules = join(dir.path, 'rules.json');
    // Row-parallel matrices have strided slices; make them replicated so every slice is direct.
    writeFileSync(rules, JSON.stringify([{ pattern: '*.o_proj.*', split: 'replicated' }, { pattern: '*.down_proj.*', split: 'replicated' }]));
    const kindOf = (name: string) => (/\.(o|down)_proj\./.test(name) ? 'replicated' : documentedKind(name));
    const world = 4;
    const out = join(dir.path, 'split');
    await splitCheckpoint({ input: source, out, world, rules });
    for (let rank = 0; rank < world; rank++) {
      const pre = await load(out, rank, world);
      const direct = await load(source, rank, world, { rules });
      assert.equal(direct.loaded.plan.layout, 'slice');
      assertRank(tensors, direct, rank, world, kindOf);
      for (const t of pre.loaded.tensors) {
        const d = direct.loaded.byName.get(t.name)!;
        assert.deepEqual(d.shape, t.shape);
        assert.ok(direct.sink.bytes(d).equals(pre.sink.bytes(t)), `${t.name} differs between direct and pre-split on rank ${rank}`);
      }
      assert.equal(direct.loaded.plan.tensorBytes, pre.loaded.plan.tensorBytes);
    }
    await assert.rejects(load(source, 0, world), (err: SpillwayError) => {
      assert.equal(err.code, 'WEIGHTS_SHARDING');
      assert.match(err.message, /tensor "model\.layers\.0\.self_attn\.o_proj\.weight": row-parallel slice of \[32,32\] \(dim 1\) is 32 strided pieces, not one range; pre-split the checkpoint with "spillway weights split"/);
      return true;
    });
  } finally {
    dir.cleanup();
  }
});

test('a split checkpoint refuses the wrong world, a tampered rank file, a non-empty output and bad rules', async () => {
  const dir = tempDir();
  try {
    const source = await writeCheckpoint(join(dir.path, 'full'), tinyLlama());
    const out = join(dir.path, 'split');
    await splitCheckpoint({ input: source, out, world: 2 });
    await assert.rejects(load(out, 0, 4), /split for world 2, but the configured world is 4/);
    await assert.rejects(splitCheckpoint({ input: source, out, world: 2 }), /output directory .* is not empty/);
    await assert.rejects(splitCheckpoint({ input: out, out: join(dir.path, 'again'), world: 2 }), /split for tensor parallelism/);

    copyFileSync(join(source, 'model-00001-of-00003.safetensors'), join(out, rankDirName(1, 2), 'model-00001-of-00003.safetensors'));
    await load(out, 0, 2);
    await assert.rejects(load(out, 1, 2), (err: SpillwayError) => {
      assert.equal(err.code, 'WEIGHTS_FORMAT');
      assert.match(err.message, /rank-00001-of-00002\/model-00001-of-00003\.safetensors: tensor "model\.embed_tokens\.weight": is BF16 \[64,32\]; the manifest's column split of BF16 \[64,32\] gives \[32,32\] for world 2/);
      return true;
    });

    const bad = join(dir.path, 'bad-rules.json');
    writeFileSync(bad, JSON.stringify([{ pattern: '*', split: 'diagonal' }]));
    await assert.rejects(splitCheckpoint({ input: source, out: join(dir.path, 'x'), world: 2, rules: bad }), (err: SpillwayError) => {
      assert.equal(err.code, 'INVALID_CONFIG');
      assert.match(err.message, /bad-rules\.json: \[0\.split\]/);
      return true;
    });
  } finally {
    dir.cleanup();
  }
});
