/**
 * Spill and fill through the GPU tiers, against the disk's own best rate, in one run.
 *
 *   UV_THREADPOOL_SIZE=64 node dist/bench/gpu/spill-fill.js --dir DIR [--out FILE.json] [--device N] [--blocks N] [--repeats N]
 *     [--only host-tier | --only 4bit --in-flight K]
 *
 * `--device` picks the GPU (an index within CUDA_VISIBLE_DEVICES), so one run per GPU can
 * go at the same time.
 *
 * 1. The disk: 8 parallel dd streams writing and 16 reading with O_DIRECT, 16 MiB blocks,
 *    the same total bytes as the 4-bit spill, in DIR (the tier file's filesystem); 16 and 1
 *    writers, 8 and 1 readers for reference. Ratios are against 8 writers and 16 readers.
 * 2. Spill: quantize N Llama-3-8B-like bf16 blocks (one kernel launch) and write them to
 *    their disk slots, all asked for at once of a disk queue K deep (K writes in flight, as
 *    the store's tiers.disk.inFlight); fill: read them back the same way (verified by
 *    checksum on the GPU) and dequantize (one launch). K is chosen by a sweep of 4-bit
 *    runs, two at each of 4, 8, 16 and 32 (the second pass in reverse order, so that a disk
 *    whose rate drifts during the sweep favours no depth), by their mean rate; the 4-bit
 *    figures are then the median of --repeats fresh runs at that K, as the sweep's best run
 *    is the high end of the disk's noise, not its rate.
 *    Then 3.5 and 2.5 bits and raw (unquantized blocks through the same path), one run
 *    each. Physical rate = bytes that hit the disk; logical rate = bf16 KV bytes moved
 *    between HBM and disk.
 * 3. Single-block fill latency (p50/p99) for a few block sizes.
 * 4. The host tier: N quantized 4-bit blocks demoted from tier 1 (HBM) into pinned host
 *    memory and filled back, slot lists shuffled as the store's are after churn, in calls of
 *    1024 blocks as the store coalesces them; against one DMA transfer of the same bytes
 *    between the same two buffers (consecutive slots), each way. Logical fill rate = bf16
 *    KV bytes / (host-to-device copy + dequantize).
 * Every filled block is dequantized and compared with what was written.
 *
 * `--only 4bit --in-flight K` runs step 2's 4-bit spill and fill alone at K in flight (the
 * median of --repeats runs), so that a restore can be set beside a fill of the same minute
 * (bench/restore/run.sh): this disk's rate drifts by a fifth within minutes.
 */
import { spawn } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { addon, openGpuTiers, Quantizer, type NativeGpuTiers, type QuantParams } from '../../runtime/native.js';

const { values: args } = parseArgs({
  options: {
    dir: { type: 'string', default: '/tmp/spillway-bench' },
    out: { type: 'string' },
    device: { type: 'string', default: '0' },
    blocks: { type: 'string', default: '2048' },
    repeats: { type: 'string', default: '3' },
    only: { type: 'string' },
    'in-flight': { type: 'string', default: '16' },
  },
});
const dir = args.dir;
const outFile = args.out;
const device = Number(args.device);
mkdirSync(dir, { recursive: true });

const GB = 1e9;
const MiB = 2 ** 20;
const LLAMA = { layers: 32, kvHeads: 8, headDim: 128, dtype: 'bf16' as const, variant: 'mse' as const, seed: 0x5eed };

function run(cmd: string, argv: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, argv, { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    p.stderr.on('data', (d) => (err += d));
    p.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`${cmd} ${argv.join(' ')}: ${err}`))));
  });
}

async function dropCaches(): Promise<boolean> {
  try {
    await run('sh', ['-c', 'sync; echo 3 > /proc/sys/vm/drop_caches']);
    return true;
  } catch {
    return false;
  }
}

