/**
 * The safetensors reader: good files parse, and every malformed file fails with
 * WEIGHTS_FORMAT naming the file, the tensor where there is one, and the problem.
 */
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { SpillwayError } from '../../../runtime/errors.js';
import { inspectCheckpoint, openCheckpoint } from '../../../runtime/weights/checkpoint.js';
import { HEADER_CAP, readShardHeader } from '../../../runtime/weights/format.js';
import { writeSafetensors } from '../../../runtime/weights/writer.js';
import { tempDir } from '../../helpers.js';
import { rawFile, tensor, tinyLlama, writeCheckpoint } from './fixtures.js';

function rejects(promise: Promise<unknown>, code: string, ...patterns: RegExp[]): Promise<void> {
  return assert.rejects(promise, (err: SpillwayError) => {
    assert.equal(err.code, code, err.message);
    for (const p of patterns) assert.match(err.message, p);
    return true;
  });
}

const f32 = (begin: number, end: number, shape = [(end - begin) / 4]) => ({ dtype: 'F32', shape, data_offsets: [begin, end] });

test('a written file reads back: metadata, dtypes, shapes, offsets, an empty tensor, an 8-aligned data section', async () => {
  const dir = tempDir();
  try {
    const path = join(dir.path, 'a.safetensors');
    const tensors = [tensor('w', 'BF16', [3, 5], 1), tensor('empty', 'F32', [0, 7], 2), tensor('b', 'I64', [2], 3), tensor('flag', 'BOOL', [], 4)];
    await writeSafetensors(path, tensors, { format: 'pt' });
    const h = await readShardHeader(path);
    assert.deepEqual(h.metadata, { format: 'pt' });
    assert.equal(h.dataStart % 8, 0);
    assert.deepEqual(h.tensors.map((t) => [t.name, t.dtype, t.shape, t.end - t.begin]), [
      ['w', 'BF16', [3, 5], 30], ['empty', 'F32', [0, 7], 0], ['b', 'I64', [2], 16], ['flag', 'BOOL', [], 1],
    ]);
    const bytes = readFileSync(path);
    for (const t of h.tensors) assert.ok(bytes.subarray(h.dataStart + t.begin, h.dataStart + t.end).equals(tensors.find((x) => x.name === t.name)!.data));
  } finally {
    dir.cleanup();
  }
});

test('malformed files fail before any data is read, naming file, tensor and problem', async () => {
  const dir = tempDir();
  try {
    const at = (name: string) => join(dir.path, name);
    const data8 = Buffer.alloc(8);
    const cases: Array<[string, () => string, RegExp[]]> = [
      ['tiny', () => (writeFileSync(at('tiny'), Buffer.from([1, 2, 3])), at('tiny')), [/truncated: 3 bytes/]],
      ['truncated header', () => rawFile(at('th'), '{"a":1}', Buffer.alloc(0), 500n), [/truncated header: header length 500 but only 7 bytes/]],
      ['huge header length', () => rawFile(at('hh'), '{}', Buffer.alloc(0), BigInt(HEADER_CAP) + 1n), [/exceeds the 100000000-byte cap/]],
      ['bad JSON', () => rawFile(at('bj'), '{"a": [1, 2', data8), [/not valid JSON/]],
      ['not an object', () => rawFile(at('na'), '[1]', data8), [/does not start with "\{"/]],
      ['invalid UTF-8', () => rawFile(at('u8'), Buffer.from([0x7b, 0x22, 0xff, 0x22, 0x3a, 0x31, 0x7d]), data8), [/header is not valid UTF-8/]],
      ['unknown dtype', () => rawFile(at('ud'), { w: { dtype: 'F128', shape: [1], data_offsets: [0, 8] } }, data8), [/tensor "w"/, /unknown dtype "F128"/]],
      ['sub-byte dtype', () => rawFile(at('sb'), { w: { dtype: 'F4', shape: [16], data_offsets: [0, 8] } }, data8), [/tensor "w"/, /sub-byte dtype F4/]],
      ['shape/size mismatch', () => rawFile(at('sm'), { w: f32(0, 8, [3]) }, data8), [/tensor "w"/, /\[3\] of F32 is 12 bytes but data_offsets \[0, 8\] hold 8/]],
      ['bad shape', () => rawFile(at('bs'), { w: { dtype: 'F32', shape: [-2], data_offsets: [0, 8] } }, data8), [/tensor "w"/, /shape \[-2\]/]],
      ['offsets backwards', () => rawFile(at('ob'), { w: { dtype: 'F32', shape: [0], data_offsets: [8, 0] } }, data8), [/tensor "w"/, /end before they begin/]],
      ['out of range', () => rawFile(at('or'), { a: f32(0, 8), w: f32(8, 16) }, data8), [/tensor "w"/, /run past the end of the data section \(8 bytes\)/]],
      ['truncated data', () => {
        rawFile(at('td'), { a: f32(0, 8), w: f32(8, 16) }, Buffer.alloc(16));
        truncateSync(at('td'), readFileSync(at('td')).length - 4);
        return at('td');
      }, [/tensor "w"/, /run past the end/]],
      ['overlap', () => rawFile(at('ov'), { a: f32(0, 8), w: f32(4, 12) }, Buffer.alloc(12)), [/tensor "w"/, /overlap tensor "a" \[0, 8\]/]],
      ['hole', () => rawFile(at('ho'), { a: f32(0, 4), w: f32(8, 12) }, Buffer.alloc(12)), [/tensor "w"/, /hole of 4 bytes at data offset 4/]],
      ['trailing bytes', () => rawFile(at('tb'), { a: f32(0, 4) }, data8), [/4 trailing bytes belong to no tensor/]],
      ['duplicate key', () => rawFile(at('dk'), '{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', Buffer.alloc(4)), [/tensor "w"/, /appears twice/]],
      ['bad metadata', () => rawFile(at('bm'), { __metadata__: { n: 1 }, a: f32(0, 4) }, Buffer.alloc(4)), [/__metadata__ must map strings to strings/]],
      ['entry not an object', () => rawFile(at('eo'), { w: 3 }, Buffer.alloc(0)), [/tensor "w"/, /not an object/]],
    ];
    for (const [label, make, patterns] of cases) {
      const path = make();
      await rejects(readShardHeader(path), 'WEIGHTS_FORMAT', new RegExp(`^${path.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: `), ...patterns).catch((err) => {
        throw new Error(`${label}: ${(err as Error).message}`);
      });
    }
    await rejects(readShardHeader(at('absent')), 'WEIGHTS_FORMAT', /absent: file not found/);
  } finally {
    dir.cleanup();
  }
});

