/** Eviction policies on their own: the order each offers victims in, and what changes it. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createPolicy, FifoPolicy, LruPolicy } from '../../runtime/policy.js';

test('LRU offers the least recently used block first; a touch moves a block to the back', () => {
  const lru = new LruPolicy(4);
  for (const id of [1, 2, 3]) lru.insert(id);
  assert.deepEqual([...lru.candidates()], [1, 2, 3]);
  lru.touch(1);
  assert.deepEqual([...lru.candidates()], [2, 3, 1]);
  lru.remove(3);
  assert.deepEqual([...lru.candidates()], [2, 1]);
});

test('LRU keeps every block of a full tier: it never evicts on its own', () => {
  const lru = new LruPolicy(3);
  for (const id of [1, 2, 3]) lru.insert(id);
  assert.deepEqual([...lru.candidates()].sort(), [1, 2, 3]);
});

test('FIFO offers blocks in the order they arrived; reads do not refresh them', () => {
  const fifo = new FifoPolicy();
  for (const id of [5, 6, 7]) fifo.insert(id);
  fifo.touch();
  assert.deepEqual([...fifo.candidates()], [5, 6, 7]);
  fifo.remove(5);
  fifo.insert(5);
  assert.deepEqual([...fifo.candidates()], [6, 7, 5]);
});

test('createPolicy picks by name', () => {
  assert.ok(createPolicy('lru', 8) instanceof LruPolicy);
  assert.ok(createPolicy('fifo', 8) instanceof FifoPolicy);
});
