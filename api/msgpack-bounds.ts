/**
 * What a msgpack body can expand to, checked before it is decoded. A few bytes of msgpack
 * can declare an array of four billion entries, or nest a million levels deep, and a
 * decoder sizes and recurses by what the bytes declare. One pass over the headers, with
 * no allocation per value (str, bin and the fixed-size scalars are skipped by their
 * length), refuses a body that holds more values or deeper nesting than the route can
 * need, any bytes after the top value, and any value cut short.
 *
 * Extension types are refused too: no body of this API carries one, and msgpackr gives
 * some of them meanings (records, sets, typed arrays, regular expressions) whose cost is
 * not that of their bytes.
 */
import { errors } from '../runtime/errors.js';

export interface MsgpackBounds {
  /** Values in all: containers, map keys and map values each count as one. */
  maxValues: number;
  /** Containers within containers: a top-level map is depth 1, an array in it depth 2. */
  maxDepth: number;
}

function refuse(message: string, at: number): never {
  throw errors.badBody(`${message} (at byte ${at})`);
}

function invalid(message: string, at: number): never {
  refuse(`not valid msgpack: ${message}`, at);
}

/** Throws INVALID_ARGUMENT naming `body` unless `body` is one msgpack value within `bounds`. */
export function checkMsgpackBounds(body: Uint8Array, bounds: MsgpackBounds): void {
  const { maxValues, maxDepth } = bounds;
  const end = body.length;
  const view = new DataView(body.buffer, body.byteOffset, body.byteLength);
  // Values still to come in each open container; level 0 is the top, which holds one.
  const left = new Float64Array(maxDepth + 1);
  left[0] = 1;
  let depth = 0;
  let values = 0;
  let pos = 0;
  /** Reads an n-byte big-endian length after the header byte. */
  const length = (n: 1 | 2 | 4): number => {
    if (end - pos < n) invalid('truncated header', pos);
    const v = n === 1 ? view.getUint8(pos) : n === 2 ? view.getUint16(pos) : view.getUint32(pos);
    pos += n;
    return v;
  };
  for (;;) {
    while (depth > 0 && left[depth] === 0) depth--;
    if (depth === 0 && left[0] === 0) break;
    const at = pos;
    if (pos >= end) invalid('truncated, a value is missing', at);
    if (++values > maxValues) refuse(`more than ${maxValues} msgpack values`, at);
    left[depth] = left[depth]! - 1;
    const byte = body[pos++]!;
    // A value's payload bytes to skip, or the entries of a container.
    let skip = 0;
    let entries = -1;
    if (byte <= 0x7f || byte >= 0xe0 || byte === 0xc0 || byte === 0xc2 || byte === 0xc3) {
      // fixint, nil, false, true: the header is the value
    } else if (byte <= 0x8f) entries = 2 * (byte & 0x0f);
    else if (byte <= 0x9f) entries = byte & 0x0f;
    else if (byte <= 0xbf) skip = byte & 0x1f;
    else {
      switch (byte) {
        case 0xc4: case 0xd9: skip = length(1); break; // bin 8, str 8
        case 0xc5: case 0xda: skip = length(2); break; // bin 16, str 16
        case 0xc6: case 0xdb: skip = length(4); break; // bin 32, str 32
        case 0xcc: case 0xd0: skip = 1; break; // uint 8, int 8
        case 0xcd: case 0xd1: skip = 2; break;
        case 0xca: case 0xce: case 0xd2: skip = 4; break; // float 32, uint 32, int 32
        case 0xcb: case 0xcf: case 0xd3: skip = 8; break;
        case 0xdc: entries = length(2); break; // array 16
        case 0xdd: entries = length(4); break; // array 32
        case 0xde: entries = 2 * length(2); break; // map 16
        case 0xdf: entries = 2 * length(4); break; // map 32
        case 0xc1: invalid('0xc1 is not a type', at);
        // 0xc7-0xc9 ext 8/16/32, 0xd4-0xd8 fixext
        default: refuse(`msgpack extension types are not accepted (0x${byte.toString(16)})`, at);
      }
    }
    if (skip > end - pos) invalid(`truncated, a value of ${skip} bytes with ${end - pos} left`, at);
    pos += skip;
    if (entries < 0) continue;
    if (depth === maxDepth) refuse(`msgpack nested deeper than ${maxDepth}`, at);
    // Refused by what they declare: every entry takes at least a byte and counts as a value.
    if (entries > maxValues - values) refuse(`more than ${maxValues} msgpack values`, at);
    if (entries > end - pos) invalid(`truncated, ${entries} entries declared with ${end - pos} bytes left`, at);
    left[++depth] = entries;
  }
  if (pos !== end) invalid(`${end - pos} bytes after the value`, pos);
}
