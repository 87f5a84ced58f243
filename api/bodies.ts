/**
 * Request bodies, decided before a byte of them is read (docs/ARCHITECTURE.md, "Request
 * limits"):
 *
 * - a route takes only its own media types: its schema's `consumes`, or application/json
 *   when it has a body schema and no `consumes`; a route without a body schema takes no
 *   body. Anything else is refused in onRequest (415, or 400 for a body where none is
 *   taken), so no parser or validator ever walks a body of the wrong type;
 * - an empty body is no body, whatever its content-type says;
 * - the bytes a body may make the server hold are reserved from the server's budget
 *   (BodyBudget, api/load.ts) until its response closes;
 * - JSON bodies are limited to server.maxJsonBytes, to nesting 8 deep and to objects of
 *   64 members;
 * - a msgpack body is checked against its route's bounds (`config.msgpack`) before it is
 *   decoded (api/msgpack-bounds.ts);
 * - block bodies (octet-stream and msgpack) of a declared length are read into a buffer of
 *   the server's BufferPool, given back once the request is answered.
 */
import type { IncomingHttpHeaders, IncomingMessage } from 'node:http';
import type { FastifyInstance, FastifyRequest, FastifySchema, onRequestHookHandler } from 'fastify';
import { Unpackr } from 'msgpackr';
import { errors, SpillwayError } from '../runtime/errors.js';
import type { BufferPool } from './buffer-pool.js';
import { noRoute } from './errors.js';
import type { BodyBudget } from './load.js';
import { checkMsgpackBounds, type MsgpackBounds } from './msgpack-bounds.js';

declare module 'fastify' {
  interface FastifyContextConfig {
    /** What a msgpack body of the route may expand to; required of a route that takes msgpack. */
    msgpack?: MsgpackBounds;
  }
  interface FastifyRequest {
    /** The pooled buffer the body was read into, given back when the request is answered. */
    pooledBody?: Buffer;
  }
}

const JSON_TYPES = ['application/json'];
/**
 * JSON bodies nest two deep ({ tokens: [...] }) and their objects have at most a handful of
 * members: more would only cost JSON.parse (and the validator) time.
 */
const JSON_BOUNDS = { maxDepth: 8, maxMembers: 64 };
const MSGPACK_TYPES = ['application/msgpack', 'application/x-msgpack'];

/** Maps, never msgpackr's shared record structures: each body stands alone. */
const unpackr = new Unpackr({ useRecords: false });

/** The media types a route's body may have; null for a route that takes no body. */
function bodyTypes(schema: FastifySchema | undefined): readonly string[] | null {
  if (!schema?.body) return null;
  return (schema.consumes as string[] | undefined) ?? JSON_TYPES;
}

/** A body's declared length: 0 for none, undefined when it is not known before it is read (chunked). */
function declaredLength(headers: IncomingHttpHeaders): number | undefined {
  if (headers['transfer-encoding'] !== undefined) return undefined;
  const n = Number(headers['content-length'] ?? 0);
  return Number.isSafeInteger(n) && n >= 0 ? n : undefined;
}

/**
 * Throws INVALID_ARGUMENT naming `body` for JSON nested deeper than JSON_BOUNDS.maxDepth or
 * with an object of more than JSON_BOUNDS.maxMembers members: one pass over the bytes,
 * counting brackets and colons outside strings.
 */
function checkJsonBounds(body: Uint8Array): void {
  const { maxDepth, maxMembers } = JSON_BOUNDS;
  const members = new Uint32Array(maxDepth + 1);
  const refuse = (what: string, at: number) => errors.badBody(`JSON ${what} (at byte ${at})`);
  let depth = 0;
  let inString = false;
  for (let i = 0; i < body.length; i++) {
    const c = body[i]!;
    if (inString) {
      if (c === 0x5c) i++; // a backslash escapes the next byte
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) {
      inString = true;
    } else if (c === 0x5b || c === 0x7b) {
      if (depth === maxDepth) throw refuse(`nested deeper than ${maxDepth}`, i);
      members[++depth] = 0;
    } else if (c === 0x5d || c === 0x7d) {
      depth = Math.max(0, depth - 1);
    } else if (c === 0x3a) {
      members[depth]!++;
      if (members[depth]! > maxMembers) throw refuse(`object of more than ${maxMembers} members`, i);
    }
  }
}

/** onRequest: the body's media type is one its route takes (or the body is empty). */
const checkBodyType: onRequestHookHandler = (request, _reply, done) => {
  const headers = request.raw.headers;
  if (declaredLength(headers) === 0) {
    // An empty body is no body. Without a content-type no parser runs: fastify would refuse
    // an empty JSON body, or a type it has no parser for, even on a route that takes none.
    delete headers['content-type'];
    return done();
  }
  if (request.is404) return done(noRoute(request));
  const route = `${request.method} ${request.routeOptions.url}`;
  const types = bodyTypes(request.routeOptions.schema);
  if (types === null) return done(new SpillwayError('INVALID_ARGUMENT', `${route} takes no body`, { field: 'body' }));
  const type = request.mediaType;
  if (type !== undefined && types.includes(type)) return done();
  done(new SpillwayError('UNSUPPORTED_MEDIA_TYPE', `${route} takes ${types.join(' or ')}, not ${type ?? 'a body without a valid content-type'}`, {
    field: 'content-type', accepted: types,
  }));
};

