#!/usr/bin/env -S node --initial-old-space-size=128
/**
 * The `spillway` command: one table of commands, each with its option table
 * (runtime/command-line.ts), from which its parser and its usage text are both made.
 *
 *   spillway serve [--config FILE] [--set PATH=VALUE ...] [--gpus LIST]   (the default)
 *   spillway doctor [--config FILE] [--set PATH=VALUE ...] [--json] [--weights SRC]
 *   spillway weights split --in SRC ... --out DIR --world N [--rules FILE] [--json]
 *
 * Exit codes: 0 done, 1 failed (the error's message), 2 a command line that does not fit
 * (the message and the usage).
 */
import { parseCommand, usage, UsageError, type Command, type OptionTable, type OptionValues } from './command-line.js';
import { loadConfig, type ConfigSources } from './config.js';
import { doctor, formatDoctor } from './doctor.js';
import { SpillwayError } from './errors.js';
import { launch, parseGpuList, planRanks } from './launcher.js';
import { version } from './version.js';
import { splitCommand } from './weights/split-command.js';

/** How serve and doctor are configured (runtime/config.ts). */
const CONFIG_OPTIONS: OptionTable = {
  config: { type: 'string', value: 'FILE', help: 'a JSON configuration file' },
  set: { type: 'string', multiple: true, value: 'PATH=VALUE', help: 'one setting over the file, e.g. tiers.raw.bytes=8GiB' },
};

function configSources(values: OptionValues): ConfigSources {
  return { file: values.config as string | undefined, sets: (values.set as string[] | undefined) ?? [] };
}

const serveCommand: Command = {
  name: 'serve',
  summary: 'serve the HTTP API (the default command)',
  description: 'Serves the HTTP API on server.host:server.port (HOST and PORT from the environment win).\nWith --gpus, one runtime per GPU listed, each its own process with its weights rank, on\nconsecutive ports, each with a disk tier file of its own (README.md, "Several GPUs").',
  options: {
    ...CONFIG_OPTIONS,
    gpus: { type: 'string', value: 'LIST', help: 'device indices, e.g. 0,1: one runtime per GPU, rank r on port server.port + r' },
  },
  async run(values) {
    const sources = configSources(values);
    const config = loadConfig(sources);
    if (values.gpus !== undefined) {
      let gpus: number[];
      try {
        gpus = parseGpuList(values.gpus as string);
      } catch (err) {
        throw new UsageError((err as Error).message, usage(serveCommand));
      }
      return launch(sources, planRanks(config, gpus));
    }
    const { serve } = await import('../api/serve.js');
    await serve(config);
    return null;
  },
};

const doctorCommand: Command = {
  name: 'doctor',
  summary: 'what the machine offers and what spillway will use',
  description: 'Prints what the machine offers (every visible GPU, CUDA, cuFile, the disk tier\'s filesystem,\nO_DIRECT) and what spillway will use; exits 1 when the weights have problems.',
  options: {
    ...CONFIG_OPTIONS,
    json: { type: 'boolean', help: 'print the report as JSON' },
    weights: { type: 'string', value: 'SRC', help: 'dry-run this checkpoint instead of weights.source' },
  },
  async run(values) {
    const report = await doctor(loadConfig(configSources(values)), values.weights as string | undefined);
    console.log(values.json ? JSON.stringify(report, null, 2) : formatDoctor(report));
    return report.weights && report.weights.problems.length > 0 ? 1 : 0;
  },
};

const COMMANDS: Command[] = [serveCommand, doctorCommand, splitCommand];

/** A usage text listing `commands`, for `spillway` itself or for a group such as `spillway weights`. */
function listUsage(prefix: string, commands: Command[], footer: string): string {
  const width = Math.max(...commands.map((c) => c.name.length)) + 2;
  return [
    `usage: ${prefix} <command> [options]`,
    '',
    'commands:',
    ...commands.map((c) => `  ${c.name.padEnd(width)}${c.summary}`),
    '',
    footer,
  ].join('\n');
}

function topUsage(): string {
  return listUsage('spillway', COMMANDS, 'Without a command, spillway serves. "spillway <command> --help" lists a command\'s options; "spillway --version" prints the version.');
}

/** The commands named `group <word>` (spillway weights split), or none when `group` is not a group. */
function groupMembers(group: string | undefined): Command[] {
  return group === undefined ? [] : COMMANDS.filter((c) => c.name.startsWith(`${group} `));
}

function groupUsage(group: string): string {
  return listUsage(`spillway ${group}`, groupMembers(group), `"spillway ${group} <command> --help" lists a command's options.`);
}

/** The command whose words begin `argv`, and the arguments after them. */
function findCommand(argv: string[]): { command: Command; args: string[] } | undefined {
  for (const command of COMMANDS) {
    const words = command.name.split(' ');
    if (words.every((w, i) => argv[i] === w)) return { command, args: argv.slice(words.length) };
  }
  return undefined;
}

/** Answers `--help`/`-h` with the usage and `--version` with the version; false for any other word. */
function answeredHelpOrVersion(word: string | undefined, usageText: () => string): boolean {
  if (word === '--help' || word === '-h') console.log(usageText());
  else if (word === '--version') console.log(version);
  else return false;
  return true;
}

async function main(argv: string[]): Promise<number | null> {
  const first = argv[0];
  if (answeredHelpOrVersion(first, topUsage)) return 0;
  const found = argv.length === 0 ? { command: serveCommand, args: [] } : findCommand(argv);
  if (!found) {
    if (groupMembers(first).length === 0) throw new UsageError(`unknown command "${first}"`, topUsage());
    const group = first as string;
    const second = argv[1];
    if (answeredHelpOrVersion(second, () => groupUsage(group))) return 0;
    throw new UsageError(second === undefined ? `"${group}" wants a command` : `unknown command "${group} ${second}"`, groupUsage(group));
  }
  const values = parseCommand(found.command, found.args);
  if (values.help) {
    console.log(usage(found.command));
    return 0;
  }
  if (values.version) {
    console.log(version);
    return 0;
  }
  return found.command.run(values);
}

main(process.argv.slice(2)).then(
  (code) => {
    if (code !== null) process.exitCode = code;
  },
  (err: unknown) => {
    if (err instanceof UsageError) {
      console.error(`spillway: ${err.message}\n\n${err.usage}`);
      process.exitCode = 2;
      return;
    }
    console.error(err instanceof SpillwayError ? `spillway: ${err.message}` : err);
    process.exitCode = 1;
  },
);
