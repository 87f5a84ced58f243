/**
 * The soak's presets and its one-screen summary. `full`: the Llama-3-8B-like geometry of
 * the default configuration, 32 sequences of up to 128k tokens, tiers of 2 + 2 GiB and a
 * 256 MiB host tier over a 24 GiB disk tier (the working set is several times the memory tiers). `small`: the
 * same load at a geometry that two cores drive in CI.
 */
import { FAULT_KINDS, type FaultKind } from './faults.js';
import type { SoakOptions, SoakReport } from './soak.js';
import type { LoopLateness } from './stats.js';

export type Preset = 'full' | 'small';

const MiB = 2 ** 20;

const FULL: Omit<SoakOptions, 'dir' | 'log'> = {
  durationS: 600,
  sequences: 32,
  workload: { seed: 1, minTokens: 4096, maxTokens: 131072, families: 4, familyBlocks: 64, familyShare: 0.6, continueShare: 0.2, promptBlocks: 256, zipf: 1.1 },
  model: { layers: 32, kvHeads: 8, headDim: 128, tokensPerBlock: 16, dtype: 'bf16' },
  tiers: { raw: '2GiB', quantized: '2GiB', host: '256MiB', disk: '24GiB' },
  backend: 'auto',
  sampleMs: 1000,
  faults: FAULT_KINDS,
  faultEveryS: 600,
  diskFullWrites: 64,
  batchBlocks: 8,
  stepMs: 0,
  // The load's requests from four threads of their own (docs/SOAK.md: on an H100 machine reads'
  // p99 1.3-1.5x lower than from the harness's thread); --client-threads 0 keeps them there.
  clientThreads: 4,
  readsPerStep: 2,
  readBatchShare: 0.1,
  rewriteShare: 0.05,
  rss: { relative: 0.1, absolute: 64 * MiB },
  fds: { relative: 0.1, absolute: 16 },
  gpuMemory: { relative: 0.05, absolute: 256 * MiB },
  events: true,
};

const PRESETS: Record<Preset, Omit<SoakOptions, 'dir' | 'log'>> = {
  full: FULL,
  // 64 KiB blocks, 32 + 120 slots in memory: the same churn for two cores.
  small: {
    ...FULL,
    durationS: 120,
    sequences: 8,
    workload: { ...FULL.workload, minTokens: 1024, maxTokens: 32768, familyBlocks: 16, promptBlocks: 64 },
    model: { ...FULL.model, layers: 4, kvHeads: 2 },
    tiers: { raw: '2MiB', quantized: '2MiB', host: '1MiB', disk: '192MiB' },
    faultEveryS: 120,
    diskFullWrites: 32,
    // Two cores: one client thread (more would only share the same cores).
    clientThreads: 1,
    // At the ~2,000 requests/s this preset runs (1,400 before the client stopped copying
    // bodies), the server's RSS swings by about 50 MiB between major collections (165 -> 215
    // -> 168 MiB within a minute in a 300 s run, with no growth across it); the fit over a
    // life's second half, about 45 s in a 2-minute run, can fall on one rising swing.
    rss: { relative: 0.1, absolute: 64 * MiB },
  },
};

export interface Overrides {
  dir: string;
  log: (line: string) => void;
  durationS?: number;
  sequences?: number;
  minTokens?: number;
  maxTokens?: number;
  tiers?: { raw?: string; quantized?: string; host?: string; disk?: string };
  reserve?: number;
  backend?: SoakOptions['backend'];
  faults?: FaultKind[];
  /** Defaults to the duration: each fault once. */
  faultEveryS?: number;
  seed?: number;
  stepMs?: number;
  sampleMs?: number;
  serverProfileDir?: string;
  serverNodeArgs?: string[];
  events?: boolean;
  clientThreads?: number;
}

const defined = <T extends object>(o: T): Partial<T> => Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;

export function soakOptions(preset: Preset, o: Overrides): SoakOptions {
  const base = PRESETS[preset];
  if (!base) throw new Error(`unknown preset ${preset}: use ${Object.keys(PRESETS).join(' or ')}`);
  const durationS = o.durationS ?? base.durationS;
  return {
    ...base,
    ...defined({ sequences: o.sequences, reserve: o.reserve, backend: o.backend, faults: o.faults, sampleMs: o.sampleMs, events: o.events, stepMs: o.stepMs, clientThreads: o.clientThreads, serverProfileDir: o.serverProfileDir, serverNodeArgs: o.serverNodeArgs }),
    durationS,
    faultEveryS: o.faultEveryS ?? durationS,
    workload: { ...base.workload, ...defined({ seed: o.seed, minTokens: o.minTokens, maxTokens: o.maxTokens }) },
    tiers: { ...base.tiers, ...defined(o.tiers ?? {}) },
    dir: o.dir,
    log: o.log,
  };
}

