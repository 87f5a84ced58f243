/** The msgpack header scan that bounds what a body can expand to before msgpackr decodes it. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { pack, unpack, Unpackr } from 'msgpackr';
import { checkMsgpackBounds } from '../../api/msgpack-bounds.js';
import { SpillwayError } from '../../runtime/errors.js';
import { rng } from '../helpers.js';

const LOOSE = { maxValues: 1e6, maxDepth: 64 };
const bytes = (...parts: Array<number | number[] | Buffer>) => Buffer.concat(parts.map((p) => (Buffer.isBuffer(p) ? p : Buffer.from(typeof p === 'number' ? [p] : p))));
const be = (n: number, width: 2 | 4) => {
  const b = Buffer.alloc(width);
  if (width === 2) b.writeUInt16BE(n);
  else b.writeUInt32BE(n);
  return b;
};

function refused(body: Buffer, bounds: { maxValues: number; maxDepth: number }, message: RegExp): void {
  assert.throws(() => checkMsgpackBounds(body, bounds), (err: SpillwayError) => {
    assert.equal(err.code, 'INVALID_ARGUMENT');
    assert.equal(err.details.field, 'body');
    assert.match(err.message, message);
    return true;
  }, body.subarray(0, 16).toString('hex'));
}

/** Every msgpack type but ext as one top-level value, with the values it counts (containers count themselves). */
const EVERY_TYPE: Array<[name: string, body: Buffer, values: number]> = [
  ['positive fixint', bytes(0x05), 1], ['negative fixint', bytes(0xe0), 1], ['nil', bytes(0xc0), 1], ['false', bytes(0xc2), 1], ['true', bytes(0xc3), 1],
  ['uint 8', bytes(0xcc, 0xff), 1], ['uint 16', bytes(0xcd, be(65535, 2)), 1], ['uint 32', bytes(0xce, be(1, 4)), 1], ['uint 64', bytes(0xcf, Buffer.alloc(8)), 1],
  ['int 8', bytes(0xd0, 0x80), 1], ['int 16', bytes(0xd1, be(1, 2)), 1], ['int 32', bytes(0xd2, be(1, 4)), 1], ['int 64', bytes(0xd3, Buffer.alloc(8)), 1],
  ['float 32', bytes(0xca, Buffer.alloc(4)), 1], ['float 64', bytes(0xcb, Buffer.alloc(8)), 1],
  ['fixstr', bytes(0xa3, Buffer.from('abc')), 1], ['str 8', bytes(0xd9, 2, Buffer.from('hi')), 1], ['str 16', bytes(0xda, be(3, 2), Buffer.from('abc')), 1],
  ['str 32', bytes(0xdb, be(1, 4), Buffer.from('a')), 1],
  ['bin 8', bytes(0xc4, 2, [1, 2]), 1], ['bin 16', bytes(0xc5, be(300, 2), Buffer.alloc(300)), 1], ['bin 32', bytes(0xc6, be(3, 4), [1, 2, 3]), 1],
  ['fixarray', bytes(0x92, 1, 2), 3], ['array 16', bytes(0xdc, be(2, 2), 1, 2), 3], ['array 32', bytes(0xdd, be(2, 4), 1, 2), 3],
  ['fixmap', bytes(0x81, 0xa1, 0x61, 1), 3], ['map 16', bytes(0xde, be(1, 2), 0xa1, 0x61, 1), 3], ['map 32', bytes(0xdf, be(1, 4), 0xa1, 0x61, 1), 3],
  ['empty fixarray', bytes(0x90), 1], ['empty fixmap', bytes(0x80), 1], ['empty str', bytes(0xa0), 1], ['empty bin 8', bytes(0xc4, 0), 1],
];

test('every msgpack type is scanned as msgpackr decodes it, and its values are counted', () => {
  for (const [name, body, values] of EVERY_TYPE) {
    assert.doesNotThrow(() => unpack(body), name); // msgpackr reads it as one value
    checkMsgpackBounds(body, { maxValues: values, maxDepth: 1 });
    refused(body, { maxValues: values - 1, maxDepth: 1 }, new RegExp(`more than ${values - 1} msgpack values`));
    // Every cut short is refused, and so is a byte more.
    for (let n = 0; n < body.length; n++) refused(body.subarray(0, n), LOOSE, /not valid msgpack: truncated/);
    refused(bytes(body, 0), LOOSE, new RegExp(`not valid msgpack: 1 bytes after the value \\(at byte ${body.length}\\)`));
  }
});

test('what msgpackr packs is accepted: a batch write body with its exact count of values', () => {
  const block = (i: number) => ({ index: i, data: Buffer.alloc(64, i), tokens: [1, 2, 3, 4] });
  const body = pack({ blocks: [block(0), block(1), block(2)] });
  // 3 around the list; per block a map, 3 keys, index, data, the tokens array and 4 tokens.
  const values = 3 + 3 * (7 + 4);
  checkMsgpackBounds(body, { maxValues: values, maxDepth: 4 });
  refused(body, { maxValues: values - 1, maxDepth: 4 }, /more than 35 msgpack values/);
  refused(body, { maxValues: values, maxDepth: 3 }, /nested deeper than 3/);
  const next = rng(7);
  for (let n = 0; n < 200; n++) {
    const value = { a: [next(), -Math.floor(next() * 1e12), 'x'.repeat(Math.floor(next() * 300)), Buffer.alloc(Math.floor(next() * 70000))], b: { c: null, d: true, e: 2 ** 40 } };
    checkMsgpackBounds(pack(value), LOOSE);
  }
});