/** GB/s of `streams` parallel dd processes moving `total` bytes with O_DIRECT. */
async function dd(mode: 'write' | 'read', total: number, streams: number): Promise<number> {
  const per = Math.ceil(total / streams / (16 * MiB));
  // A read uses the files the write of the same stream count made.
  const files = Array.from({ length: streams }, (_, i) => join(dir, `dd-${streams}-${i}`));
  if (mode === 'read') await dropCaches();
  const t = performance.now();
  await Promise.all(files.map((f) => (mode === 'write'
    ? run('dd', ['if=/dev/zero', `of=${f}`, 'bs=16M', `count=${per}`, 'oflag=direct', 'conv=fsync'])
    : run('dd', [`if=${f}`, 'of=/dev/null', 'bs=16M', `count=${per}`, 'iflag=direct']))));
  return (per * 16 * MiB * streams) / ((performance.now() - t) / 1000) / GB;
}

/** Asks for all `count` operations at once: the tiers' disk queue runs its depth of them at a time, as the store's do. */
async function all(count: number, op: (i: number) => Promise<void>): Promise<void> {
  await Promise.all(Array.from({ length: count }, (_, i) => op(i)));
}

function randomBlock(bytes: number, seed: number): Buffer {
  const out = Buffer.alloc(bytes);
  let s = seed >>> 0;
  for (let i = 0; i < bytes; i += 2) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    // bf16 of a value in about [-2, 2): sign, exponent 126-128, random mantissa
    out.writeUInt16LE(((s >>> 31) << 15) | ((126 + ((s >>> 20) % 3)) << 7) | ((s >>> 8) & 0x7f), i);
  }
  return out;
}

function relErr(a: Buffer, b: Buffer): number {
  let e = 0;
  let n = 0;
  const f = new Float32Array(1);
  const u = new Uint32Array(f.buffer);
  for (let i = 0; i < a.length; i += 2) {
    u[0] = a.readUInt16LE(i) << 16;
    const x = f[0]!;
    u[0] = b.readUInt16LE(i) << 16;
    e += (x - f[0]!) ** 2;
    n += x * x;
  }
  return e / n;
}

interface Variant { name: string; bits: number | null }

async function measure(v: Variant, blocks: number, inFlight: number, sources: Buffer[]) {
  const params: QuantParams = { ...LLAMA, tokens: 16, keyBits: v.bits ?? 4, valueBits: v.bits ?? 4 };
  const q = new Quantizer(params);
  const tier: 0 | 1 = v.bits === null ? 0 : 1;
  const payload = tier === 0 ? q.rawBytes : q.quantizedBytes;
  const slotBytes = Math.ceil((payload + 64) / 4096) * 4096;
  const path = join(dir, `tier-${v.name}.slots`);
  const tiers = openGpuTiers({ params, rawSlots: blocks, quantSlots: tier === 1 ? blocks : 1, hostSlots: 0, diskPath: path, diskSlots: blocks, diskSlotBytes: slotBytes, direct: true, io: 'auto', device, inFlight })!;
  try {
    for (let i = 0; i < blocks; i++) await tiers.writeRaw(i, sources[i % sources.length]!);
    const slots = Uint32Array.from({ length: blocks }, (_, i) => i);
    let t = performance.now();
    if (tier === 1) await tiers.quantize(slots, slots);
    const quantizeS = (performance.now() - t) / 1000;
    t = performance.now();
    await all(blocks, (i) => tiers.spill(tier, i, i, i + 1, 1));
    const writeS = (performance.now() - t) / 1000;
    await dropCaches();
    t = performance.now();
    await all(blocks, (i) => tiers.fill(tier, i, i, i + 1, 1));
    const readS = (performance.now() - t) / 1000;
    t = performance.now();
    if (tier === 1) await tiers.dequantize(slots, slots);
    const dequantizeS = (performance.now() - t) / 1000;
    let worst = 0;
    for (let i = 0; i < blocks; i += Math.max(1, Math.floor(blocks / 16))) {
      const back = await tiers.readSlot(0, i);
      worst = Math.max(worst, relErr(sources[i % sources.length]!, back));
    }
    const physical = blocks * slotBytes;
    const logical = blocks * q.rawBytes;
    return {
      variant: v.name, blocks, inFlight, io: tiers.info().io, cufileMode: tiers.info().cufileMode,
      physicalBytes: physical, logicalBytes: logical,
      spill: { physicalGBps: physical / writeS / GB, logicalGBps: logical / (quantizeS + writeS) / GB, quantizeS, writeS },
      fill: { physicalGBps: physical / readS / GB, logicalGBps: logical / (readS + dequantizeS) / GB, dequantizeS, readS },
      worstRelativeError: worst,
    };
  } finally {
    tiers.close();
    rmSync(path, { force: true });
  }
}

