/**
 * The model's weights as the server holds them. Planned first (every header read and
 * validated, nothing else), so that the memory budget can count the arena before the KV
 * tiers are allocated; loaded once the server listens, readiness false until done; then a
 * table of tensors and, on a GPU, the arena as a CUDA IPC handle for the engine.
 */
import { formatGiB } from '../bytes.js';
import type { Config } from '../config.js';
import { SpillwayError } from '../errors.js';
import type { DeviceName } from '../backends/backend.js';
import type { ProbeResult } from '../native.js';
import { DeviceSink } from './device-sink.js';
import { executePlan, planWeights } from './load.js';
import type { LoadPlan } from './plan.js';
import type { OnProgress, Progress } from './progress.js';
import { HostSink } from './sink.js';

export type WeightsState = 'loading' | 'ready' | 'failed';

export class ModelWeights {
  private currentState: WeightsState = 'loading';
  private progress: Progress;
  private result: { seconds: number; gbps: number } | undefined;
  private failure: SpillwayError | undefined;

  private constructor(
    readonly plan: LoadPlan,
    private readonly sink: HostSink | DeviceSink,
    private readonly concurrency: number,
    /** The GPU the arena lives on; undefined for host memory. */
    private readonly device: DeviceName | undefined,
  ) {
    this.progress = { bytesDone: 0, bytesTotal: plan.readBytes, seconds: 0, gbps: 0, etaSeconds: null };
  }

  /** Plans the configured rank's weights into device memory on the GPU backend, host memory otherwise. */
  static async plan(config: Config, backend: 'host' | 'gpu', probe: ProbeResult): Promise<ModelWeights | undefined> {
    if (config.weights.source === undefined) return undefined;
    const plan = await planWeights(config.weights);
    if (backend === 'host') return new ModelWeights(plan, new HostSink(), config.weights.concurrency, undefined);
    const { device, name, pciBusId } = probe.gpu;
    return new ModelWeights(plan, new DeviceSink({ device }), config.weights.concurrency, { index: device, name, pciBusId });
  }

  /** Device (or host) bytes the weights take, alignment padding included. */
  get bytes(): number {
    return this.plan.arenaBytes;
  }

  get state(): WeightsState {
    return this.currentState;
  }

  /** Reads every planned byte; rejects (and keeps the error for status) on the first failed read. */
  async load(onProgress?: OnProgress): Promise<void> {
    try {
      const loaded = await executePlan(this.plan, this.sink, {
        concurrency: this.concurrency,
        onProgress: (p) => {
          this.progress = p;
          onProgress?.(p);
        },
      });
      this.result = { seconds: loaded.seconds, gbps: loaded.gbps };
      this.currentState = 'ready';
    } catch (err) {
      this.failure = err instanceof SpillwayError ? err : new SpillwayError('IO_ERROR', `weights load failed: ${(err as Error).message}`);
      this.currentState = 'failed';
      throw this.failure;
    }
  }

  describe() {
    const { plan } = this;
    return {
      state: this.currentState,
      rank: plan.rank,
      world: plan.world,
      layout: plan.layout,
      files: plan.files.length,
      tensors: plan.tensors.length,
      tensorBytes: plan.tensorBytes,
      arenaBytes: plan.arenaBytes,
      memory: this.device === undefined ? 'host' as const : 'gpu' as const,
      /** How the reads went: cufile or posix into device memory (known once loaded), fs into host memory. */
      io: this.sink instanceof DeviceSink ? (this.currentState === 'ready' ? this.sink.describe().io : null) : 'fs' as const,
      progress: this.progress,
      result: this.result ?? null,
      error: this.failure ? { code: this.failure.code, message: this.failure.message } : null,
    };
  }

  /** The tensor table: where each tensor starts in the arena. */
  tensors() {
    return this.plan.tensors.map((t) => ({ name: t.name, dtype: t.dtype, shape: t.shape, offset: t.arenaOffset, bytes: t.bytes }));
  }

  /** The arena as a cudaIpcMemHandle_t, once loaded; NO_DEVICE_MEMORY where it is host memory. */
  ipc(): { handle: string; handleBytes: number; device: string; deviceIndex: number; pciBusId: string; bytes: number } {
    if (!(this.sink instanceof DeviceSink) || this.device === undefined) {
      throw new SpillwayError('NO_DEVICE_MEMORY', 'the weights are in host memory (host backend): there is no device memory to share');
    }
    if (this.currentState !== 'ready') {
      throw new SpillwayError('NOT_READY', `the weights are ${this.currentState === 'loading' ? 'still loading' : 'not loaded (the load failed)'}`, { state: this.currentState });
    }
    const handle = this.sink.ipcHandle();
    const { index, name, pciBusId } = this.device;
    return { handle: handle.toString('base64'), handleBytes: handle.length, device: name, deviceIndex: index, pciBusId, bytes: this.plan.arenaBytes };
  }

  free(): void {
    if (this.sink instanceof DeviceSink) this.sink.free();
  }
}

/**
 * Memory the KV tiers and the weights take together, against what the device had free
 * before either was allocated (GPU backend); `fits` is null where that is not known.
 */
export function memoryBudget(config: Config, backend: 'host' | 'gpu', probe: ProbeResult | undefined, weightsBytes: number) {
  const tierBytes = config.tiers.raw.bytes + config.tiers.quantized.bytes;
  const deviceFreeBytes = backend === 'gpu' && probe ? probe.gpu.freeBytes : null;
  return {
    memory: backend,
    tierBytes,
    weightsBytes,
    totalBytes: tierBytes + weightsBytes,
    deviceFreeBytes,
    fits: deviceFreeBytes === null ? null : tierBytes + weightsBytes <= deviceFreeBytes,
  };
}

export function formatBudget(b: MemoryBudget): string {
  const sum = `tiers 0-1 ${formatGiB(b.tierBytes)} + weights ${formatGiB(b.weightsBytes)} = ${formatGiB(b.totalBytes)} of ${b.memory} memory`;
  return b.deviceFreeBytes === null ? sum : `${sum}; ${formatGiB(b.deviceFreeBytes)} free: ${b.fits ? 'fits' : 'does not fit'}`;
}

/** Refuses a configuration whose tiers and weights do not fit the device. */
export function assertBudgetFits(b: MemoryBudget): void {
  if (b.fits === false) {
    throw new SpillwayError('INVALID_CONFIG', `tiers.raw.bytes + tiers.quantized.bytes and the weights do not fit the device: ${formatBudget(b)}`, { field: 'tiers', ...b });
  }
}

export type MemoryBudget = ReturnType<typeof memoryBudget>;
