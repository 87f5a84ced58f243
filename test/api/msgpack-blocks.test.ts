/** The hand-written batch bodies decode, with a general msgpack decoder, to what msgpackr itself would have encoded; the hand-written decoder reads both. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Packr, Unpackr } from 'msgpackr';
import { decodeBlockBatch, encodeBlockBatch, encodeWriteBatch, type BlockEntry, type WriteEntry } from '../../api/msgpack-blocks.js';

/** The answer's parts joined, as a client receives them; the data parts are the blocks' own buffers. */
function joinedAnswer(blocks: BlockEntry[]): Buffer {
  const parts = encodeBlockBatch(blocks);
  assert.ok(blocks.every((b, k) => parts[2 * k + 1] === b.data), 'each block is sent from its own buffer, not copied, after one header');
  assert.equal(parts.length, Math.max(1, 2 * blocks.length));
  return Buffer.concat(parts);
}

test('a batch-read answer decodes to the same value as msgpackr\'s encoding of it', () => {
  const blocks: BlockEntry[] = [
    { index: 0, tier: 'raw', format: 'raw', lossy: false, promoted: false, data: Buffer.from([1, 2, 3]) },
    { index: 2 ** 31 - 1, tier: 'disk', format: 'quantized', lossy: true, promoted: true, data: Buffer.alloc(70_000, 7) },
    { index: 5, tier: 'quantized', format: 'raw', lossy: true, promoted: false, data: new Uint8Array(0) },
  ];
  const unpackr = new Unpackr({ useRecords: false });
  const ours = unpackr.unpack(joinedAnswer(blocks));
  const theirs = unpackr.unpack(new Packr({ useRecords: false }).pack({ blocks }));
  assert.deepEqual(ours, theirs);
  assert.equal(ours.blocks[1].data.length, 70_000);
  assert.deepEqual(unpackr.unpack(joinedAnswer([])), { blocks: [] });
});

test('the batch-read decoder reads our answer and msgpackr\'s alike, in shared memory too; its blocks are views of the body', () => {
  const blocks: BlockEntry[] = [
    { index: 0, tier: 'raw', format: 'raw', lossy: false, promoted: false, data: Buffer.from([1, 2, 3]) },
    { index: 300, tier: 'disk', format: 'quantized', lossy: true, promoted: true, data: Buffer.alloc(70_000, 7) },
    { index: 70_000, tier: 'quantized', format: 'raw', lossy: true, promoted: false, data: Buffer.alloc(200, 1) },
  ];
  const expected = blocks.map((b) => ({ ...b, data: Buffer.from(b.data) }));
  // msgpackr picks the smallest forms (fixint, uint16, bin8/16/32, fixmap); ours uint32 and bin32 throughout
  for (const encoded of [joinedAnswer(blocks), new Packr({ useRecords: false }).pack({ blocks })]) {
    const shared = Buffer.from(new SharedArrayBuffer(encoded.length));
    shared.set(encoded);
    for (const body of [encoded, shared]) {
      const got = decodeBlockBatch(body);
      assert.deepEqual(got.map((b) => ({ ...b, data: Buffer.from(b.data) })), expected);
      assert.ok(got.every((b) => b.data.buffer === body.buffer), 'each block\'s data is a view of the body');
    }
  }
  assert.deepEqual(decodeBlockBatch(joinedAnswer([])), []);
  assert.throws(() => decodeBlockBatch(joinedAnswer(blocks).subarray(0, 100)), /past the end/);
  assert.throws(() => decodeBlockBatch(Buffer.concat([joinedAnswer([]), Buffer.of(0)])), /not a batch-read answer/);
  assert.throws(() => decodeBlockBatch(new Packr({ useRecords: false }).pack({ blocks: [{ index: -1 }] })), /type 0xff/);
});

test('a batch-write body, sent as parts, decodes to the same value as msgpackr\'s encoding of it; the blocks are not copied', () => {
  const blocks: WriteEntry[] = [
    { index: 0, data: Buffer.alloc(70_000, 3) },
    { index: 2 ** 31 - 1, data: Buffer.from([9]), tokens: [1, 2, 2 ** 32 - 1] },
    { index: 7, data: new Uint8Array(0), tokens: [] },
  ];
  const unpackr = new Unpackr({ useRecords: false });
  const parts = encodeWriteBatch(blocks);
  assert.deepEqual(unpackr.unpack(Buffer.concat(parts)), unpackr.unpack(new Packr({ useRecords: false }).pack({ blocks })));
  assert.ok(parts.includes(blocks[0]!.data), 'a block\'s data is one of the parts, as given');
});
