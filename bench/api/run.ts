/**
 * HTTP API throughput and latency: `npm run bench:api`.
 *
 * Starts spillway as `npm start` does (the CLI's serve, in its own process, on 127.0.0.1)
 * with a small block geometry, and a bare fastify app as the ceiling (its JSON GET is what
 * "vs bare" divides by; its JSON POST shows what a request body costs by itself), then
 * drives each operation with autocannon at CONNECTIONS connections: requests per second
 * from autocannon, p50/p99 from every response's own latency, and the server's CPU time
 * per request. Writes bench/api/report.json and bench/api/report.md.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import autocannon from 'autocannon';
import { SpillwayClient } from '../../api/client.js';
import { projectRoot } from '../../runtime/config.js';

const CONNECTIONS = 32;
const DURATION_S = Number(process.env.BENCH_DURATION_S ?? 2);
const ROUNDS = 5;
const WARMUP_S = 1;
const WRITE_BLOCKS = 256;
/** 2 layers x 2 KV heads x 4 tokens x 64 dims of bf16: a 4 KiB block. */
const MODEL = { layers: 2, kvHeads: 2, headDim: 64, tokensPerBlock: 4, dtype: 'bf16' };
const BLOCK_BYTES = 4096;
const HOST = '127.0.0.1';

interface Op {
  name: string;
  kind: 'ceiling' | 'control' | 'data';
  what: string;
  port: number;
  pid: number;
  request: () => { method: 'GET' | 'POST' | 'PUT'; path: string; body?: string | Buffer; headers?: Record<string, string> };
  /** Puts the server back as it was, so that each round starts alike. */
  reset?: () => Promise<void>;
}

