/**
 * The error table: the set of codes is pinned (adding one is a decision, made here too),
 * every code the addon source can throw is in it, the named factories carry their code and
 * status, and an addon error with a code the table lacks keeps that code in its details.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { projectRoot } from '../../runtime/config.js';
import { ErrorCodes, errors, fromNative, isErrorCode, nativeSync, SpillwayError } from '../../runtime/errors.js';

const PINNED_CODES = [
  'INVALID_ARGUMENT', 'INVALID_CONFIG', 'WRONG_SIZE', 'UNAUTHORIZED', 'NOT_FOUND', 'SEQUENCE_NOT_FOUND', 'BLOCK_NOT_FOUND',
  'LEASE_NOT_FOUND', 'BLOCK_NOT_WRITTEN', 'BLOCK_IMMUTABLE', 'SEQUENCE_EXISTS', 'NO_DEVICE_MEMORY', 'PAYLOAD_TOO_LARGE',
  'UNSUPPORTED_MEDIA_TYPE', 'LIMIT_EXCEEDED', 'TIER_BUSY', 'CAPACITY_EXCEEDED', 'DISK_FULL', 'IO_ERROR', 'CHECKSUM_MISMATCH',
  'SLOT_MISMATCH', 'BLOCK_LOST', 'QUANT_PARAMS', 'QUANT_FORMAT', 'QUANT_MISMATCH', 'OUT_OF_MEMORY', 'CLOSED', 'NOT_READY',
  'BUSY', 'WEIGHTS_FORMAT', 'WEIGHTS_SHARDING', 'INTERNAL',
];

/** Every string literal the addon passes as an error code: to CodedError, MakeError, or as the worker's code. */
function addonCodeLiterals(): Map<string, string[]> {
  const dir = join(projectRoot, 'addon', 'src');
  const found = new Map<string, string[]>();
  const callSites = /(?:CodedError\(|MakeError\([^,]+,|code_ = )([^;]*)/g;
  for (const file of readdirSync(dir, { recursive: true, encoding: 'utf8' }).filter((f) => /\.(cc|h|cu)$/.test(f))) {
    const source = readFileSync(join(dir, file), 'utf8');
    for (const call of source.matchAll(callSites)) {
      // The code is the first argument; a conditional picks between literals.
      const codeArgument = call[1]!.split(/,\s*(?![^(]*\))/)[0]!;
      for (const literal of codeArgument.matchAll(/"([A-Z][A-Z0-9_]*)"/g)) {
        found.set(literal[1]!, [...(found.get(literal[1]!) ?? []), file]);
      }
    }
  }
  return found;
}

test('the set of error codes is pinned', () => {
  assert.deepEqual(Object.keys(ErrorCodes).sort(), [...PINNED_CODES].sort());
  for (const [code, status] of Object.entries(ErrorCodes)) assert.ok(status >= 400 && status < 600, `${code} has an HTTP error status`);
});

test('every code the addon source can throw is in the table', () => {
  const literals = addonCodeLiterals();
  // The scan must see the addon's throws, or an empty result would pass for the wrong reason.
  for (const expected of ['IO_ERROR', 'OUT_OF_MEMORY', 'QUANT_FORMAT', 'DISK_FULL', 'CLOSED', 'INTERNAL']) {
    assert.ok(literals.has(expected), `the scan finds ${expected} in addon/src`);
  }
  const unknown = [...literals].filter(([code]) => !isErrorCode(code)).map(([code, files]) => `${code} (${files.join(', ')})`);
  assert.deepEqual(unknown, [], 'codes thrown by the addon but missing from runtime/errors.ts');
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

test('an addon error with a known code keeps it, with the context in the message', () => {
  const err = fromNative(Object.assign(new Error('disk gone'), { code: 'IO_ERROR' }), 'spill');
  assert.equal(err.code, 'IO_ERROR');
  assert.equal(err.message, 'spill: disk gone');
  assert.equal(err.details.nativeCode, undefined);
});

test('an addon error with an unknown code is INTERNAL and keeps the code it had', () => {
  const err = fromNative(Object.assign(new Error('odd'), { code: 'NEW_CODE' }), 'probe', { slot: 3 });
  assert.equal(err.code, 'INTERNAL');
  assert.deepEqual(err.details, { slot: 3, nativeCode: 'NEW_CODE' });
  // The addon's argument checks throw plain TypeErrors: their name is what is kept.
  const typeError = (() => {
    try {
      return nativeSync('quantize', () => {
        throw new TypeError('slot must be a number');
      });
    } catch (e) {
      return e as SpillwayError;
    }
  })();
  assert.equal(typeError.code, 'INTERNAL');
  assert.equal(typeError.details.nativeCode, 'TypeError');
  assert.equal(typeError.message, 'quantize: slot must be a number');
});
