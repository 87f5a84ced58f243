/**
 * A typed client for the HTTP API, on node:http with keep-alive connections (fetch copies
 * every request body once more, which at 2 MiB a block made the client, not the server,
 * the bottleneck of a busy engine or the soak). Its types come from the same zod
 * schemas the server validates with (api/schemas.ts). Control goes as JSON, one block as
 * application/octet-stream, batches as application/msgpack. A failed request throws the
 * server's SpillwayError (code, message and details as sent).
 */
import { Agent, request as httpRequest, type IncomingMessage } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import type { z } from 'zod';
import { isErrorCode, SpillwayError } from '../runtime/errors.js';
import type { MoveEvent } from '../runtime/telemetry.js';
import type * as W from './routes/weights.js';
import type * as S from './schemas.js';
import { takeSseMessages } from './dashboard/sse.js';
import { decodeBlockBatch, encodeWriteBatch } from './msgpack-blocks.js';

type Out<T extends z.ZodType> = z.output<T>;
type In<T extends z.ZodType> = z.input<T>;

export interface ClientOptions {
  /** e.g. http://127.0.0.1:8420 */
  baseUrl: string;
  /** The server's bearer token, when it has one. */
  token?: string;
}

export interface BlockRead {
  data: Buffer;
  tier: Out<typeof S.TierName>;
  format: 'raw' | 'quantized';
  lossy: boolean;
  promoted: boolean;
}

export type BatchBlock = Out<typeof S.BatchReadResponse>['blocks'][number] & { data: Buffer };

export interface ServerEvent {
  event: 'move' | 'dropped';
  data: MoveEvent | { dropped: number };
}

/** A request body: text, bytes, or parts sent in order without being joined. */
type Body = string | Uint8Array | Uint8Array[];

/** An answer read whole. */
interface Answer {
  status: number;
  headers: IncomingMessage['headers'];
  body: Buffer;
}

export class SpillwayClient {
  private readonly base: URL;
  private readonly auth: Record<string, string>;
  private readonly agent: Agent;

  constructor(options: ClientOptions) {
    this.base = new URL(options.baseUrl.replace(/\/$/, ''));
    this.auth = options.token ? { authorization: `Bearer ${options.token}` } : {};
    this.agent = this.base.protocol === 'https:' ? new HttpsAgent({ keepAlive: true }) : new Agent({ keepAlive: true });
  }

  /** Closes the idle connections (open ones close when their requests end). */
  close(): void {
    this.agent.destroy();
  }

  // ---- status and limits ------------------------------------------------------------

  health(): Promise<Out<typeof S.HealthResponse>> {
    return this.json('GET', '/v1/health');
  }

  ready(): Promise<Out<typeof S.ReadyResponse>> {
    return this.json('GET', '/v1/ready', undefined, [200, 503]);
  }

  status(): Promise<Out<typeof S.StatusResponse>> {
    return this.json('GET', '/v1/status');
  }

  limits(): Promise<Out<typeof S.LimitsResponse>> {
    return this.json('GET', '/v1/limits');
  }

  /** Changes the limits named; the others stay. */
  setLimits(changes: In<typeof S.LimitsPatch>): Promise<Out<typeof S.LimitsResponse>> {
    return this.json('PATCH', '/v1/limits', changes);
  }

  telemetry(since?: number): Promise<Out<typeof S.TelemetryResponse>> {
    return this.json('GET', since === undefined ? '/v1/telemetry' : `/v1/telemetry?since=${since}`);
  }

  async metrics(): Promise<string> {
    return (await this.send('GET', '/metrics')).body.toString('utf8');
  }

  // ---- sequences and blocks ---------------------------------------------------------

  createSequence(body: In<typeof S.CreateSequenceBody> = {}): Promise<Out<typeof S.CreateSequenceResponse>> {
    return this.json('POST', '/v1/sequences', body);
  }