async function fillLatency(tokens: number, samples: number) {
  const params: QuantParams = { ...LLAMA, tokens, keyBits: 4, valueBits: 4 };
  const q = new Quantizer(params);
  const slotBytes = Math.ceil((q.quantizedBytes + 64) / 4096) * 4096;
  const path = join(dir, `latency-${tokens}.slots`);
  const tiers = openGpuTiers({ params, rawSlots: 1, quantSlots: samples, hostSlots: 0, diskPath: path, diskSlots: samples, diskSlotBytes: slotBytes, direct: true, io: 'auto', device })!;
  try {
    await tiers.writeRaw(0, randomBlock(q.rawBytes, tokens));
    const zero = Uint32Array.of(0);
    for (let i = 0; i < samples; i++) {
      await tiers.quantize(zero, Uint32Array.of(i));
      await tiers.spill(1, i, i, i + 1, 1);
    }
    await dropCaches();
    const times: number[] = [];
    for (let i = 0; i < samples; i++) {
      const t = performance.now();
      await tiers.fill(1, i, i, i + 1, 1);
      await tiers.dequantize(Uint32Array.of(i), zero);
      times.push(performance.now() - t);
    }
    times.sort((a, b) => a - b);
    return { tokensPerBlock: tokens, rawBytes: q.rawBytes, diskBytes: slotBytes, p50ms: times[Math.floor(samples * 0.5)]!, p99ms: times[Math.floor(samples * 0.99)]! };
  } finally {
    tiers.close();
    rmSync(path, { force: true });
  }
}

/** Median seconds of three runs of `op`. */
async function median3(op: () => Promise<void>): Promise<number> {
  const times: number[] = [];
  for (let i = 0; i < 3; i++) {
    const t = performance.now();
    await op();
    times.push((performance.now() - t) / 1000);
  }
  return times.sort((a, b) => a - b)[1]!;
}

/** Calls `copy` over the slot lists in pieces of at most `batch` blocks, one after another. */
async function inBatches(from: Uint32Array, to: Uint32Array, batch: number, copy: (f: Uint32Array, t: Uint32Array) => Promise<void>): Promise<void> {
  for (let i = 0; i < from.length; i += batch) await copy(from.subarray(i, i + batch), to.subarray(i, i + batch));
}

async function hostTier(blocks: number, sources: Buffer[]) {
  const params: QuantParams = { ...LLAMA, tokens: 16, keyBits: 4, valueBits: 4 };
  const q = new Quantizer(params);
  const path = join(dir, 'host-tier.slots');
  const tiers = openGpuTiers({ params, rawSlots: blocks, quantSlots: blocks, hostSlots: blocks, diskPath: path, diskSlots: 1, diskSlotBytes: Math.ceil((q.quantizedBytes + 64) / 4096) * 4096, direct: true, io: 'auto', device })!;
  try {
    for (let i = 0; i < blocks; i++) await tiers.writeRaw(i, sources[i % sources.length]!);
    const ordered = Uint32Array.from({ length: blocks }, (_, i) => i);
    await tiers.quantize(ordered, ordered);
    // A fixed shuffle (Fisher-Yates over a small LCG): host slots after churn are in no order.
    const shuffled = ordered.slice();
    let r = 12345;
    for (let i = blocks - 1; i > 0; i--) {
      r = (Math.imul(r, 1664525) + 1013904223) >>> 0;
      const j = r % (i + 1);
      [shuffled[i], shuffled[j]] = [shuffled[j]!, shuffled[i]!];
    }
    const bytes = blocks * q.quantizedBytes;
    const d2hOne = await median3(() => tiers.copy(1, ordered, 2, ordered));
    const demote = await median3(() => inBatches(ordered, shuffled, 1024, (f, t) => tiers.copy(1, f, 2, t)));
    const h2dOne = await median3(() => tiers.copy(2, ordered, 1, ordered));
    const fill = await median3(() => inBatches(shuffled, ordered, 1024, (f, t) => tiers.copy(2, f, 1, t)));
    const t = performance.now();
    await tiers.dequantize(ordered, ordered);
    const dequantizeS = (performance.now() - t) / 1000;
    let worst = 0;
    for (let i = 0; i < blocks; i += Math.max(1, Math.floor(blocks / 16))) {
      worst = Math.max(worst, relErr(sources[i % sources.length]!, await tiers.readSlot(0, i)));
    }
    return {
      blocks, quantizedBytes: bytes, logicalBytes: blocks * q.rawBytes,
      pinnedCopy: { deviceToHostGBps: bytes / d2hOne / GB, hostToDeviceGBps: bytes / h2dOne / GB },
      demote: { physicalGBps: bytes / demote / GB, vsPinnedCopy: d2hOne / demote },
      fill: { physicalGBps: bytes / fill / GB, vsPinnedCopy: h2dOne / fill, logicalGBps: (blocks * q.rawBytes) / (fill + dequantizeS) / GB, dequantizeS },
      worstRelativeError: worst,
    };
  } finally {
    tiers.close();
    rmSync(path, { force: true });
  }
}

