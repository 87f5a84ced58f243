/**
 * The soak, from the command line:
 *
 *   node --initial-old-space-size=128 dist/bench/soak/run.js [--duration 600] [--preset full|small] [--out DIR] [flags]
 *
 * Starts a server in its own process on a fresh directory, drives it for the duration,
 * writes DIR/report.json and DIR/*.png, prints a summary and exits 1 if the run failed.
 * docs/SOAK.md lists the flags and what passes.
 */
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { missingNodeFlags } from '../../runtime/node-flags.js';
import { drawCharts } from './charts.js';
import { soakOptions, summarize, type Preset } from './options.js';
import { FAULT_KINDS, type FaultKind } from './faults.js';
import { runSoak } from './soak.js';

const { values } = parseArgs({
  options: {
    preset: { type: 'string', default: 'full' },
    duration: { type: 'string' },
    sequences: { type: 'string' },
    'min-tokens': { type: 'string' },
    'max-tokens': { type: 'string' },
    raw: { type: 'string' },
    quantized: { type: 'string' },
    host: { type: 'string' },
    reserve: { type: 'string' },
    'step-ms': { type: 'string' },
    'client-threads': { type: 'string' },
    'server-cpu-prof': { type: 'string' },
    'server-node-args': { type: 'string' },
    disk: { type: 'string' },
    backend: { type: 'string' },
    faults: { type: 'string' },
    'fault-every': { type: 'string' },
    seed: { type: 'string' },
    'sample-ms': { type: 'string' },
    events: { type: 'string' },
    dir: { type: 'string' },
    out: { type: 'string', default: 'soak-report' },
    keep: { type: 'boolean', default: false },
  },
  strict: true,
});

function num(v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isFinite(n)) throw new Error(`not a number: ${v}`);
  return n;
}

// Without them the harness's heap collects in full every 100 ms or so, inside the latencies it times.
const missing = missingNodeFlags();
if (missing.length > 0) console.log(`[soak] warning: started without ${missing.join(' ')}; its full collections then pause the requests it times (docs/SOAK.md)`);

const out = resolve(values.out);
const dir = resolve(values.dir ?? join(out, 'run'));
for (const d of [out, dir]) mkdirSync(d, { recursive: true });
const faults = values.faults === undefined ? undefined : values.faults === 'none' ? [] : values.faults.split(',');
for (const f of faults ?? []) if (!FAULT_KINDS.includes(f as FaultKind)) throw new Error(`unknown fault ${f}: use ${FAULT_KINDS.join(', ')} or none`);
const options = soakOptions(values.preset as Preset, {
  dir,
  durationS: num(values.duration),
  sequences: num(values.sequences),
  minTokens: num(values['min-tokens']),
  maxTokens: num(values['max-tokens']),
  tiers: { raw: values.raw, quantized: values.quantized, host: values.host, disk: values.disk },
  reserve: num(values.reserve),
  backend: values.backend as 'auto' | 'host' | 'gpu' | undefined,
  faults: faults as FaultKind[] | undefined,
  faultEveryS: num(values['fault-every']),
  seed: num(values.seed),
  stepMs: num(values['step-ms']),
  clientThreads: num(values['client-threads']),
  serverProfileDir: values['server-cpu-prof'],
  serverNodeArgs: values['server-node-args']?.split(' ').filter((a) => a.length > 0),
  sampleMs: num(values['sample-ms']),
  events: values.events === undefined ? undefined : values.events === 'true',
  log: (line) => console.log(`[soak] ${line}`),
});
const report = await runSoak(options);
writeFileSync(join(out, 'report.json'), JSON.stringify(report));
drawCharts(report, out);
// The slot file is as large as the disk tier: keep it only when asked.
if (!values.keep) rmSync(join(dir, 'tier2.slots'), { force: true });
console.log(summarize(report));
process.exitCode = report.passed ? 0 : 1;