test('a directory, an index and a file list open the same checkpoint', async () => {
  const dir = tempDir();
  try {
    const tensors = tinyLlama();
    await writeCheckpoint(dir.path, tensors);
    const viaDir = await openCheckpoint(dir.path);
    const viaIndex = await openCheckpoint(join(dir.path, 'model.safetensors.index.json'));
    const files = viaDir.files.map((f) => f.path);
    const viaList = await openCheckpoint(files);
    for (const cp of [viaDir, viaIndex, viaList]) {
      assert.equal(cp.tensors.length, tensors.length);
      assert.equal(cp.totalBytes, tensors.reduce((n, t) => n + t.data.length, 0));
      assert.deepEqual(cp.warnings, []);
    }
    assert.equal(viaDir.files.length, 3);
    const q = viaDir.byName.get('model.layers.1.self_attn.q_proj.weight')!;
    assert.ok(readFileSync(q.file.path).subarray(q.fileOffset, q.fileOffset + q.bytes).equals(tensors.find((t) => t.name === q.name)!.data));
  } finally {
    dir.cleanup();
  }
});

test('checkpoint problems: duplicate names across shards, an index naming a missing file or the wrong file, unlisted tensors', async () => {
  const dir = tempDir();
  try {
    const mk = (name: string) => {
      mkdirSync(join(dir.path, name));
      return join(dir.path, name);
    };
    const dup = mk('dup');
    await writeSafetensors(join(dup, 'a.safetensors'), [tensor('x', 'F32', [2], 1)]);
    await writeSafetensors(join(dup, 'b.safetensors'), [tensor('x', 'F32', [2], 2)]);
    await rejects(openCheckpoint(dup), 'WEIGHTS_FORMAT', /b\.safetensors: tensor "x": also in .*a\.safetensors/);

    const missing = await writeCheckpoint(mk('missing'), tinyLlama());
    const index = JSON.parse(readFileSync(join(missing, 'model.safetensors.index.json'), 'utf8'));
    index.weight_map['model.norm.weight'] = 'model-00009-of-00009.safetensors';
    writeFileSync(join(missing, 'model.safetensors.index.json'), JSON.stringify(index));
    const { problems } = await inspectCheckpoint(missing);
    assert.ok(problems.some((p) => /index\.json: tensor "model\.norm\.weight": maps to model-00009-of-00009\.safetensors, which does not exist/.test(p.message)), problems.map((p) => p.message).join('\n'));
    assert.ok(problems.some((p) => /tensor "model\.norm\.weight": the index maps it to model-00009/.test(p.message)));
    await rejects(openCheckpoint(missing), 'WEIGHTS_FORMAT', /does not exist|maps it to/, /more problems/);

    const wrong = await writeCheckpoint(mk('wrong'), tinyLlama());
    const idx = JSON.parse(readFileSync(join(wrong, 'model.safetensors.index.json'), 'utf8'));
    idx.weight_map['ghost.weight'] = 'model-00001-of-00003.safetensors';
    delete idx.weight_map['lm_head.weight'];
    idx.metadata.total_size = 1;
    writeFileSync(join(wrong, 'model.safetensors.index.json'), JSON.stringify(idx));
    const w = await inspectCheckpoint(wrong);
    const text = w.problems.map((p) => p.message).join('\n');
    assert.match(text, /tensor "ghost\.weight": maps to model-00001-of-00003\.safetensors, whose header has no such tensor/);
    assert.match(text, /model-00003-of-00003\.safetensors: tensor "lm_head\.weight": not in the index/);
    assert.match(w.checkpoint.warnings.join('\n'), /total_size is 1/);

    const escape = mk('escape');
    writeFileSync(join(escape, 'model.safetensors.index.json'), JSON.stringify({ weight_map: { x: '../dup/a.safetensors' } }));
    await rejects(openCheckpoint(escape), 'WEIGHTS_FORMAT', /tensor "x": weight_map names "\.\.\/dup\/a\.safetensors", outside/);
    await rejects(openCheckpoint(mk('empty')), 'WEIGHTS_FORMAT', /empty: holds no \.safetensors files/);
    await rejects(openCheckpoint(join(dir.path, 'nowhere')), 'WEIGHTS_FORMAT', /nowhere: not found/);
  } finally {
    dir.cleanup();
  }
});
