/**
 * Opens a store on the backend the machine supports: the probe says what is there, the
 * configuration what is wanted, and the choice and its reason are kept for status.
 */
import { performance } from 'node:perf_hooks';
import type { Backend } from './backends/backend.js';
import { GpuBackend } from './backends/gpu.js';
import { HostBackend } from './backends/host.js';
import type { Config } from './config.js';
import { SpillwayError } from './errors.js';
import { computeLayout } from './layout.js';
import { addon, type ProbeResult } from './native.js';
import { scanDiskTier } from './recovery.js';
import { BlockStore } from './store.js';

export interface BackendChoice {
  name: 'host' | 'gpu';
  reason: string;
}

/** GPU where the machine has one and the addon has CUDA, unless configured otherwise. */
export function chooseBackend(config: Config, probe: ProbeResult): BackendChoice {
  if (config.backend === 'host') return { name: 'host', reason: 'host backend requested by configuration' };
  const gpuUsable = probe.gpu.present && probe.cudaBuilt && addon.GpuTiers !== undefined;
  if (gpuUsable) {
    const how = config.backend === 'gpu' ? 'requested by configuration' : 'chosen automatically';
    return { name: 'gpu', reason: `GPU ${probe.gpu.name} (sm_${probe.gpu.computeCapability.replace('.', '')}) found; GPU backend ${how}` };
  }
  const why = !probe.cudaBuilt ? 'the addon was built without CUDA (nvcc was not found at build time)' : `no usable GPU (${probe.gpu.error})`;
  if (config.backend === 'gpu') throw new SpillwayError('INVALID_CONFIG', `backend "gpu" requested, but ${why}`, { field: 'backend' });
  return { name: 'host', reason: why };
}

/**
 * Opens the store and, unless `tiers.disk.recover` is false, adopts the committed blocks
 * the disk tier holds from before (runtime/recovery.ts) before anything else touches it.
 */
export async function openStore(config: Config, probe?: ProbeResult): Promise<BlockStore> {
  const found = probe ?? (await addon.probe());
  const choice = chooseBackend(config, found);
  const layout = computeLayout(config);
  const { path, direct, io } = config.tiers.disk;
  const backend: Backend = choice.name === 'gpu'
    ? new GpuBackend(layout, path, direct, io, choice.reason)
    : new HostBackend(layout, path, direct, choice.reason);
  const store = new BlockStore(config, backend, layout);
  try {
    const started = performance.now();
    const { blocks, report } = await scanDiskTier(config, layout, choice.name);
    store.adoptRecovered(blocks);
    store.recovery = { ...report, totalMs: performance.now() - started };
  } catch (err) {
    await store.close();
    throw err;
  }
  return store;
}
