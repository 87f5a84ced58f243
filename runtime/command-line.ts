/**
 * The command line's option tables and what is made from them: node's parseArgs
 * configuration and each command's usage text, so that what is accepted and what the help
 * says never disagree. Every command takes --help/-h and --version; an unknown option, a
 * stray argument or a missing required option is a UsageError (exit code 2, with the usage).
 */
import { parseArgs, type ParseArgsConfig } from 'node:util';

export interface OptionSpec {
  type: 'string' | 'boolean';
  short?: string;
  multiple?: boolean;
  required?: boolean;
  /** The value's name in the usage text (string options): FILE, N, LIST. */
  value?: string;
  help: string;
}

export type OptionTable = Record<string, OptionSpec>;

/** Parsed options by name: strings, lists of strings (multiple), booleans. */
export type OptionValues = Record<string, string | string[] | boolean | undefined>;

export interface Command {
  /** As typed after `spillway`: "serve", "weights split". */
  name: string;
  /** One line, for the list of commands. */
  summary: string;
  /** What the command does, for its own usage text. */
  description: string;
  options: OptionTable;
  /** Resolves to the exit code, or to null for a command that keeps running (serve). */
  run(values: OptionValues): Promise<number | null>;
}

/** What every command takes. */
export const COMMON_OPTIONS: OptionTable = {
  help: { type: 'boolean', short: 'h', help: 'show this help and exit' },
  version: { type: 'boolean', help: 'print the version and exit' },
};

/** A command line that does not fit the command's table: answered with its usage, exit code 2. */
export class UsageError extends Error {
  constructor(message: string, readonly usage: string) {
    super(message);
  }
}

function optionLabel(name: string, spec: OptionSpec): string {
  const long = `--${name}${spec.type === 'string' ? ` ${spec.value ?? 'VALUE'}` : ''}`;
  return spec.short ? `-${spec.short}, ${long}` : long;
}

/** The usage text of one command, from its option table. */
export function usage(command: Command): string {
  const table = { ...command.options, ...COMMON_OPTIONS };
  const required = Object.entries(command.options).filter(([, s]) => s.required).map(([n, s]) => optionLabel(n, s));
  const labels = Object.entries(table).map(([name, spec]) => [optionLabel(name, spec), spec] as const);
  const width = Math.max(...labels.map(([label]) => label.length)) + 2;
  const lines = labels.map(([label, spec]) => {
    const notes = [spec.required ? 'required' : '', spec.multiple ? 'repeatable' : ''].filter(Boolean).join(', ');
    return `  ${label.padEnd(width)}${spec.help}${notes ? ` (${notes})` : ''}`;
  });
  return [`usage: spillway ${command.name} ${[...required, '[options]'].join(' ')}`, '', command.description, '', 'options:', ...lines].join('\n');
}

/** Parses a command's arguments against its table (and the common options). */
export function parseCommand(command: Command, args: string[]): OptionValues {
  const table = { ...command.options, ...COMMON_OPTIONS };
  const options: ParseArgsConfig['options'] = {};
  for (const [name, { type, short, multiple }] of Object.entries(table)) {
    options[name] = { type, multiple: multiple === true, ...(short === undefined ? {} : { short }) };
  }
  let values: OptionValues;
  try {
    values = parseArgs({ args, options, strict: true, allowPositionals: false }).values as OptionValues;
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code?.startsWith('ERR_PARSE_ARGS_')) throw new UsageError((err as Error).message, usage(command));
    throw err;
  }
  if (!values.help && !values.version) {
    const missing = Object.entries(command.options).find(([name, spec]) => spec.required && values[name] === undefined);
    if (missing) throw new UsageError(`option --${missing[0]} is required`, usage(command));
  }
  return values;
}

/** A positive integer option, or a UsageError naming it. */
export function positiveInteger(command: Command, values: OptionValues, name: string): number {
  const text = values[name];
  const n = typeof text === 'string' && /^\d+$/.test(text) ? Number(text) : NaN;
  if (!Number.isSafeInteger(n) || n < 1) throw new UsageError(`option --${name} must be a positive integer, got ${JSON.stringify(text)}`, usage(command));
  return n;
}
