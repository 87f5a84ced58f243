/**
 * Zod as fastify's schema language. Routes put zod schemas in their `schema`; this file
 * makes fastify validate with them (a failure is INVALID_ARGUMENT naming the field), gives
 * handlers the parsed types, and turns them into JSON Schema for the OpenAPI document.
 */
import type { FastifySchema, FastifySchemaCompiler, FastifyTypeProvider } from 'fastify';
import { z } from 'zod';
import { SpillwayError } from '../runtime/errors.js';

export interface ZodTypeProvider extends FastifyTypeProvider {
  validator: this['schema'] extends z.ZodType ? z.output<this['schema']> : unknown;
  serializer: this['schema'] extends z.ZodType ? z.input<this['schema']> : unknown;
}

/** The first issue of a failed parse as INVALID_ARGUMENT, naming the field ("body.count"). */
function invalidArgument(error: z.ZodError, where: string): SpillwayError {
  const issue = error.issues[0]!;
  const field = [where, ...issue.path.map(String)].join('.');
  return new SpillwayError('INVALID_ARGUMENT', `${field}: ${issue.message}`, { field });
}

const PART_NAMES: Record<string, string> = { body: 'body', params: 'params', querystring: 'query', headers: 'headers' };

/** Unknown keys named in an answer: zod would list them all, and a JSON body may hold a hundred thousand. */
const KEYS_NAMED = 3;

/**
 * Only the first issue is reported, so the parse stops at it: zod would otherwise build an
 * issue for every bad item of an array, a second of work for a JSON body of a million.
 * (`abortEarly` is zod's own option for its `validate`; a zod without it parses on.)
 */
const FIRST_ISSUE = {
  abortEarly: true,
  error: (issue: z.core.$ZodRawIssue) => {
    if (issue.code !== 'unrecognized_keys' || issue.keys.length <= KEYS_NAMED) return undefined;
    const named = issue.keys.slice(0, KEYS_NAMED).map((k) => JSON.stringify(k.slice(0, 64))).join(', ');
    return `Unrecognized keys: ${named} and ${issue.keys.length - KEYS_NAMED} more`;
  },
} as z.core.ParseContext<z.core.$ZodIssue>;

export const zodValidatorCompiler: FastifySchemaCompiler<z.ZodType> = ({ schema, httpPart }) => {
  const where = PART_NAMES[httpPart ?? 'body'] ?? String(httpPart);
  // fastify hands a missing part over as null.
  return (value: unknown) => {
    const result = schema.safeParse(value ?? undefined, FIRST_ISSUE);
    return result.success ? { value: result.data } : { error: invalidArgument(result.error, where) };
  };
};

/** Response schemas document; replies are plain JSON.stringify (or bytes, untouched). */
export const jsonSerializerCompiler = () => (data: unknown) => JSON.stringify(data);

function isZod(value: unknown): value is z.ZodType {
  return value instanceof z.ZodType;
}

function jsonSchema(schema: z.ZodType, io: 'input' | 'output'): Record<string, unknown> {
  return z.toJSONSchema(schema, { target: 'openapi-3.0', io, unrepresentable: 'any' }) as Record<string, unknown>;
}

/**
 * A response of `mediaType` bytes that decode to `schema`: documented from the schema, while
 * the handler sends the encoded bytes (so its reply is not typed as the decoded value).
 */
export function encodedResponse(mediaType: string, schema: z.ZodType, description: string) {
  return { description, content: { [mediaType]: { schema: jsonSchema(schema, 'output') } } };
}

/** A response entry: a zod schema, or { description?, content: { [mediaType]: { schema } } }. */
function responseSchema(entry: unknown): unknown {
  if (isZod(entry)) return jsonSchema(entry, 'output');
  const e = entry as { content?: Record<string, { schema: unknown }> };
  if (!e?.content) return entry;
  const content = Object.fromEntries(Object.entries(e.content).map(([type, media]) => [
    type, { ...media, schema: isZod(media.schema) ? jsonSchema(media.schema, 'output') : media.schema },
  ]));
  return { ...e, content };
}

/** @fastify/swagger's transform: the routes' zod schemas as OpenAPI 3.0 JSON Schema. */
export function openApiTransform({ schema, url }: { schema: FastifySchema; url: string }) {
  if (!schema) return { schema, url };
  const out: Record<string, unknown> = { ...schema };
  for (const part of ['body', 'params', 'querystring', 'headers'] as const) {
    const s = out[part];
    if (isZod(s)) out[part] = jsonSchema(s, 'input');
  }
  if (schema.response) {
    out.response = Object.fromEntries(Object.entries(schema.response as Record<string, unknown>).map(([status, r]) => [status, responseSchema(r)]));
  }
  return { schema: out as FastifySchema, url };
}