interface Measured {
  name: string;
  kind: Op['kind'];
  what: string;
  requests: number;
  requestsPerSecond: number;
  /** Each round's requests per second, in the order run: how much the machine's other work moved them. */
  roundsRequestsPerSecond: number[];
  p50Ms: number;
  p99Ms: number;
  ratioToBare: number;
  /** The server process's CPU time (user + system) per request: what a request costs, whatever else runs on the machine. */
  serverCpuUsPerRequest: number;
  non2xx: number;
  errors: number;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.listen(0, HOST, () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

/** utime + stime of a process in microseconds (Linux /proc, in USER_HZ ticks of 1/100 s). */
function cpuMicros(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return ((Number(fields[11]) + Number(fields[12])) * 1e6) / 100;
}

function percentile(sorted: Float64Array, p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]!;
}

async function waitFor(url: string, child: ChildProcess, output: () => string): Promise<void> {
  for (let i = 0; i < 150; i++) {
    if (child.exitCode !== null) throw new Error(`${url}: the server exited: ${output()}`);
    try {
      if ((await fetch(url)).ok) return;
    } catch {
      // not listening yet
    }
    await sleep(100);
  }
  throw new Error(`${url} did not answer: ${output()}`);
}

function start(args: string[], env: NodeJS.ProcessEnv = {}): { child: ChildProcess; output: () => string } {
  const child = spawn(process.execPath, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (d) => (out = (out + d).slice(-4000)));
  child.stderr!.on('data', (d) => (out = (out + d).slice(-4000)));
  return { child, output: () => out };
}

async function measure(op: Op, seconds: number): Promise<{ result: autocannon.Result; latencies: Float64Array }> {
  const latencies: number[] = [];
  const result = await new Promise<autocannon.Result>((resolve, reject) => {
    const instance = autocannon({
      url: `http://${HOST}:${op.port}`,
      connections: CONNECTIONS,
      duration: seconds,
      requests: [{ setupRequest: (req) => ({ ...req, ...op.request() }) }],
    }, (err, res) => (err ? reject(err) : resolve(res)));
    instance.on('response', (_client, statusCode, _bytes, responseTime) => {
      if (statusCode < 300) latencies.push(responseTime);
    });
  });
  return { result, latencies: Float64Array.from(latencies).sort() };
}

function markdown(rows: Measured[], meta: Record<string, unknown>): string {
  const lines = [
    '# HTTP API benchmark',
    '',
    `\`npm run bench:api\`: ${meta.connections} connections; ${ROUNDS} rounds through all operations, ${meta.durationSeconds} s each, after ${WARMUP_S} s of warm-up; requests/s and latencies are the median round's, p50/p99 over every response of it.`,
    `Load generator (autocannon) and server share the machine: ${meta.cpus} x ${meta.cpuModel}, Node ${meta.node}; load average ${meta.loadAverageBefore} before the run.`,
    'Server CPU is the server process\'s user + system time per request (its libuv threads included): the cost of a request whatever else the machine runs.',
    `spillway runs as \`spillway serve\` does; the ceiling ("vs bare") is a bare fastify app's JSON GET; its JSON POST shows what a request body costs by itself. Blocks are ${BLOCK_BYTES} bytes.`,
    '',
    '| operation | what | requests/s | p50 ms | p99 ms | vs bare | server CPU µs/request | requests/s by round |',
    '| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |',
    ...rows.map((r) => `| ${r.name} | ${r.what} | ${Math.round(r.requestsPerSecond)} | ${r.p50Ms.toFixed(2)} | ${r.p99Ms.toFixed(2)} | ${r.ratioToBare.toFixed(2)} | ${r.serverCpuUsPerRequest.toFixed(1)} | ${r.roundsRequestsPerSecond.join(' ')} |`),
    '',
    `Targets for control operations (at least half the bare route's rate, p99 under 5 ms): ${meta.targetsMet ? 'met' : 'not met'}.`,
    ...((meta.failures as string[]).length ? ['', ...(meta.failures as string[]).map((f) => `- ${f}`)] : []),
    '',
  ];
  return lines.join('\n');
}

async function main(): Promise<void> {
  // Other work on the machine shows in the figures: say how busy it was.
  const loadBefore = Number(loadavg()[0]!.toFixed(2));
  const dir = mkdtempSync(join(tmpdir(), 'spillway-bench-api-'));
  const PORTS = { spillway: await freePort(), bare: await freePort() };
  const configFile = join(dir, 'config.json');
  writeFileSync(configFile, JSON.stringify({
    model: MODEL,
    tiers: { raw: { bytes: '64MiB' }, quantized: { bytes: '64MiB' }, disk: { path: join(dir, 'tier2.slots'), bytes: '16MiB' } },
    limits: { maxLiveSequences: 1024 },
    server: { host: HOST },
  }));
  const spillway = start([join(projectRoot, 'dist', 'runtime', 'cli.js'), 'serve', '--config', configFile], { PORT: String(PORTS.spillway) });
  const bare = start([join(projectRoot, 'dist', 'bench', 'api', 'bare.js'), String(PORTS.bare)]);
  try {
    await waitFor(`http://${HOST}:${PORTS.spillway}/v1/health`, spillway.child, spillway.output);
    await waitFor(`http://${HOST}:${PORTS.bare}/bare`, bare.child, bare.output);

    const client = new SpillwayClient({ baseUrl: `http://${HOST}:${PORTS.spillway}` });
    await client.createSequence({ id: 'w' });
    await client.allocate('w', WRITE_BLOCKS);
    const block = Buffer.alloc(BLOCK_BYTES, 0x3c);
    for (let i = 0; i < WRITE_BLOCKS; i++) await client.writeBlock('w', i, block);
    const allocationSequences = async (free: boolean) => {
      for (let s = 0; s < CONNECTIONS; s++) {
        if (free) await client.freeSequence(`a${s}`);
        await client.createSequence({ id: `a${s}` });
      }
    };
    await allocationSequences(false);

    let n = 0;
    const json = { 'content-type': 'application/json' };
    const ops: Op[] = [
      { name: 'bare', kind: 'ceiling', what: 'GET /bare (bare fastify)', port: PORTS.bare, pid: bare.child.pid!, request: () => ({ method: 'GET', path: '/bare' }) },
      {
        name: 'bare POST', kind: 'ceiling', what: 'POST /bare/:id {count: 1} (bare fastify)', port: PORTS.bare, pid: bare.child.pid!,
        request: () => ({ method: 'POST', path: '/bare/x', body: '{"count":1}', headers: json }),
      },
      { name: 'health', kind: 'control', what: 'GET /v1/health', port: PORTS.spillway, pid: spillway.child.pid!, request: () => ({ method: 'GET', path: '/v1/health' }) },
      { name: 'status', kind: 'control', what: `GET /v1/status (${WRITE_BLOCKS} blocks held)`, port: PORTS.spillway, pid: spillway.child.pid!, request: () => ({ method: 'GET', path: '/v1/status' }) },
      { name: 'limits', kind: 'control', what: 'GET /v1/limits', port: PORTS.spillway, pid: spillway.child.pid!, request: () => ({ method: 'GET', path: '/v1/limits' }) },
      {
        name: 'write', kind: 'data', what: `PUT a ${BLOCK_BYTES}-byte block (octet-stream)`, port: PORTS.spillway, pid: spillway.child.pid!,
        request: () => ({ method: 'PUT', path: `/v1/sequences/w/blocks/${n++ % WRITE_BLOCKS}`, body: block, headers: { 'content-type': 'application/octet-stream' } }),
      },
      { name: 'read', kind: 'data', what: `GET a ${BLOCK_BYTES}-byte block`, port: PORTS.spillway, pid: spillway.child.pid!, request: () => ({ method: 'GET', path: `/v1/sequences/w/blocks/${n++ % WRITE_BLOCKS}` }) },
      {
        name: 'allocate', kind: 'control', what: 'POST /v1/sequences/:id/blocks {count: 1}', port: PORTS.spillway, pid: spillway.child.pid!, reset: () => allocationSequences(true),
        request: () => ({ method: 'POST', path: `/v1/sequences/a${n++ % CONNECTIONS}/blocks`, body: '{"count":1}', headers: json }),
      },
    ];

    // Rounds go through every operation in turn, so that a change in what else the machine
    // runs falls on all of them alike; each figure is the median round.
    for (const op of ops) {
      await measure(op, WARMUP_S);
      await op.reset?.();
    }
    const rounds = ops.map(() => [] as Array<{ rps: number; requests: number; cpu: number; latencies: Float64Array; non2xx: number; errors: number }>);
    for (let round = 0; round < ROUNDS; round++) {
      for (const [k, op] of ops.entries()) {
        const cpuBefore = cpuMicros(op.pid);
        const { result, latencies } = await measure(op, DURATION_S);
        const cpu = cpuMicros(op.pid) - cpuBefore;
        const requests = result.requests.total;
        const rps = requests / result.duration;
        await op.reset?.();
        rounds[k]!.push({ rps, requests, cpu, latencies, non2xx: result.non2xx, errors: result.errors + result.timeouts });
        console.log(`round ${round + 1} ${op.name.padEnd(9)} ${Math.round(rps).toString().padStart(7)} req/s  p50 ${percentile(latencies, 0.5).toFixed(2)} ms  p99 ${percentile(latencies, 0.99).toFixed(2)} ms  server CPU ${(cpu / requests).toFixed(1)} us/req`);
      }
    }
    const rows: Measured[] = ops.map((op, k) => {
      const runs = [...rounds[k]!].sort((a, b) => a.rps - b.rps);
      const median = runs[Math.floor(runs.length / 2)]!;
      const requests = runs.reduce((sum, r) => sum + r.requests, 0);
      return {
        name: op.name, kind: op.kind, what: op.what, requests,
        requestsPerSecond: median.rps,
        roundsRequestsPerSecond: rounds[k]!.map((r) => Math.round(r.rps)),
        p50Ms: percentile(median.latencies, 0.5), p99Ms: percentile(median.latencies, 0.99),
        ratioToBare: 0, serverCpuUsPerRequest: runs.reduce((sum, r) => sum + r.cpu, 0) / requests,
        non2xx: runs.reduce((sum, r) => sum + r.non2xx, 0), errors: runs.reduce((sum, r) => sum + r.errors, 0),
      };
    });
    const ceiling = rows[0]!.requestsPerSecond;
    for (const r of rows) r.ratioToBare = r.requestsPerSecond / ceiling;

    const failures = [
      ...rows.filter((r) => r.non2xx > 0 || r.errors > 0).map((r) => `${r.name}: ${r.non2xx} non-2xx answers and ${r.errors} errors`),
      ...rows.filter((r) => r.kind === 'control' && r.ratioToBare < 0.5).map((r) => `${r.name}: ${r.ratioToBare.toFixed(2)} of the bare route's rate (target 0.5)`),
      ...rows.filter((r) => r.kind === 'control' && r.p99Ms >= 5).map((r) => `${r.name}: p99 ${r.p99Ms.toFixed(2)} ms (target under 5)`),
    ];
    const meta = {
      connections: CONNECTIONS, durationSeconds: DURATION_S, cpus: cpus().length, cpuModel: cpus()[0]?.model ?? 'unknown',
      loadAverageBefore: loadBefore,
      node: process.versions.node, targetsMet: failures.length === 0, failures,
    };
    const report = { ...meta, date: new Date().toISOString(), blockBytes: BLOCK_BYTES, model: MODEL, operations: rows };
    writeFileSync(join(projectRoot, 'bench', 'api', 'report.json'), `${JSON.stringify(report, null, 2)}\n`);
    writeFileSync(join(projectRoot, 'bench', 'api', 'report.md'), markdown(rows, meta));
    console.log(`\ntargets ${meta.targetsMet ? 'met' : `not met:\n  ${failures.join('\n  ')}`}\nwrote bench/api/report.json and bench/api/report.md`);
  } finally {
    spillway.child.kill('SIGTERM');
    bare.child.kill('SIGTERM');
    await Promise.all([spillway.child, bare.child].map((c) => (c.exitCode === null ? new Promise((r) => c.once('exit', r)) : undefined)));
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
