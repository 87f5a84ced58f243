/**
 * `spillway doctor`: what the machine offers and what spillway will do with it.
 */
import { mkdirSync, readFileSync, rmSync } from 'node:fs';
import { freemem } from 'node:os';
import { dirname, join } from 'node:path';
import { formatGiB, GiB } from './bytes.js';
import type { Config } from './config.js';
import { chooseBackend, hostMemoryNeeded, probeFor } from './open.js';
import { addon, openSlotFile, type ProbeResult } from './native.js';
import { computeLayout, DISK_ALIGN, tierNamed, type Layout } from './layout.js';
import { scanDiskTier } from './recovery.js';
import { formatRecovery, type RecoveryReport } from './recovery-report.js';
import { formatBudget, memoryBudget } from './weights/model.js';
import { formatWeightsReport, weightsReport } from './weights/report.js';

export interface DiskReport {
  directory: string;
  filesystem: string;
  device: string;
  directIo: { works: boolean; detail: string };
}

/** The mount holding `path`: the longest mount point in /proc/mounts that prefixes it. */
function mountOf(path: string): { fs: string; device: string } {
  let best = { point: '', fs: 'unknown', device: 'unknown' };
  try {
    for (const line of readFileSync('/proc/mounts', 'utf8').split('\n')) {
      const [device, point, fs] = line.split(' ');
      if (!device || !point || !fs) continue;
      const within = path === point || path.startsWith(point.endsWith('/') ? point : point + '/');
      if (within && point.length >= best.point.length) best = { point, fs, device };
    }
  } catch {
    // no /proc: leave unknown
  }
  return { fs: best.fs, device: best.device };
}

/** Writes and reads one slot with O_DIRECT in the disk tier's folder, then removes it. */
async function probeDirectIo(directory: string): Promise<DiskReport['directIo']> {
  const file = join(directory, `.spillway-doctor-${process.pid}`);
  try {
    mkdirSync(directory, { recursive: true });
    const slots = openSlotFile(file, DISK_ALIGN, 1, true);
    try {
      const info = slots.info();
      const out = Buffer.alloc(128, 7);
      const back = Buffer.alloc(128);
      await slots.write(0, 1, 1, out, 0, out.length);
      await slots.read(0, 1, 1, back, 0, back.length);
      if (!back.equals(out)) return { works: false, detail: 'read back differs from what was written' };
      return info.direct
        ? { works: true, detail: 'O_DIRECT write and read of a 4 KiB slot succeeded' }
        : { works: false, detail: info.directReason };
    } finally {
      slots.close();
    }
  } catch (err) {
    return { works: false, detail: (err as Error).message };
  } finally {
    rmSync(file, { force: true });
  }
}

export async function diskReport(config: Config): Promise<DiskReport> {
  const directory = dirname(config.tiers.disk.path);
  const mount = mountOf(directory);
  return { directory, filesystem: mount.fs, device: mount.device, directIo: await probeDirectIo(directory) };
}

/** `weights` (a checkpoint to dry-run) overrides `config.weights.source`. */
export async function doctor(config: Config, weights?: string) {
  const probe: ProbeResult = await probeFor(config);
  let backend: { name: 'host' | 'gpu' | 'none'; reason: string };
  try {
    backend = chooseBackend(config, probe);
  } catch (err) {
    backend = { name: 'none', reason: (err as Error).message };
  }
  const source = weights ?? config.weights.source;
  const weightsFound = source === undefined ? undefined : await weightsReport({ ...config.weights, source });
  const memory = backend.name === 'none' ? undefined : memoryBudget(config, backend.name, probe, weightsFound?.rankBytes[config.weights.rank] ?? 0);
  const layout = computeLayout(config);
  const recovery = await recoveryDryRun(config, layout, backend.name === 'gpu' ? 'gpu' : 'host');
  return {
    probe, visibleDevices: process.env.CUDA_VISIBLE_DEVICES ?? null, disk: await diskReport(config), backend,
    cpuThreads: addon.poolThreads, memory, hostTier: hostTierReport(layout, backend.name), weights: weightsFound, recovery,
  };
}