  async allocate(sequence: string, count: number): Promise<Out<typeof S.AllocateResponse>['blocks']> {
    return (await this.json<Out<typeof S.AllocateResponse>>('POST', `/v1/sequences/${seg(sequence)}/blocks`, { count })).blocks;
  }

  freeSequence(sequence: string): Promise<Out<typeof S.FreeResponse>> {
    return this.json('DELETE', `/v1/sequences/${seg(sequence)}`);
  }

  /** Writes one block; with `tokens`, commits it to the prefix cache. */
  async writeBlock(sequence: string, index: number, data: Uint8Array, tokens?: number[]): Promise<Out<typeof S.WriteResponse>> {
    const query = tokens ? `?tokens=${tokens.join(',')}` : '';
    const res = await this.send('PUT', `/v1/sequences/${seg(sequence)}/blocks/${index}${query}`, data, 'application/octet-stream');
    return parseJson(res) as Out<typeof S.WriteResponse>;
  }

  /** With `into`, an answer that fits is read into it (the answer's data is then a view of it): a caller reusing its buffers allocates nothing per read. */
  async readBlock(sequence: string, index: number, options: { promote?: boolean; format?: 'raw' | 'stored'; into?: Uint8Array } = {}): Promise<BlockRead> {
    const query = new URLSearchParams();
    if (options.promote !== undefined) query.set('promote', String(options.promote));
    if (options.format !== undefined) query.set('format', options.format);
    const q = query.size > 0 ? `?${query}` : '';
    const res = await this.send('GET', `/v1/sequences/${seg(sequence)}/blocks/${index}${q}`, undefined, undefined, [], options.into);
    return {
      data: res.body,
      tier: res.headers['spillway-tier'] as BlockRead['tier'],
      format: res.headers['spillway-format'] as BlockRead['format'],
      lossy: res.headers['spillway-lossy'] === 'true',
      promoted: res.headers['spillway-promoted'] === 'true',
    };
  }

  /** Writes many blocks in one msgpack request, in order. */
  async writeBlocks(sequence: string, blocks: In<typeof S.BatchWriteBody>['blocks']): Promise<Out<typeof S.BatchWriteResponse>['blocks']> {
    const res = await this.send('POST', `/v1/sequences/${seg(sequence)}/blocks/write`, encodeWriteBatch(blocks), 'application/msgpack');
    return (parseJson(res) as Out<typeof S.BatchWriteResponse>).blocks;
  }

  /**
   * Reads many blocks in one request; the answer comes as msgpack. With `into`, an answer
   * that fits is read into it and each block's data is a view of it, as with readBlock.
   */
  async readBlocks(sequence: string, indices: number[], options: { promote?: boolean; format?: 'raw' | 'stored'; into?: Uint8Array } = {}): Promise<BatchBlock[]> {
    const { into, ...query } = options;
    const res = await this.send('POST', `/v1/sequences/${seg(sequence)}/blocks/read`, JSON.stringify({ indices, ...query }), 'application/json', [], into);
    return decodeBlockBatch(res.body) as BatchBlock[];
  }

  pin(sequence: string, index: number): Promise<Out<typeof S.PinResponse>> {
    return this.json('POST', `/v1/sequences/${seg(sequence)}/blocks/${index}/pin`);
  }

  unpin(sequence: string, index: number): Promise<Out<typeof S.PinResponse>> {
    return this.json('POST', `/v1/sequences/${seg(sequence)}/blocks/${index}/unpin`);
  }

  lookupPrefix(body: In<typeof S.LookupBody>): Promise<Out<typeof S.LookupResponse>> {
    return this.json('POST', '/v1/prefix/lookup', body);
  }

  // ---- weights ----------------------------------------------------------------------

  weights(): Promise<Out<typeof W.WeightsResponse>> {
    return this.json('GET', '/v1/weights');
  }

