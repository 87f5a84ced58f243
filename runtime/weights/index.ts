/** Model weights from safetensors checkpoints: what the server, doctor and capacity report use. */
export { inspectCheckpoint, openCheckpoint, type Checkpoint, type WeightsSource } from './checkpoint.js';
export { executePlan, loadWeights, planWeights, type LoadedWeights, type WeightsOptions } from './load.js';
export { assertBudgetFits, formatBudget, memoryBudget, ModelWeights, type MemoryBudget, type WeightsState } from './model.js';
export { weightsBytes, type LoadPlan, type PlannedTensor, type ReadRequest } from './plan.js';
export { terminalProgress, type OnProgress, type Progress } from './progress.js';
export { createSink, HostSink, SINKS, type WeightsSink } from './sink.js';
export { splitCheckpoint, type SplitSummary } from './split.js';
