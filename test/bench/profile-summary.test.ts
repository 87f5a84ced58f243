/**
 * The profile summary (bench/soak/profile-summary.ts) on a profile made by hand: long tasks are
 * the runs of samples between idle ones, and each sample counts for its leaf and the project
 * frame under it.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { summarizeProfile, type CpuProfile } from '../../bench/soak/profile-summary.js';

const frame = (functionName: string, url = '') => ({ functionName, url, lineNumber: 9 });
// root -> (idle); root -> handler (project code) -> writev (native)
const profile: CpuProfile = {
  nodes: [
    { id: 1, callFrame: frame('(root)'), children: [2, 3] },
    { id: 2, callFrame: frame('(idle)') },
    { id: 3, callFrame: frame('handler', 'file:///x/dist/api/routes/blocks.js'), children: [4] },
    { id: 4, callFrame: frame('writev') },
  ],
  startTime: 0,
  endTime: 7000,
  // a 4 ms run in writev, idle, a 1 ms run in the handler itself, idle
  samples: [4, 4, 4, 4, 2, 3, 2],
  timeDeltas: [1000, 1000, 1000, 1000, 1000, 1000, 1000],
};

test('a profile summary counts long tasks by leaf and project frame, and every busy sample with no minimum', () => {
  const long = summarizeProfile(profile, 3);
  assert.equal(long.profileMs, 7);
  assert.equal(long.longTasks, 1);
  assert.equal(long.longTaskMs, 4);
  assert.deepEqual(long.shares, [{ leaf: 'writev :10', under: 'handler routes/blocks.js:10', share: 1 }]);
  assert.ok(Math.abs(long.busyShare - 5 / 7) < 1e-12);

  const all = summarizeProfile(profile, 0);
  assert.equal(all.longTasks, 2);
  assert.deepEqual(all.shares.map((s) => [s.leaf, s.share]), [['writev :10', 0.8], ['handler routes/blocks.js:10', 0.2]]);
});