const mib = (b: number | null) => (b === null ? '-' : `${(b / MiB).toFixed(1)} MiB`);

const late = (l: LoopLateness) => [l.p50, l.p99, l.max].map((x) => x.toFixed(1)).join('/');

const quantiles = (q: SoakReport['storeMs']) => Object.entries(q).map(([k, l]) => `${k} ${l.p50 ?? '-'}/${l.p99 ?? '-'} ms`).join(', ');

export function summarize(r: SoakReport): string {
  const t = r.totals;
  const ops = Object.values(t.ops).reduce((a, b) => a + b, 0);
  const lat = (q: SoakReport['latencyMs']) => Object.entries(q).filter(([, l]) => l.count > 0)
    .map(([k, l]) => `${k} ${l.p50?.toFixed(2)}/${l.p99?.toFixed(2)} ms`).join(', ');
  const verdict = (name: string, v: SoakReport['leak']['rss'] | null, fmt: (x: number | null) => string) =>
    v ? `${name}: ${v.ok ? 'bounded' : 'GROWS'}: fit grew ${fmt(v.growth)} over ${v.window ? `${v.window[0].toFixed(0)}-${v.window[1].toFixed(0)} s` : '-'} (allowed ${fmt(v.threshold)}; mean ${fmt(v.mean)})` : `${name}: not measured`;
  return [
    `soak ${r.passed ? 'PASSED' : 'FAILED'}: ${r.durationS.toFixed(0)} s on the ${r.server.backend} backend, ${r.server.restarts} restart(s)`,
    `requests: ${ops} (${t.opsPerSecond.toFixed(1)}/s): ${Object.entries(t.ops).map(([k, v]) => `${k} ${v}`).join(', ')}`,
    `reads checked: ${t.readsChecked} (${t.readsExact} bit-exact, ${t.readsLossy} quantized, worst relative error ${t.maxRelativeError.toExponential(2)} against ${t.bound}); mismatches: ${t.mismatches}`,
    `sequences: ${t.sequencesStarted} started, ${t.sequencesFinished} finished, ${t.preempted} ended early for room, longest ${t.longestSequenceTokens} tokens; ${t.attachedBlocks} prefix blocks attached, ${t.deduplicated} deduplicated`,
    `moves: ${t.moves.demotions} demotions, ${t.moves.promotions} promotions, ${t.moves.drops} drops; ${(t.bytesWritten / 2 ** 30).toFixed(1)} GiB written, ${(t.bytesRead / 2 ** 30).toFixed(1)} GiB read and checked`,
    `retries: ${JSON.stringify(t.retries)}; fault errors seen: ${JSON.stringify(t.faultErrors)}; rewrites refused by the full disk and read back as before: ${t.refusedRewritesReadBack}`,
    `latency p50/p99 (${r.options.stepMs > 0 ? `a decode step every ${r.options.stepMs} ms per sequence` : 'every sequence flat out'}): ${lat(r.latencyMs)}`,
    `latency p50/p99 from ${r.steadyFromS === null ? '- (the first wave never finished its prompts)' : `${r.steadyFromS.toFixed(1)} s, once the first wave had written its prompts: ${lat(r.steadyLatencyMs)}`}`,
    `store time p50/p99 (histogram bucket bounds, last server life): ${quantiles(r.storeMs)}`,
    `server time of block requests p50/p99 (the same): ${quantiles(r.serverMs)}`,
    `block moves p50/p99 (the same): ${quantiles(r.moveMs)}`,
    `addon tasks p50/p99 by phase (the same): ${quantiles(r.nativeMs)}`,
    `server GC pauses p50/p99 by kind (the same): ${quantiles(r.gcMs)}`,
    `harness event loop late p50/p99/max: ${late(r.harnessLoopDelayMs)} ms${r.clientThreadsLoopDelayMs.length > 0 ? `; its client threads': ${r.clientThreadsLoopDelayMs.map(late).join(', ')} ms` : ''}`,
    verdict('RSS', r.leak.rss, mib),
    verdict('open fds', r.leak.fds, (x) => (x === null ? '-' : x.toFixed(1))),
    verdict('GPU memory', r.leak.gpuMemory, mib),
    ...r.faults.map((f) => `fault ${f.kind} at ${f.at.toFixed(0)} s: ${f.ok ? 'ok' : 'FAILED'}: ${f.outcome}`),
    ...r.failures.map((f) => `FAILURE: ${f}`),
  ].join('\n');
}