/** The 4-bit spill and fill at `k` in flight: the median (by logical fill rate) of --repeats fresh runs, with each run's physical rates. */
async function fourBitAt(k: number, blocks: number, sources: Buffer[]) {
  const runs = [];
  for (let i = 0; i < Math.max(1, Number(args.repeats)); i++) runs.push(await measure({ name: '4bit', bits: 4 }, blocks, k, sources));
  const byFill = [...runs].sort((a, b) => a.fill.logicalGBps - b.fill.logicalGBps);
  const repeats = runs.map((r) => ({ spill: r.spill.physicalGBps, fill: r.fill.physicalGBps }));
  return { ...byFill[(byFill.length - 1) >> 1]!, repeats };
}

async function main() {
  const probe = await addon.probe(device);
  if (!probe.gpu.present || !addon.GpuTiers) throw new Error(`needs a GPU: ${probe.gpu.error}`);
  const blocks = Number(args.blocks);
  const sources = Array.from({ length: 16 }, (_, i) => randomBlock(32 * 2 * 8 * 16 * 128 * 2, i + 1));
  if (args.only === 'host-tier') {
    // The host tier alone (--only host-tier): no disk involved.
    const host = await hostTier(blocks, sources);
    console.log(JSON.stringify(host, null, 2));
    if (outFile) writeFileSync(outFile, JSON.stringify({ device: probe.gpu.name, hostTier: host }, null, 2));
    return;
  }
  if (args.only === '4bit') {
    const k = Number(args['in-flight']);
    if (!Number.isInteger(k) || k < 1) throw new Error(`--in-flight must be a positive integer, got ${args['in-flight']}`);
    const report = { device: { index: device, name: probe.gpu.name, pciBusId: probe.gpu.pciBusId }, chosenInFlight: k, variants: [await fourBitAt(k, blocks, sources)] };
    console.log(JSON.stringify(report.variants[0]));
    if (outFile) writeFileSync(outFile, JSON.stringify(report, null, 2));
    return;
  }
  const depths = [4, 8, 16, 32];
  const sweep: Array<Awaited<ReturnType<typeof measure>>> = [];
  for (const k of [...depths, ...[...depths].reverse()]) sweep.push(await measure({ name: '4bit', bits: 4 }, blocks, k, sources));
  const atDepth = depths.map((d) => {
    const runs = sweep.filter((s) => s.inFlight === d);
    const mean = (dirn: 'spill' | 'fill') => runs.reduce((sum, r) => sum + r[dirn].physicalGBps, 0) / runs.length;
    return { inFlight: d, spill: mean('spill'), fill: mean('fill'), runs: runs.map((r) => ({ spill: r.spill.physicalGBps, fill: r.fill.physicalGBps })) };
  });
  const best = (dirn: 'spill' | 'fill') => atDepth.reduce((a, b) => (b[dirn] > a[dirn] ? b : a)).inFlight;
  const k = Math.max(best('spill'), best('fill'));
  const fourBit = await fourBitAt(k, blocks, sources);
  const repeats = fourBit.repeats;
  const variants: Array<Awaited<ReturnType<typeof measure>>> = [fourBit];
  for (const v of [{ name: '3.5bit', bits: 3.5 }, { name: '2.5bit', bits: 2.5 }, { name: 'raw', bits: null }]) {
    variants.push(await measure(v, v.bits === null ? blocks / 4 : blocks, k, sources));
  }
  const total = variants[0]!.physicalBytes;
  const disk = {
    totalBytes: total,
    write8: await dd('write', total, 8), write16: await dd('write', total, 16), write1: await dd('write', total, 1),
    read16: await dd('read', total, 16), read8: await dd('read', total, 8), read1: await dd('read', total, 1),
  };
  for (const n of [1, 8, 16]) for (let i = 0; i < n; i++) rmSync(join(dir, `dd-${n}-${i}`), { force: true });
  const latency = [await fillLatency(16, 200), await fillLatency(64, 100)];
  const host = await hostTier(blocks, sources);
  const report = {
    device: { index: device, name: probe.gpu.name, pciBusId: probe.gpu.pciBusId }, cufile: probe.cufile, disk, inFlightSweep: atDepth,
    chosenInFlight: k, variants, latency, hostTier: host,
    ratios: variants.map((v) => ({
      variant: v.variant,
      spillPhysicalVsDisk: v.spill.physicalGBps / disk.write8, fillPhysicalVsDisk: v.fill.physicalGBps / disk.read16,
      spillLogicalVsDisk: v.spill.logicalGBps / disk.write8, fillLogicalVsDisk: v.fill.logicalGBps / disk.read16,
    })),
  };
  const f = (x: number) => x.toFixed(2);
  const table = [
    `disk (dd O_DIRECT, ${f(total / GB)} GB): write ${f(disk.write8)} GB/s (8 streams; 16: ${f(disk.write16)}; 1: ${f(disk.write1)}), read ${f(disk.read16)} GB/s (16 streams; 8: ${f(disk.read8)}; 1: ${f(disk.read1)})`,
    `in flight (mean of ${atDepth[0]!.runs.length} runs): ${atDepth.map((d) => `${d.inFlight}: spill ${f(d.spill)} fill ${f(d.fill)}`).join('; ')} -> ${k}`,
    `4-bit at ${k} in flight, ${repeats.length} fresh runs (the median below): ${repeats.map((r) => `spill ${f(r.spill)} fill ${f(r.fill)}`).join('; ')}`,
    '| variant | io | spill phys GB/s (vs disk) | spill logical GB/s (x disk) | fill phys GB/s (vs disk) | fill logical GB/s (x disk) | worst rel. error |',
    '| --- | --- | --- | --- | --- | --- | --- |',
    ...variants.map((v, i) => {
      const r = report.ratios[i]!;
      return `| ${v.variant} | ${v.io}${v.cufileMode ? ` (${v.cufileMode})` : ''} | ${f(v.spill.physicalGBps)} (${f(r.spillPhysicalVsDisk)}) | ${f(v.spill.logicalGBps)} (${f(r.spillLogicalVsDisk)}x) | ${f(v.fill.physicalGBps)} (${f(r.fillPhysicalVsDisk)}) | ${f(v.fill.logicalGBps)} (${f(r.fillLogicalVsDisk)}x) | ${v.worstRelativeError.toExponential(2)} |`;
    }),
    ...latency.map((l) => `single-block fill + dequantize, ${l.tokensPerBlock} tokens (${f(l.rawBytes / MiB)} MiB raw, ${f(l.diskBytes / MiB)} MiB on disk): p50 ${f(l.p50ms)} ms, p99 ${f(l.p99ms)} ms`),
    `host tier, ${host.blocks} 4-bit blocks (${f(host.quantizedBytes / GB)} GB): demote HBM -> host ${f(host.demote.physicalGBps)} GB/s = ${f(host.demote.vsPinnedCopy)} of one pinned device-to-host copy (${f(host.pinnedCopy.deviceToHostGBps)} GB/s); `
      + `fill host -> HBM ${f(host.fill.physicalGBps)} GB/s = ${f(host.fill.vsPinnedCopy)} of one pinned host-to-device copy (${f(host.pinnedCopy.hostToDeviceGBps)} GB/s), ${f(host.fill.logicalGBps)} GB/s logical with dequantize; worst rel. error ${host.worstRelativeError.toExponential(2)}`,
  ].join('\n');
  console.log(table);
  if (outFile) {
    writeFileSync(outFile, JSON.stringify(report, null, 2));
    writeFileSync(outFile.replace(/\.json$/, '.md'), table + '\n');
  }
}

await main();
