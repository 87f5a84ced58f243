/**
 * The optional bearer token. Tokens are compared as SHA-256 digests with timingSafeEqual:
 * equal lengths whatever was sent, and no early exit that would time the match. The
 * token itself is never logged (server.ts redacts the authorization header) nor shown.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { onRequestHookHandler } from 'fastify';
import { SpillwayError } from '../runtime/errors.js';

function digest(s: string): Buffer {
  return createHash('sha256').update(s).digest();
}

export function requireBearer(token: string): onRequestHookHandler {
  const expected = digest(token);
  return (request, reply, done) => {
    const header = request.headers.authorization ?? '';
    const match = /^Bearer +(\S+) *$/i.exec(header);
    if (match && timingSafeEqual(digest(match[1]!), expected)) return done();
    reply.header('www-authenticate', 'Bearer realm="spillway"');
    done(new SpillwayError('UNAUTHORIZED', header ? 'the bearer token is not valid' : 'this server wants Authorization: Bearer <token>', { field: 'authorization' }));
  };
}
