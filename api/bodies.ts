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
 *   decoded (api/msgpack-bounds.ts).
 */
import type { IncomingHttpHeaders } from 'node:http';
import type { FastifyInstance, FastifySchema, onRequestHookHandler } from 'fastify';
import { Unpackr } from 'msgpackr';
import { errors, SpillwayError } from '../runtime/errors.js';
import { noRoute } from './errors.js';
import type { BodyBudget } from './load.js';
import { checkMsgpackBounds, type MsgpackBounds } from './msgpack-bounds.js';

declare module 'fastify' {
  interface FastifyContextConfig {
    /** What a msgpack body of the route may expand to; required of a route that takes msgpack. */
    msgpack?: MsgpackBounds;
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
 * route's limit. A declared length over the limit is answered 413 here, its body left
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
    try {
      budget.hold(reply, length ?? limit, 'a request body');
    } catch (err) {
      return done(err as Error);
    }
    done();
  };
}

/** Installs the hooks and parsers above; before any route is registered. */
export function installBodyRules(app: FastifyInstance, budget: BodyBudget, maxJsonBytes: number): void {
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
  app.addContentTypeParser('application/octet-stream', { parseAs: 'buffer' }, (_req, body, done) => done(null, body));
  app.addContentTypeParser(MSGPACK_TYPES, { parseAs: 'buffer' }, (request, body, done) => {
    const buf = body as Buffer;
    try {
      checkMsgpackBounds(buf, request.routeOptions.config.msgpack!);
      done(null, unpackr.unpack(buf));
    } catch (err) {
      done(err instanceof SpillwayError ? err : errors.badBody(`not valid msgpack: ${(err as Error).message}`));
    }
  });
}
