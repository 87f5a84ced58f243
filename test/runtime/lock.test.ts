/** The store's locks: a block's mutual exclusion and the batch window's counting semaphore. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { BlockLock, Semaphore } from '../../runtime/lock.js';

test('a block lock passes over busy holders with tryAcquire and hands itself to waiters in order', async () => {
  const lock = new BlockLock();
  assert.ok(lock.tryAcquire());
  assert.ok(!lock.tryAcquire());
  const order: number[] = [];
  const waits = [1, 2].map((n) => lock.acquire().then(() => order.push(n)));
  lock.release();
  await waits[0];
  assert.ok(lock.locked, 'handed over, never free in between');
  lock.release();
  await waits[1];
  lock.release();
  assert.deepEqual(order, [1, 2]);
  assert.ok(!lock.locked);
});

test('a semaphore lets `permits` holders in at once and the rest in the order they came', async () => {
  const window = new Semaphore(2);
  let inside = 0;
  let most = 0;
  const order: number[] = [];
  await Promise.all(Array.from({ length: 6 }, async (_, n) => {
    await window.acquire();
    inside++;
    most = Math.max(most, inside);
    order.push(n);
    await new Promise((r) => setTimeout(r, 2));
    inside--;
    window.release();
  }));
  assert.equal(most, 2);
  assert.deepEqual(order, [0, 1, 2, 3, 4, 5]);
});
