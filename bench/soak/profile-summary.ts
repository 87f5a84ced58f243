/**
 * What a V8 CPU profile spent its thread's time on (node --cpu-prof, or the soak's
 * --server-cpu-prof): the share of each leaf function with the first frame of the project's
 * own code under it, over the whole profile or over its long tasks only. A long task is a run
 * of samples with no idle sample between them, at least --min-ms long: what makes a request
 * or a finished native task wait for the thread.
 *
 *   node dist/bench/soak/profile-summary.js PROFILE [--min-ms 3] [--top 20]
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}
export interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

export interface ProfileSummary {
  profileMs: number;
  /** Share of the profile outside idle, program and collector samples. */
  busyShare: number;
  longTasks: number;
  longTaskMs: number;
  /** Leaf, and the project frame under it ('-' for none), by share of the samples counted. */
  shares: Array<{ leaf: string; under: string; share: number }>;
}

const IDLE = '(idle)';
const PROJECT = /\/(api|runtime|bench)\//;

function frameName(n: ProfileNode): string {
  const where = n.callFrame.url.split('/').slice(-2).join('/');
  return `${n.callFrame.functionName || '(anonymous)'} ${where}:${n.callFrame.lineNumber + 1}`;
}

/** Summarizes `profile`; minMs 0 counts every busy sample, more only those in long tasks. */
export function summarizeProfile(profile: CpuProfile, minMs: number): ProfileSummary {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  // runs of busy samples: [start µs, end µs, sample ids]
  const runs: Array<{ start: number; end: number; ids: number[] }> = [];
  let t = profile.startTime;
  let run: { start: number; ids: number[] } | undefined;
  let busy = 0;
  for (const [i, id] of profile.samples.entries()) {
    t += profile.timeDeltas[i]!;
    if (byId.get(id)!.callFrame.functionName === IDLE) {
      if (run) runs.push({ ...run, end: t });
      run = undefined;
      continue;
    }
    if (byId.get(id)!.callFrame.functionName !== '(garbage collector)') busy++;
    (run ??= { start: t, ids: [] }).ids.push(id);
  }
  if (run) runs.push({ ...run, end: t });
  const long = runs.filter((r) => (r.end - r.start) / 1e3 >= minMs);
  // a node's leaf and project frame, named once however many samples land on it
  const named = new Map<number, string>();
  const nameOf = (id: number): string => {
    let key = named.get(id);
    if (key === undefined) {
      let under = '-';
      for (let at: number | undefined = id; at !== undefined; at = parent.get(at)) {
        const n = byId.get(at)!;
        if (PROJECT.test(n.callFrame.url)) {
          under = frameName(n);
          break;
        }
      }
      key = `${frameName(byId.get(id)!)}\u0000${under}`;
      named.set(id, key);
    }
    return key;
  };
  const counts = new Map<string, number>();
  let total = 0;
  for (const r of long) {
    for (const id of r.ids) {
      const key = nameOf(id);
      counts.set(key, (counts.get(key) ?? 0) + 1);
    }
    total += r.ids.length;
  }
  return {
    profileMs: (profile.endTime - profile.startTime) / 1e3,
    busyShare: profile.samples.length ? busy / profile.samples.length : 0,
    longTasks: long.length,
    longTaskMs: long.reduce((ms, r) => ms + (r.end - r.start) / 1e3, 0),
    shares: [...counts].map(([key, n]) => {
      const [leaf, under] = key.split('\u0000') as [string, string];
      return { leaf, under, share: n / total };
    }).sort((a, b) => b.share - a.share),
  };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const { values, positionals } = parseArgs({ options: { 'min-ms': { type: 'string', default: '3' }, top: { type: 'string', default: '20' } }, allowPositionals: true });
  if (positionals.length !== 1) {
    console.error('usage: node dist/bench/soak/profile-summary.js PROFILE [--min-ms 3] [--top 20]');
    process.exit(2);
  }
  const s = summarizeProfile(JSON.parse(readFileSync(positionals[0]!, 'utf8')) as CpuProfile, Number(values['min-ms']));
  console.log(`${s.profileMs.toFixed(0)} ms profiled, ${(100 * s.busyShare).toFixed(1)} % busy (collections apart); ` +
    `${s.longTasks} tasks of ${values['min-ms']} ms or more, ${s.longTaskMs.toFixed(0)} ms in all; their time by leaf <= project frame:`);
  for (const { leaf, under, share } of s.shares.slice(0, Number(values.top))) console.log(`${(100 * share).toFixed(1).padStart(5)} %  ${leaf}  <=  ${under}`);
}