test('extension types and 0xc1 are refused', () => {
  const exts: Array<[number, Buffer]> = [
    [0xd4, bytes(0xd4, 1, 0)], [0xd5, bytes(0xd5, 1, [0, 0])], [0xd6, bytes(0xd6, 0xff, Buffer.alloc(4))], [0xd7, bytes(0xd7, 0xff, Buffer.alloc(8))],
    [0xd8, bytes(0xd8, 1, Buffer.alloc(16))], [0xc7, bytes(0xc7, 1, 0x73, 0)], [0xc8, bytes(0xc8, be(1, 2), 0x73, 0)], [0xc9, bytes(0xc9, be(1, 4), 0x73, 0)],
  ];
  for (const [byte, body] of exts) refused(body, LOOSE, new RegExp(`extension types are not accepted \\(0x${byte.toString(16)}\\)`));
  refused(pack(new Date(0)), LOOSE, /extension types/);
  refused(bytes(0x91, 0xc1), LOOSE, /not valid msgpack: 0xc1 is not a type \(at byte 1\)/);
});

test('nesting is bounded, empty containers included', () => {
  const nested = (depth: number, leaf: number[]) => bytes(Array(depth - 1).fill(0x91), leaf);
  checkMsgpackBounds(nested(4, [0x90]), { maxValues: 10, maxDepth: 4 });
  checkMsgpackBounds(bytes(0x91, 0x91, 0x81, 0x01, 0x80), { maxValues: 10, maxDepth: 4 }); // an empty map, four deep
  refused(nested(5, [0x90]), { maxValues: 10, maxDepth: 4 }, /nested deeper than 4 \(at byte 4\)/);
  refused(nested(5, [0x80]), { maxValues: 10, maxDepth: 4 }, /nested deeper than 4/);
  // A million levels cost one step each until the bound: refused at the bound.
  refused(Buffer.alloc(1e6, 0x91), { maxValues: 1e7, maxDepth: 4 }, /nested deeper than 4 \(at byte 4\)/);
  refused(Buffer.alloc(1e6, 0x81), { maxValues: 1e7, maxDepth: 8 }, /nested deeper than 8/);
  // Siblings are not depth: a wide, shallow body passes.
  checkMsgpackBounds(bytes(0xdc, be(1000, 2), Array(1000).fill(0x90)), { maxValues: 1001, maxDepth: 2 });
});

test('huge declared lengths in a tiny body are refused by what they declare, at once', () => {
  const huge: Array<[what: string, body: Buffer, message: RegExp]> = [
    ['array 32 of 2^32-1', bytes(0xdd, be(0xffffffff, 4)), /more than 1000 msgpack values \(at byte 0\)/],
    ['map 32 of 2^32-1', bytes(0xdf, be(0xffffffff, 4)), /more than 1000 msgpack values/],
    ['array 16 of 65535', bytes(0xdc, be(65535, 2), 1), /more than 1000 msgpack values/],
    ['map 16 of 600 (1200 values)', bytes(0xde, be(600, 2)), /more than 1000 msgpack values/],
    ['array of 900 with 3 bytes', bytes(0xdc, be(900, 2), 1, 2, 3), /not valid msgpack: truncated, 900 entries declared with 3 bytes left/],
    ['str 32 of 4 GiB', bytes(0xdb, be(0xffffffff, 4), 0x61), /truncated, a value of 4294967295 bytes with 1 left/],
    ['bin 32 of 4 GiB', bytes(0xc6, be(0xffffffff, 4)), /truncated, a value of 4294967295 bytes with 0 left/],
    ['bin 16 cut short', bytes(0xc5, be(1000, 2), Buffer.alloc(999)), /truncated/],
    ['a huge array inside a map', bytes(0x81, 0xa1, 0x61, 0xdd, be(0x7fffffff, 4)), /more than 1000 msgpack values \(at byte 3\)/],
  ];
  for (const [, body, message] of huge) refused(body, { maxValues: 1000, maxDepth: 4 }, message);
});

test('many tiny values stop the scan at the bound', () => {
  // A million fixints in an array that declares them: refused from the declaration.
  refused(bytes(0xdd, be(1e6, 4), Buffer.alloc(1e6)), { maxValues: 5000, maxDepth: 4 }, /more than 5000 msgpack values \(at byte 0\)/);
  // Small arrays that each stay under the bound: refused when the count passes it.
  const small = Buffer.alloc(3e5, 0x9f); // fixarray of 15, nested: counted until the bound
  refused(small, { maxValues: 100, maxDepth: 1000 }, /more than 100 msgpack values/);
  const wide = bytes(0xdc, be(4000, 2), Buffer.alloc(4000, 0x01));
  checkMsgpackBounds(wide, { maxValues: 4001, maxDepth: 1 });
  refused(wide, { maxValues: 4000, maxDepth: 1 }, /more than 4000 msgpack values \(at byte 0\)/);
});

test('on random bytes the scan and msgpackr agree on what is msgpack', () => {
  const unpackr = new Unpackr({ useRecords: false });
  const next = rng(0x5ca1ab1e);
  let accepted = 0;
  for (let n = 0; n < 20000; n++) {
    const body = Buffer.from(Array.from({ length: 1 + Math.floor(next() * 24) }, () => Math.floor(next() * 256)));
    let decodes = true;
    try {
      unpackr.unpack(body);
    } catch {
      decodes = false;
    }
    try {
      checkMsgpackBounds(body, { maxValues: 64, maxDepth: 4 });
      accepted++;
    } catch (err) {
      assert.ok(err instanceof SpillwayError && err.details.field === 'body', String(err));
      // Only what msgpackr cannot read is called invalid, but for 0xc1 (msgpackr's own marker);
      // the rest is refused for a bound or an extension.
      if (decodes) assert.match(err.message, /more than|deeper than|extension types|0xc1/, body.toString('hex'));
    }
  }
  assert.ok(accepted > 100, `${accepted} random bodies were single values within bounds`);
});