  async weightsTensors(): Promise<Out<typeof W.WeightsTensorsResponse>['tensors']> {
    return (await this.json<Out<typeof W.WeightsTensorsResponse>>('GET', '/v1/weights/tensors')).tensors;
  }

  weightsIpc(): Promise<Out<typeof W.WeightsIpcResponse>> {
    return this.json('GET', '/v1/weights/ipc');
  }

  // ---- zero-copy (GPU backend: the pool; leases work on any backend) ---------------

  pool(): Promise<Out<typeof S.PoolResponse>> {
    return this.json('GET', '/v1/zero-copy/pool');
  }

  createLease(body: In<typeof S.CreateLeaseBody>): Promise<Out<typeof S.LeaseResponse>> {
    return this.json('POST', '/v1/zero-copy/leases', body);
  }

  heartbeat(lease: string): Promise<Out<typeof S.LeaseResponse>> {
    return this.json('POST', `/v1/zero-copy/leases/${seg(lease)}/heartbeat`);
  }

  endLease(lease: string): Promise<Out<typeof S.EndLeaseResponse>> {
    return this.json('DELETE', `/v1/zero-copy/leases/${seg(lease)}`);
  }

  /** Pins a block in tier 0 under the lease; answers its slot once the data is there. */
  acquire(lease: string, body: In<typeof S.AcquireBody>): Promise<Out<typeof S.AcquireResponse>> {
    return this.json('POST', `/v1/zero-copy/leases/${seg(lease)}/acquire`, body);
  }

  release(lease: string, body: In<typeof S.ReleaseBody>): Promise<Out<typeof S.ReleaseResponse>> {
    return this.json('POST', `/v1/zero-copy/leases/${seg(lease)}/release`, body);
  }

  /** Pins many blocks in tier 0 as one pipeline; answers every slot (or that entry's error) once all are there. */
  acquireMany(lease: string, body: In<typeof S.AcquireManyBody>): Promise<Out<typeof S.AcquireManyResponse>> {
    return this.json('POST', `/v1/zero-copy/leases/${seg(lease)}/acquire-many`, body);
  }

  releaseMany(lease: string, body: In<typeof S.ReleaseManyBody>): Promise<Out<typeof S.ReleaseManyResponse>> {
    return this.json('POST', `/v1/zero-copy/leases/${seg(lease)}/release-many`, body);
  }

  /** A new sequence on the cached part of a prefix, with `allocate` blocks more, all acquired. */
  attach(lease: string, body: In<typeof S.AttachBody>): Promise<Out<typeof S.AttachResponse>> {
    return this.json('POST', `/v1/zero-copy/leases/${seg(lease)}/attach`, body);
  }

  /** Follows /v1/events until `signal` aborts or the server ends the stream. */
  async *events(options: { kinds?: Array<'demote' | 'promote' | 'drop'>; signal?: AbortSignal } = {}): AsyncGenerator<ServerEvent> {
    const query = options.kinds ? `?kinds=${options.kinds.join(',')}` : '';
    const decoder = new TextDecoder();
    let buffer = '';
    try {
      const res = await this.open('GET', `/v1/events${query}`, undefined, undefined, options.signal);
      if (res.statusCode !== 200) throw toError({ status: res.statusCode ?? 0, headers: res.headers, body: await readAll(res) });
      for await (const chunk of res as AsyncIterable<Buffer>) {
        const taken = takeSseMessages(buffer + decoder.decode(chunk, { stream: true }));
        buffer = taken.rest;
        for (const { event, data } of taken.messages) {
          if (event === 'move' || event === 'dropped') yield { event, data: JSON.parse(data) as ServerEvent['data'] };
        }
      }
    } catch (err) {
      if (!options.signal?.aborted) throw err;
    }
  }

  // ---- transport --------------------------------------------------------------------