/**
 * onRequest: holds what the body may make the server hold, its length or (chunked) its
 * route's limit, waiting for room in the budget if it must. A declared length over the limit is answered 413 here, its body left
 * unread: fastify's parser would answer it too, but by closing the connection, which can
 * reset it before a client still sending has read the answer.
 */
function reserveBody(budget: BodyBudget): onRequestHookHandler {
  return (request, reply, done) => {
    const length = declaredLength(request.raw.headers);
    if (length === 0) return done();
    const limit = request.routeOptions.bodyLimit;
    if (length !== undefined && length > limit) {
      return done(new SpillwayError('PAYLOAD_TOO_LARGE', `body too large: ${length} bytes, at most ${limit} here`, { field: 'body', limitBytes: limit }));
    }
    budget.hold(reply, length ?? limit, 'a request body').then(() => done(), (err: Error) => done(err));
  };
}

/**
 * Reads a block body whole, as fastify's own parser would (the route's limit is checked
 * in onRequest for a declared length, here for a chunked one): a declared length straight
 * into one pooled buffer, chunks copied in as they come, with no join.
 */
function readBlockBody(pool: BufferPool, request: FastifyRequest, payload: IncomingMessage, done: (err: Error | null, body?: Buffer) => void): void {
  const declared = declaredLength(request.raw.headers);
  const limit = declared ?? request.routeOptions.bodyLimit;
  const into = declared === undefined ? undefined : pool.take(declared);
  if (into) request.pooledBody = into;
  const chunks: Buffer[] = [];
  let received = 0;
  const finish = (err: Error | null, body?: Buffer) => {
    payload.removeListener('data', onData);
    payload.removeListener('end', onEnd);
    payload.removeListener('error', finish);
    done(err, body);
  };
  const onData = (chunk: Buffer) => {
    if (received + chunk.length > limit) {
      return finish(new SpillwayError('PAYLOAD_TOO_LARGE', `body too large: over ${limit} bytes${declared === undefined ? '' : ', its content-length'}`, { field: 'body', limitBytes: limit }));
    }
    if (into) chunk.copy(into, received);
    else chunks.push(chunk);
    received += chunk.length;
  };
  const onEnd = () => {
    if (into && received !== declared) return finish(errors.badBody(`${received} bytes, not the ${declared} of its content-length`));
    finish(null, into ?? Buffer.concat(chunks, received));
  };
  payload.on('data', onData);
  payload.on('end', onEnd);
  payload.on('error', finish);
}

/** Installs the hooks and parsers above; before any route is registered. */
export function installBodyRules(app: FastifyInstance, budget: BodyBudget, maxJsonBytes: number, pool: BufferPool): void {
  app.addHook('onRoute', (route) => {
    const types = bodyTypes(route.schema);
    if (types === JSON_TYPES) route.bodyLimit ??= maxJsonBytes; // a body schema without `consumes`
    if (types?.some((t) => MSGPACK_TYPES.includes(t)) && !route.config?.msgpack) {
      throw new Error(`${String(route.method)} ${route.url} takes msgpack without config.msgpack bounds`);
    }
  });
  app.addHook('onRequest', checkBodyType);
  app.addHook('onRequest', reserveBody(budget));
  const parseJson = app.getDefaultJsonParser('error', 'error');
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'buffer' }, (request, body, done) => {
    try {
      checkJsonBounds(body as Buffer);
    } catch (err) {
      return done(err as Error, undefined);
    }
    parseJson(request, (body as Buffer).toString('utf8'), done);
  });
  app.addContentTypeParser('application/octet-stream', (request, payload, done) => readBlockBody(pool, request, payload, done));
  app.addContentTypeParser(MSGPACK_TYPES, (request, payload, done) => readBlockBody(pool, request, payload, (err, buf) => {
    if (err) return done(err);
    try {
      checkMsgpackBounds(buf!, request.routeOptions.config.msgpack!);
      // The decoded blocks are views into the body's buffer: it is given back only after the answer.
      done(null, unpackr.unpack(buf!));
    } catch (err) {
      done(err instanceof SpillwayError ? err : errors.badBody(`not valid msgpack: ${(err as Error).message}`));
    }
  }));
  // onSend runs once the handler is done with the body (or, for a body refused before the
  // handler, instead of it).
  app.addHook('onSend', (request, _reply, payload, done) => {
    if (request.pooledBody) pool.give(request.pooledBody);
    request.pooledBody = undefined;
    done(null, payload);
  });
}
