/**
 * The model's weights: load state and progress (then the final rate), the tensor table,
 * and the arena as a CUDA IPC handle for an engine on the same GPU. Without weights in the
 * configuration the state is 'none' and the table empty.
 */
import { z } from 'zod';
import { SpillwayError } from '../../runtime/errors.js';
import type { RoutePlugin } from '../context.js';
import { DeviceIndex, ErrorResponse, PciBusId } from '../schemas.js';

const Count = z.number().int().nonnegative();
const Progress = z.object({
  bytesDone: Count, bytesTotal: Count, seconds: z.number(), gbps: z.number().describe('decimal GB/s so far'),
  etaSeconds: z.number().nullable().describe('at the rate so far; null before the first byte'),
});
export const WeightsResponse = z.union([
  z.object({ state: z.literal('none') }),
  z.object({
    state: z.enum(['loading', 'ready', 'failed']),
    rank: Count, world: Count, layout: z.enum(['whole', 'presplit', 'slice']),
    files: Count, tensors: Count, tensorBytes: Count, arenaBytes: Count,
    memory: z.enum(['host', 'gpu']),
    io: z.enum(['cufile', 'posix', 'fs']).nullable().describe('how the reads reach the arena; known once loaded on a GPU'),
    progress: Progress,
    result: z.object({ seconds: z.number(), gbps: z.number() }).nullable().describe('the whole load, once ready'),
    error: z.object({ code: z.string(), message: z.string() }).nullable(),
  }),
]);
export const WeightsTensorsResponse = z.object({
  tensors: z.array(z.object({
    name: z.string(), dtype: z.string(), shape: z.array(Count),
    offset: Count.describe('byte offset of the tensor in the arena (the IPC mapping)'), bytes: Count,
  })),
});
export const WeightsIpcResponse = z.object({
  handle: z.string().describe('cudaIpcMemHandle_t of the weights arena, base64'),
  handleBytes: Count, device: z.string(), deviceIndex: DeviceIndex, pciBusId: PciBusId, bytes: Count.describe('size of the mapping'),
});

export const weightsRoutes: RoutePlugin = async (app, { ctx }) => {
  const { weights } = ctx;
  const loaded = () => {
    if (!weights) throw new SpillwayError('NOT_FOUND', 'no weights are configured (weights.source is unset)', { field: 'weights.source' });
    return weights;
  };

  app.get('/v1/weights', {
    schema: { tags: ['weights'], summary: 'Weights load state, progress and final rate', response: { 200: WeightsResponse, default: ErrorResponse } },
  }, async () => weights?.describe() ?? { state: 'none' as const });

  app.get('/v1/weights/tensors', {
    schema: { tags: ['weights'], summary: 'The tensor table: name, dtype, shape, offset in the arena', response: { 200: WeightsTensorsResponse, default: ErrorResponse } },
  }, async () => ({ tensors: weights?.tensors() ?? [] }));

  app.get('/v1/weights/ipc', {
    schema: { tags: ['weights'], summary: 'The weights arena as a CUDA IPC handle (GPU backend, once loaded)', response: { 200: WeightsIpcResponse, default: ErrorResponse } },
  }, async () => loaded().ipc());
};
