/**
 * The error table: the set of codes is pinned (adding one is a decision, made here too),
 * so is the set the addon can raise, every one of which is in the table; the named
 * factories carry their code and status; the addon's errors arrive as the runtime's own
 * error type, and anything else it throws (an argument check) is INTERNAL, named.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { ErrorCodes, errors, fromNative, isErrorCode, NativeError, nativeCall, nativeSync, SpillwayError } from '../../runtime/errors.js';
import { addon, openSlotFile } from '../../runtime/native.js';
import { tempDir } from '../helpers.js';

const PINNED_CODES = [
  'INVALID_ARGUMENT', 'INVALID_CONFIG', 'WRONG_SIZE', 'UNAUTHORIZED', 'NOT_FOUND', 'SEQUENCE_NOT_FOUND', 'BLOCK_NOT_FOUND',
  'LEASE_NOT_FOUND', 'BLOCK_NOT_WRITTEN', 'BLOCK_IMMUTABLE', 'SEQUENCE_EXISTS', 'NO_DEVICE_MEMORY', 'REQUEST_TIMEOUT', 'PAYLOAD_TOO_LARGE',
  'UNSUPPORTED_MEDIA_TYPE', 'LIMIT_EXCEEDED', 'TIER_BUSY', 'CAPACITY_EXCEEDED', 'DISK_FULL', 'IO_ERROR', 'CHECKSUM_MISMATCH',
  'SLOT_MISMATCH', 'BLOCK_LOST', 'QUANT_PARAMS', 'QUANT_FORMAT', 'QUANT_MISMATCH', 'OUT_OF_MEMORY', 'CLOSED', 'NOT_READY',
  'BUSY', 'WEIGHTS_FORMAT', 'WEIGHTS_SHARDING', 'INTERNAL',
];

/** The codes of the addon's table (addon/src/core/errors.h). */
const ADDON_CODES = [
  'BUSY', 'CHECKSUM_MISMATCH', 'CLOSED', 'DISK_FULL', 'INTERNAL', 'INVALID_ARGUMENT', 'IO_ERROR', 'OUT_OF_MEMORY',
  'QUANT_FORMAT', 'QUANT_MISMATCH', 'QUANT_PARAMS', 'SLOT_MISMATCH',
];

test('the set of error codes is pinned', () => {
  assert.deepEqual(Object.keys(ErrorCodes).sort(), [...PINNED_CODES].sort());
  for (const [code, status] of Object.entries(ErrorCodes)) assert.ok(status >= 400 && status < 600, `${code} has an HTTP error status`);
});

test('the set of codes the addon can raise is pinned, and every one is in the table', () => {
  const codes = addon.errorCodes();
  assert.deepEqual([...codes].sort(), [...ADDON_CODES].sort());
  assert.deepEqual(codes.filter((code) => !isErrorCode(code)), [], 'codes the addon raises but runtime/errors.ts lacks');
});

test('named factories carry their code, status and details', () => {
  const notFound = errors.sequenceNotFound('s1');
  assert.ok(notFound instanceof SpillwayError);
  assert.equal(notFound.code, 'SEQUENCE_NOT_FOUND');
  assert.equal(notFound.status, 404);
  assert.deepEqual(notFound.details, { id: 's1' });
  const full = errors.ladderFull(10, 12);
  assert.equal(full.status, 507);
  assert.equal(full.details.remainingBlocks, 0);
  assert.match(errors.immutableInSequence('s', 2, true).message, /committed to the prefix cache/);
  assert.match(errors.immutableInSequence('s', 2, false).message, /shared/);
});

test('the shared factories name the field: a configuration value, a body, an identifier', () => {
  const config = errors.badConfig('server.port', '70000 leaves no room for 2 consecutive ports');
  assert.equal(config.code, 'INVALID_CONFIG');
  assert.equal(config.message, 'config server.port: 70000 leaves no room for 2 consecutive ports');
  assert.deepEqual(config.details, { field: 'server.port' });
  assert.deepEqual(errors.badConfig('gpu.device', 'not visible', { field: 'gpu.device', visible: 1 }).details, { field: 'gpu.device', visible: 1 });
  const body = errors.badBody('JSON nested too deep (at byte 9)');
  assert.equal(body.status, 400);
  assert.equal(body.message, 'body: JSON nested too deep (at byte 9)');
  assert.deepEqual(body.details, { field: 'body' });
  assert.equal(errors.badIdentifier('client', 'client').message, 'client must be 1-128 characters of A-Z a-z 0-9 . _ : -');
  assert.equal(errors.badSequenceId().message, 'sequence id must be 1-128 characters of A-Z a-z 0-9 . _ : -');
  assert.deepEqual(errors.badSequenceId().details, { field: 'id' });
  assert.deepEqual(errors.badRulesFile('rules.json', 'bad').details, { file: 'rules.json' });
});

test('the addon constructs its errors as the runtime\'s type, and a call gives them its context', async () => {
  const dir = tempDir();
  try {
    const path = join(dir.path, 'tier.bin');
    // A synchronous throw: a slot size the file cannot use.
    const sync = (() => {
      try {
        new addon.SlotFile(path, 1000, 1, { direct: false });
      } catch (e) {
        return e;
      }
    })();
    assert.ok(sync instanceof NativeError);
    assert.equal(sync.code, 'INVALID_ARGUMENT');
    assert.equal(sync.status, 400);
    assert.equal(sync.message, 'slotBytes must be a positive multiple of 4096');

    // A rejection from a worker thread: a slot never written holds no valid header.
    const file = openSlotFile(path, 4096, 1, false);
    const rejected = await file.read(0, 7, 1, Buffer.alloc(16), 0, 16).catch((e: unknown) => e);
    assert.ok(rejected instanceof NativeError);
    assert.equal(rejected.code, 'CHECKSUM_MISMATCH');
    assert.equal(rejected.status, 500);

    const wrapped = await nativeCall('fill of block 7', () => file.read(0, 7, 1, Buffer.alloc(16), 0, 16), { blockId: 7 }).catch((e: unknown) => e);
    assert.ok(wrapped instanceof SpillwayError && !(wrapped instanceof NativeError));
    assert.equal(wrapped.code, 'CHECKSUM_MISMATCH');
    assert.equal(wrapped.message, `fill of block 7: read of slot 0 in ${path}: slot header is corrupt`);
    assert.deepEqual(wrapped.details, { blockId: 7 });
    file.close();
  } finally {
    dir.cleanup();
  }
});

test('a SpillwayError thrown on the JS side of a call passes unchanged', () => {
  const err = errors.storeClosed();
  assert.equal(fromNative(err, 'spill'), err);
});

test('an argument check the addon fails is INTERNAL, named in the details', () => {
  const typeError = (() => {
    try {
      return nativeSync('checksum', () => addon.crc32c('not a buffer' as unknown as Buffer));
    } catch (e) {
      return e as SpillwayError;
    }
  })();
  assert.ok(typeError instanceof SpillwayError);
  assert.equal(typeError.code, 'INTERNAL');
  assert.equal(typeError.details.nativeCode, 'TypeError');
  assert.equal(typeError.message, 'checksum: buffer must be a Buffer');
  assert.deepEqual(fromNative('odd', 'probe', { slot: 3 }).details, { slot: 3, nativeCode: 'string' });
});