/** The host tier as configured, against the host memory available now, as `serve` checks it (checkHostMemory). */
function hostTierReport(layout: Layout, backend: 'host' | 'gpu' | 'none') {
  const tier = tierNamed(layout, 'host');
  const { host, memoryTiers } = hostMemoryNeeded(layout, backend);
  const availableBytes = freemem();
  return { bytes: host, slots: tier?.slots ?? 0, tokens: tier?.tokens ?? 0, availableBytes, fits: host + memoryTiers <= availableBytes };
}

function formatHostTier(h: ReturnType<typeof hostTierReport>): string {
  if (h.slots === 0) return `none configured (tiers.host.bytes); ${formatGiB(h.availableBytes)} of host memory available`;
  return `${formatGiB(h.bytes)}: ${h.slots} blocks, ${h.tokens} tokens; ${formatGiB(h.availableBytes)} available: ${h.fits ? 'fits' : 'does not fit'}`;
}

/** What `serve` would recover from the disk tier now (read-only), or why it cannot tell. */
async function recoveryDryRun(config: Config, layout: Layout, backend: 'host' | 'gpu'): Promise<RecoveryReport | { error: string }> {
  try {
    return (await scanDiskTier(config, layout, backend)).report;
  } catch (err) {
    return { error: (err as Error).message };
  }
}

function cudaVersion(v: number): string {
  return v ? `${Math.floor(v / 1000)}.${(v % 1000) / 10}` : 'none';
}

/** One line per visible GPU; the configured one is marked. */
function formatGpus(r: Awaited<ReturnType<typeof doctor>>): string[] {
  const mask = r.visibleDevices === null ? '' : ` (CUDA_VISIBLE_DEVICES=${r.visibleDevices})`;
  return r.probe.gpus.map((d, i) => `  ${i === 0 ? `GPUs:${mask}`.padEnd(14) : ''.padEnd(14)}${d.index === r.probe.gpu.device ? '*' : ' '}${d.index} ${d.name} (sm_${d.computeCapability.replace('.', '')}), PCI ${d.pciBusId}, ${(d.totalBytes / GiB).toFixed(1)} GiB`);
}

export function formatDoctor(r: Awaited<ReturnType<typeof doctor>>): string {
  const g = r.probe.gpu;
  const lines = [
    'spillway doctor',
    `  GPU:          ${g.present ? `gpu.device ${g.device}: ${g.name} (sm_${g.computeCapability.replace('.', '')}), PCI ${g.pciBusId}, ${(g.totalBytes / GiB).toFixed(1)} GiB, ${(g.freeBytes / GiB).toFixed(1)} GiB free` : `none: ${g.error}`}`,
    ...formatGpus(r),
    `  CUDA:         driver ${cudaVersion(g.driverVersion)}, runtime ${cudaVersion(g.runtimeVersion)}; addon ${r.probe.cudaBuilt ? 'built with CUDA kernels' : 'built host-only'}`,
    `  cuFile:       ${r.probe.cufile.status}: ${r.probe.cufile.detail}${r.probe.cufile.nvfsVersion ? ` (nvidia-fs ${r.probe.cufile.nvfsVersion})` : ''}`,
    `  disk tier:    ${r.disk.directory} on ${r.disk.filesystem} (${r.disk.device})`,
    `  O_DIRECT:     ${r.disk.directIo.works ? 'works' : 'does not work'}: ${r.disk.directIo.detail}`,
    `  CPU threads:  ${r.cpuThreads} for the host quantizer`,
    `  backend:      ${r.backend.name}: ${r.backend.reason}`,
    ...(r.memory ? [`  memory:       ${formatBudget(r.memory)}`] : []),
    `  host tier:    ${formatHostTier(r.hostTier)}`,
    `  recovery:     ${'error' in r.recovery ? `cannot scan the disk tier: ${r.recovery.error}` : formatRecovery(r.recovery)}`,
    ...(r.weights ? formatWeightsReport(r.weights) : []),
  ];
  return lines.join('\n');
}
