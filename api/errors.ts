/**
 * One JSON shape for every error: { error: { code, message, ...details } }, with the
 * HTTP status of the code from runtime/errors.ts. Validation errors name the field.
 */
import type { FastifyError, FastifyInstance } from 'fastify';
import type { z } from 'zod';
import { SpillwayError } from '../runtime/errors.js';

export function errorBody(err: SpillwayError) {
  return { error: { code: err.code, message: err.message, ...err.details } };
}

/** Validates `value` with a zod schema; a failure is INVALID_ARGUMENT naming the field. */
export function parse<S extends z.ZodType>(schema: S, value: unknown, where: string): z.infer<S> {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  const issue = result.error.issues[0]!;
  const field = [where, ...issue.path.map(String)].join('.');
  throw new SpillwayError('INVALID_ARGUMENT', `${field}: ${issue.message}`, { field });
}

export function installErrorHandler(app: FastifyInstance): void {
  app.setErrorHandler((err: FastifyError | SpillwayError, request, reply) => {
    if (err instanceof SpillwayError) {
      if (err.status >= 500) request.log.error({ err }, 'request failed');
      return reply.status(err.status).send(errorBody(err));
    }
    const status = (err as FastifyError).statusCode ?? 500;
    const code = status === 413 ? 'PAYLOAD_TOO_LARGE' : status === 415 ? 'INVALID_ARGUMENT' : status < 500 ? 'INVALID_ARGUMENT' : 'INTERNAL';
    if (status >= 500) request.log.error({ err }, 'request failed');
    return reply.status(status).send({ error: { code, message: status >= 500 ? 'internal error' : err.message } });
  });
  app.setNotFoundHandler((request, reply) => {
    reply.status(404).send({ error: { code: 'NOT_FOUND', message: `no route ${request.method} ${request.url}` } });
  });
}
