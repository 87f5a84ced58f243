/**
 * Many blocks of one sequence in one request, as msgpack: a batch read answers
 * { blocks: [{ index, tier, format, lossy, promoted, data }] }, a batch write takes
 * { blocks: [{ index, data, tokens? }] } and writes them in order (so that each prefix
 * commit finds its parent committed). Errors name the entry that failed.
 */
import { Readable } from 'node:stream';
import { SpillwayError } from '../../runtime/errors.js';
import type { RoutePlugin } from '../context.js';
import { encodeBlockBatch } from '../msgpack-blocks.js';
import { BatchReadBody, BatchReadResponse, BatchWriteBody, BatchWriteResponse, ErrorResponse, SequenceParams } from '../schemas.js';
import { encodedResponse } from '../validation.js';

/** The store's error, restated for one entry of a batch. */
function atEntry(err: unknown, field: string, extra: Record<string, unknown> = {}): unknown {
  if (!(err instanceof SpillwayError)) return err;
  return new SpillwayError(err.code, `${field}: ${err.message}`, { ...err.details, ...extra, field });
}

export const batchRoutes: RoutePlugin = async (app, { ctx }) => {
  const { store, budget, buffers } = ctx;
  const maxBytes = store.config.server.maxBatchBytes;
  const { rawBlockBytes, tokensPerBlock } = store.layout;
  const maxBlocks = Math.max(1, Math.floor(maxBytes / rawBlockBytes));
  // What a batch write of maxBlocks blocks holds: { blocks: [{ index, data, tokens: [...] }] },
  // 3 values around the list and, per block, a map, 3 keys, index, data and the tokens
  // array with its tokens; 64 to spare. The tokens array is the fourth level.
  const writeBounds = { maxValues: 3 + maxBlocks * (7 + tokensPerBlock) + 64, maxDepth: 4 };

  app.post('/v1/sequences/:id/blocks/read', {
    schema: {
      tags: ['blocks'], summary: `Read many blocks of a sequence (at most server.maxBatchBytes of blocks); the answer is application/msgpack`,
      params: SequenceParams, body: BatchReadBody,
      response: { 200: encodedResponse('application/msgpack', BatchReadResponse, 'the blocks, in the order asked'), default: ErrorResponse },
    },
  }, async (request, reply) => {
    const { id } = request.params;
    const { indices, ...options } = request.body;
    if (indices.length > maxBlocks) {
      throw new SpillwayError('INVALID_ARGUMENT', `body.indices: at most ${maxBlocks} blocks a batch (server.maxBatchBytes)`, {
        field: 'body.indices', max: maxBlocks,
      });
    }
    // The answer is held while it is built and sent, as a body would be.
    await budget.hold(reply, indices.length * rawBlockBytes, 'a batch answer');
    // Each block is read into a pooled buffer, sent from there as one part of the answer.
    // Every read is settled before any buffer goes back: a failed one must not free the others'.
    const into = indices.map(() => buffers.take(rawBlockBytes));
    const settled = await Promise.allSettled(indices.map((index, k) => store.read(id, index, { ...options, into: into[k] })));
    let parts: Uint8Array[];
    try {
      parts = encodeBlockBatch(settled.map((s, k) => {
        const index = indices[k]!;
        if (s.status === 'rejected') throw atEntry(s.reason, `body.indices.${k}`, { index });
        const r = s.value;
        return { index, tier: r.tier, format: r.format, lossy: r.lossy, promoted: r.promoted, data: r.data };
      }));
    } catch (err) {
      for (const b of into) buffers.give(b);
      throw err;
    }
    buffers.giveWhenSent(reply.raw, into);
    // Streamed, not joined: no copy of the answer on the event loop, and a part the socket
    // cannot take at once waits for 'drain' in a later turn instead of holding the loop.
    return reply
      .header('content-type', 'application/msgpack')
      .header('content-length', parts.reduce((n, p) => n + p.byteLength, 0))
      .send(Readable.from(parts));
  });

  app.post('/v1/sequences/:id/blocks/write', {
    bodyLimit: maxBytes,
    config: { msgpack: writeBounds },
    schema: {
      tags: ['blocks'], summary: 'Write many blocks of a sequence in order, from application/msgpack (at most server.maxBatchBytes)',
      params: SequenceParams, body: BatchWriteBody, consumes: ['application/msgpack', 'application/x-msgpack'],
      response: { 200: BatchWriteResponse, default: ErrorResponse },
    },
  }, async (request) => {
    const { id } = request.params;
    const { blocks } = request.body;
    const expected = rawBlockBytes;
    blocks.forEach((b, k) => {
      if (b.data.byteLength !== expected) {
        throw new SpillwayError('WRONG_SIZE', `body.blocks.${k}.data: a block is ${expected} bytes for this geometry, got ${b.data.byteLength}`, {
          field: `body.blocks.${k}.data`, expected, got: b.data.byteLength,
        });
      }
    });
    const written = [];
    for (const [k, b] of blocks.entries()) {
      try {
        written.push({ index: b.index, ...(await store.write(id, b.index, b.data, b.tokens)) });
      } catch (err) {
        throw atEntry(err, `body.blocks.${k}`, { index: b.index, written: written.length });
      }
    }
    return { blocks: written };
  });
};
