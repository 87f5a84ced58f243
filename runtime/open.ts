/**
 * Opens a store on the backend the machine supports: the probe says what is there, the
 * configuration what is wanted, and the choice and its reason are kept for status.
 */
import type { Backend } from './backends/backend.js';
import { HostBackend } from './backends/host.js';
import type { Config } from './config.js';
import { SpillwayError } from './errors.js';
import { computeLayout } from './layout.js';
import { addon, type ProbeResult } from './native.js';
import { BlockStore } from './store.js';

export interface BackendChoice {
  name: 'host' | 'gpu';
  reason: string;
}

/** The GPU backend is not part of this build yet; the probe still reports the GPU. */
export function chooseBackend(config: Config, probe: ProbeResult): BackendChoice {
  const gpu = probe.gpu.present
    ? `GPU ${probe.gpu.name} found, but the GPU backend is not available in this version`
    : `no usable GPU (${probe.gpu.error})`;
  if (config.backend === 'gpu') throw new SpillwayError('INVALID_CONFIG', `backend "gpu" requested: ${gpu}`, { field: 'backend' });
  return { name: 'host', reason: config.backend === 'host' ? 'host backend requested by configuration' : gpu };
}

export async function openStore(config: Config, probe?: ProbeResult): Promise<BlockStore> {
  const found = probe ?? (await addon.probe());
  const choice = chooseBackend(config, found);
  const layout = computeLayout(config);
  const backend: Backend = new HostBackend(layout, config.tiers.disk.path, config.tiers.disk.direct, choice.reason);
  return new BlockStore(config, backend, layout);
}
