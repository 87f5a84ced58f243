/**
 * One JSON shape for every error: { error: { code, message, ...details } }, with the
 * HTTP status of the code from runtime/errors.ts. Validation errors name the field.
 */
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { SpillwayError } from '../runtime/errors.js';

export function errorBody(err: SpillwayError) {
  return { error: { code: err.code, message: err.message, ...err.details } };
}

/** What fastify's own request errors are about, for the `field` of the answer. */
const FASTIFY_FIELDS: Record<string, string> = {
  FST_ERR_CTP_INVALID_MEDIA_TYPE: 'content-type',
  FST_ERR_CTP_INVALID_TYPE: 'content-type',
  FST_ERR_CTP_BODY_TOO_LARGE: 'body',
  FST_ERR_CTP_EMPTY_JSON_BODY: 'body',
  FST_ERR_CTP_INVALID_JSON_BODY: 'body',
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: 'content-length',
  FST_ERR_BAD_URL: 'url',
};

/** Errors fastify raises before routing (a path that is not valid URL encoding): same shape. */
export function answerFrameworkError(err: FastifyError, _request: FastifyRequest, reply: FastifyReply): void {
  void reply.status(400).send(errorBody(new SpillwayError('INVALID_ARGUMENT', err.message, { field: FASTIFY_FIELDS[err.code] ?? 'url' })));
}

export function installErrorHandler(app: FastifyInstance): void {
  app.setErrorHandler((err: FastifyError | SpillwayError, request, reply) => {
    if (err instanceof SpillwayError) {
      if (err.status >= 500) request.log.error({ err }, 'request failed');
      return reply.status(err.status).send(errorBody(err));
    }
    const status = err.statusCode ?? 500;
    if (status >= 500) {
      request.log.error({ err }, 'request failed');
      return reply.status(500).send(errorBody(new SpillwayError('INTERNAL', 'internal error')));
    }
    const field = FASTIFY_FIELDS[err.code] ?? (err instanceof SyntaxError ? 'body' : undefined);
    const details = status === 413 ? { limitBytes: request.routeOptions.bodyLimit } : {};
    const code = status === 413 ? 'PAYLOAD_TOO_LARGE' : status === 415 ? 'UNSUPPORTED_MEDIA_TYPE' : 'INVALID_ARGUMENT';
    return reply.status(status).send(errorBody(new SpillwayError(code, err.message, { ...(field ? { field } : {}), ...details })));
  });
  app.setNotFoundHandler((request, reply) => {
    reply.status(404).send(errorBody(noRoute(request)));
  });
}

/** The answer to a path and method that name no route. */
export function noRoute(request: FastifyRequest): SpillwayError {
  return new SpillwayError('NOT_FOUND', `no route ${request.method} ${request.url}`);
}
