/**
 * The KV cache's element types (`model.dtype`) and their sizes. Model weights have their
 * own, the safetensors dtypes (weights/format.ts, WEIGHT_DTYPE_BYTES).
 */
export const DTYPES = ['bf16', 'fp16', 'fp32'] as const;
export type Dtype = (typeof DTYPES)[number];

/** Bytes per element of a KV block. */
export const DTYPE_BYTES: Record<Dtype, number> = { fp32: 4, fp16: 2, bf16: 2 };
