/** A tier's slot pool: lowest index first, counts that add up, claimed slots never handed out. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { SlotPool } from '../../runtime/slots.js';

test('slots are handed out lowest first until none is left', () => {
  const pool = new SlotPool(3);
  assert.deepEqual([pool.take(), pool.take(), pool.take()], [0, 1, 2]);
  assert.equal(pool.take(), undefined);
  assert.equal(pool.available, 0);
  assert.equal(pool.used, 3);
});

test('a released slot is the next one taken, and the counts follow', () => {
  const pool = new SlotPool(4);
  pool.take();
  const second = pool.take()!;
  pool.release(second);
  assert.equal(pool.available, 3);
  assert.equal(pool.used, 1);
  assert.equal(pool.take(), second);
});

test('claimed slots (blocks found at start) are never handed out', () => {
  const pool = new SlotPool(5);
  pool.claim([0, 3]);
  assert.equal(pool.used, 2);
  const taken = [pool.take(), pool.take(), pool.take()];
  assert.deepEqual(taken, [1, 2, 4]);
  assert.equal(pool.take(), undefined);
});