  private async json<T>(method: string, path: string, body?: unknown, accept: number[] = []): Promise<T> {
    const res = await this.send(method, path, body === undefined ? undefined : JSON.stringify(body), body === undefined ? undefined : 'application/json', accept);
    return parseJson(res) as T;
  }

  /** The answer read whole; a status other than 2xx (or one in `accept`) throws the server's error. */
  private async send(method: string, path: string, body?: Body, contentType?: string, accept: number[] = [], into?: Uint8Array): Promise<Answer> {
    const res = await this.open(method, path, body, contentType);
    const answer = { status: res.statusCode ?? 0, headers: res.headers, body: await readAll(res, res.statusCode === 200 ? into : undefined) };
    if ((answer.status >= 200 && answer.status < 300) || accept.includes(answer.status)) return answer;
    throw toError(answer);
  }

  /**
   * Sends a request on a kept-alive connection; resolves with the answer's head, its body
   * still to read. A request whose reused connection the server had just closed (reset
   * before any answer) never reached it, and is sent again once on a new one.
   */
  private open(method: string, path: string, body?: Body, contentType?: string, signal?: AbortSignal): Promise<IncomingMessage> {
    const headers: Record<string, string | number> = { ...this.auth };
    if (contentType) headers['content-type'] = contentType;
    const parts = body === undefined ? [] : Array.isArray(body) ? body : [body];
    if (body !== undefined) headers['content-length'] = parts.reduce((n, p) => n + (typeof p === 'string' ? Buffer.byteLength(p) : p.byteLength), 0);
    const send = this.base.protocol === 'https:' ? httpsRequest : httpRequest;
    const attempt = (retry: boolean): Promise<IncomingMessage> => new Promise((resolve, reject) => {
      const req = send(new URL(this.base.pathname.replace(/\/$/, '') + path, this.base), { method, headers, agent: this.agent, signal }, resolve);
      req.on('error', (err: NodeJS.ErrnoException) => {
        if (retry && req.reusedSocket && err.code === 'ECONNRESET') resolve(attempt(false));
        else reject(err);
      });
      // corked, the parts go out together (writev), none copied into another
      req.cork();
      for (const p of parts) req.write(p);
      req.end();
    });
    return attempt(true);
  }
}

/**
 * A body read into one buffer: sized once from content-length where the server sent it,
 * the start of `into` where it fits there.
 */
async function readAll(res: IncomingMessage, into?: Uint8Array): Promise<Buffer> {
  const length = Number(res.headers['content-length']);
  if (!Number.isSafeInteger(length)) {
    const chunks: Buffer[] = [];
    for await (const chunk of res as AsyncIterable<Buffer>) chunks.push(chunk);
    return Buffer.concat(chunks);
  }
  const out = into !== undefined && length <= into.byteLength ? Buffer.from(into.buffer, into.byteOffset, length) : Buffer.allocUnsafe(length);
  let at = 0;
  for await (const chunk of res as AsyncIterable<Buffer>) at += chunk.copy(out, at);
  if (at !== length) throw new Error(`answer ended after ${at} of ${length} bytes`);
  return out;
}

function parseJson(res: Answer): unknown {
  return JSON.parse(res.body.toString('utf8'));
}

function seg(s: string): string {
  return encodeURIComponent(s);
}

/** The server's error body as a SpillwayError; details keep the HTTP status. */
function toError(res: Answer): SpillwayError {
  const text = res.body.toString('utf8');
  let error: { code?: string; message?: string } & Record<string, unknown> = {};
  try {
    error = (JSON.parse(text) as { error: typeof error }).error ?? {};
  } catch {
    // not the API's error shape (a proxy, say): keep the text
  }
  const { code, message, ...details } = error;
  const known = isErrorCode(code) ? code : 'INTERNAL';
  return new SpillwayError(known, message ?? `HTTP ${res.status}: ${text.slice(0, 200)}`, { ...details, httpStatus: res.status, ...(known !== code ? { serverCode: code } : {}) });
}
