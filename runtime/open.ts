/**
 * Opens a store on the backend the machine supports: the probe says what is there, the
 * configuration what is wanted, and the choice and its reason are kept for status.
 */
import { freemem } from 'node:os';
import { performance } from 'node:perf_hooks';
import type { Backend } from './backends/backend.js';
import { GpuBackend } from './backends/gpu.js';
import { HostBackend } from './backends/host.js';
import { formatGiB } from './bytes.js';
import type { Config } from './config.js';
import { errors, SpillwayError } from './errors.js';
import { computeLayout, tierNamed, type Layout } from './layout.js';
import { addon, takeTaskTimings, type ProbeResult } from './native.js';
import { scanDiskTier } from './recovery.js';
import { SharedTier } from './shared-tier.js';
import { BlockStore } from './store.js';

export interface BackendChoice {
  name: 'host' | 'gpu';
  reason: string;
}

/** What the machine offers, with the memory of the configured GPU. */
export function probeFor(config: Config): Promise<ProbeResult> {
  return addon.probe(config.gpu.device);
}

/**
 * Refuses a `gpu.device` past the visible GPUs: a mistyped index must not fall back to the
 * host backend or another GPU. With no GPU at all the index is not checked (the host
 * backend needs none, and backend "gpu" is refused for the missing GPU).
 */
function assertDeviceVisible(config: Config, probe: ProbeResult): void {
  const { device } = config.gpu;
  const visible = probe.gpu.count;
  if (visible === 0 || device < visible) return;
  const mask = process.env.CUDA_VISIBLE_DEVICES;
  const within = mask === undefined ? '' : ` (CUDA_VISIBLE_DEVICES=${mask}; indices count within it)`;
  throw errors.badConfig('gpu.device', `${device} is not a visible GPU: ${visible} visible, indices 0 to ${visible - 1}${within}`, { field: 'gpu.device', visible });
}

/** GPU where the machine has one and the addon has CUDA, unless configured otherwise. */
export function chooseBackend(config: Config, probe: ProbeResult): BackendChoice {
  if (config.backend === 'host') return { name: 'host', reason: 'host backend requested by configuration' };
  assertDeviceVisible(config, probe);
  const gpuUsable = probe.gpu.present && probe.cudaBuilt && addon.GpuTiers !== undefined;
  if (gpuUsable) {
    const how = config.backend === 'gpu' ? 'requested by configuration' : 'chosen automatically';
    const g = probe.gpu;
    return { name: 'gpu', reason: `GPU ${g.device} ${g.name} (sm_${g.computeCapability.replace('.', '')}, PCI ${g.pciBusId}) found; GPU backend ${how}` };
  }
  const why = !probe.cudaBuilt ? 'the addon was built without CUDA (nvcc was not found at build time)' : `no usable GPU (${probe.gpu.error})`;
  if (config.backend === 'gpu') throw new SpillwayError('INVALID_CONFIG', `backend "gpu" requested, but ${why}`, { field: 'backend' });
  return { name: 'host', reason: why };
}

/** Host memory a ladder takes: the host tier's, and on the host backend tiers 0 and 1's. */
export function hostMemoryNeeded(layout: Layout, backend: BackendChoice['name'] | 'none'): { host: number; memoryTiers: number } {
  return {
    host: tierNamed(layout, 'host')?.bytes ?? 0,
    memoryTiers: backend === 'host' ? layout.tiers[0]!.bytes + layout.tiers[1]!.bytes : 0,
  };
}

/**
 * Refuses a ladder whose host memory (the host tier, and on the host backend tiers 0 and 1
 * too) is more than the machine has available now: pinning it would fail part-way or push
 * the engine's own memory out.
 */
export function checkHostMemory(layout: Layout, backend: BackendChoice['name'], available = freemem()): void {
  const { host, memoryTiers } = hostMemoryNeeded(layout, backend);
  if (host + memoryTiers <= available) return;
  const others = memoryTiers > 0 ? ` (plus ${formatGiB(memoryTiers)} for tiers raw and quantized, which the host backend keeps in host memory)` : '';
  throw new SpillwayError('INVALID_CONFIG', `tiers.host.bytes: the host tier's ${formatGiB(host)}${others} do not fit the ${formatGiB(available)} of host memory available`, {
    field: 'tiers.host.bytes', requested: host + memoryTiers, available,
  });
}

/**
 * Opens the store and, unless `tiers.disk.recover` is false, adopts the committed blocks
 * the disk tier holds from before (runtime/recovery.ts) before anything else touches it.
 */
export async function openStore(config: Config, probe?: ProbeResult): Promise<BlockStore> {
  const found = probe ?? (await probeFor(config));
  const choice = chooseBackend(config, found);
  const layout = computeLayout(config);
  checkHostMemory(layout, choice.name);
  const { path, direct, io, inFlight } = config.tiers.disk;
  const backend: Backend = choice.name === 'gpu'
    ? new GpuBackend(layout, path, direct, inFlight, io, config.gpu.device, choice.reason)
    : new HostBackend(layout, path, direct, inFlight, choice.reason);
  const store = new BlockStore(config, backend, layout);
  store.telemetry.readNativeTimingsFrom(takeTaskTimings);
  try {
    const started = performance.now();
    const { blocks, report } = await scanDiskTier(config, layout, choice.name);
    store.adoptRecovered(blocks);
    store.recovery = { ...report, totalMs: performance.now() - started };
    const shared = config.tiers.shared;
    if (shared.path !== undefined) store.useSharedTier(await SharedTier.open(shared.path, shared.bytes, layout, store.telemetry.registry));
  } catch (err) {
    await store.close();
    throw err;
  }
  return store;
}
