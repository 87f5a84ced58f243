/** Zero-copy leases on their own: refusals naming the field, renewal, expiry with the blocks held, ending. */
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { test } from 'node:test';
import { LEASE_TTL_MIN_MS, LeaseManager } from '../../runtime/leases.js';
import { SpillwayError } from '../../runtime/errors.js';

const field = (fn: () => unknown) => {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof SpillwayError);
    return { code: err.code, field: err.details.field };
  }
  assert.fail('expected a refusal');
};

test('a bad client id or TTL is refused naming the field', () => {
  const leases = new LeaseManager(() => {});
  assert.deepEqual(field(() => leases.create('no spaces')), { code: 'INVALID_ARGUMENT', field: 'client' });
  assert.deepEqual(field(() => leases.create('engine', LEASE_TTL_MIN_MS - 1)), { code: 'INVALID_ARGUMENT', field: 'ttlMs' });
  assert.deepEqual(field(() => leases.create('engine', LEASE_TTL_MIN_MS + 0.5)), { code: 'INVALID_ARGUMENT', field: 'ttlMs' });
  assert.equal(leases.size, 0);
});

test('an unknown lease is LEASE_NOT_FOUND', () => {
  const leases = new LeaseManager(() => {});
  assert.deepEqual(field(() => leases.touch('lease-none')), { code: 'LEASE_NOT_FOUND', field: 'lease' });
  assert.deepEqual(field(() => leases.end('lease-none')), { code: 'LEASE_NOT_FOUND', field: 'lease' });
});

test('a lease not renewed expires and hands back the blocks it held', async () => {
  const expired: Array<{ id: string; held: number[] }> = [];
  const leases = new LeaseManager((id, held) => expired.push({ id, held }));
  const lease = leases.create('engine', LEASE_TTL_MIN_MS);
  leases.hold(lease.id, 7);
  leases.hold(lease.id, 9);
  leases.unhold(lease.id, 7);
  assert.ok(leases.holds(lease.id, 9) && !leases.holds(lease.id, 7));
  await sleep(LEASE_TTL_MIN_MS * 4);
  assert.deepEqual(expired, [{ id: lease.id, held: [9] }]);
  assert.equal(leases.has(lease.id), false);
});

test('renewing keeps a lease alive past its TTL', async () => {
  const expired: string[] = [];
  const leases = new LeaseManager((id) => expired.push(id));
  const lease = leases.create('engine', 4 * LEASE_TTL_MIN_MS);
  for (let i = 0; i < 6; i++) {
    await sleep(LEASE_TTL_MIN_MS);
    assert.ok(leases.touch(lease.id).expiresAt > Date.now());
  }
  assert.deepEqual(expired, []);
  leases.close();
});

test('ending a lease returns its blocks and never fires the expiry', async () => {
  const expired: string[] = [];
  const leases = new LeaseManager((id) => expired.push(id));
  const lease = leases.create('engine', LEASE_TTL_MIN_MS);
  leases.hold(lease.id, 3);
  assert.deepEqual(leases.end(lease.id), [3]);
  assert.equal(lease.blocks, 0);
  await sleep(LEASE_TTL_MIN_MS * 3);
  assert.deepEqual(expired, []);
  assert.equal(leases.size, 0);
});
