/** The command line: help and version everywhere, usage per command, exit code 2 for a command line that does not fit. */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { projectRoot } from '../../runtime/config.js';
import { missingNodeFlags, NODE_FLAGS } from '../../runtime/node-flags.js';

const cli = join(projectRoot, 'dist', 'runtime', 'cli.js');
const { version } = JSON.parse(readFileSync(join(projectRoot, 'package.json'), 'utf8')) as { version: string };
const run = (...args: string[]) => spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8' });

test('--help and -h list the commands; --version prints the package version', () => {
  for (const flag of ['--help', '-h']) {
    const r = run(flag);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /^usage: spillway <command> \[options\]/);
    for (const command of ['serve', 'doctor', 'weights split']) assert.match(r.stdout, new RegExp(`\\n  ${command} +\\S`));
  }
  const v = run('--version');
  assert.equal(v.status, 0);
  assert.equal(v.stdout.trim(), version);
});

test('every command answers --help with its own usage, made from its options, and --version', () => {
  const expected: Record<string, string[]> = {
    serve: ['--config FILE', '--set PATH=VALUE', '--gpus LIST'],
    doctor: ['--config FILE', '--set PATH=VALUE', '--json', '--weights SRC'],
    'weights split': ['--in SRC', '--out DIR', '--world N', '--rules FILE', '--json'],
  };
  for (const [command, options] of Object.entries(expected)) {
    const words = command.split(' ');
    const help = run(...words, '--help');
    assert.equal(help.status, 0, help.stderr);
    assert.match(help.stdout, new RegExp(`^usage: spillway ${command} `));
    for (const option of [...options, '-h, --help', '--version']) assert.ok(help.stdout.includes(`\n  ${option}`), `${command} --help lists ${option}`);
    assert.equal(run(...words, '-h').stdout, help.stdout);
    assert.equal(run(...words, '--version').stdout.trim(), version);
  }
  assert.match(run('weights', 'split', '-h').stdout, /--in SRC +.*\(required, repeatable\)/);
});

test('an unknown option, a stray argument, a missing or malformed value: the message, the usage, exit code 2', () => {
  const cases: Array<[string[], RegExp, RegExp]> = [
    [['doctor', '--bogus'], /Unknown option '--bogus'/, /usage: spillway doctor /],
    [['serve', 'extra'], /Unexpected argument 'extra'/, /usage: spillway serve /],
    [['serve', '--config'], /--config/, /usage: spillway serve /],
    [['weights', 'split', '--in', 'x'], /option --out is required/, /usage: spillway weights split --in SRC --out DIR --world N/],
    [['weights', 'split', '--in', 'x', '--out', 'y', '--world', 'two'], /option --world must be a positive integer, got "two"/, /usage: spillway weights split/],
    [['serve', '--gpus', '0,x'], /option --gpus wants device indices/, /usage: spillway serve /],
    [['serve', '--gpus', '1,1'], /option --gpus names device 1 twice/, /usage: spillway serve /],
  ];
  for (const [args, message, usage] of cases) {
    const r = run(...args);
    assert.equal(r.status, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, message, args.join(' '));
    assert.match(r.stderr, usage, args.join(' '));
    assert.equal(r.stdout, '', 'usage errors go to stderr');
  }
});

test('an unknown command is named, with the list of commands, exit code 2', () => {
  const cases = [
    [['frobnicate'], 'unknown command "frobnicate"', 'spillway'],
    [['--bogus'], 'unknown command "--bogus"', 'spillway'],
    [['weights', 'merge'], 'unknown command "weights merge"', 'spillway weights'],
    [['weights', '--bogus'], 'unknown command "weights --bogus"', 'spillway weights'],
    [['weights'], '"weights" wants a command', 'spillway weights'],
  ] as const;
  for (const [args, message, prefix] of cases) {
    const r = run(...args);
    assert.equal(r.status, 2, args.join(' '));
    assert.ok(r.stderr.includes(`spillway: ${message}\n`), `${args.join(' ')}: ${r.stderr}`);
    assert.ok(r.stderr.includes(`usage: ${prefix} <command> [options]`), `${args.join(' ')}: ${r.stderr}`);
    assert.equal(r.stdout, '');
  }
});

test('a group of commands answers --help and -h with its commands, and --version', () => {
  for (const flag of ['--help', '-h']) {
    const r = run('weights', flag);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /^usage: spillway weights <command> \[options\]/);
    assert.match(r.stdout, /\n  weights split +\S/);
    assert.doesNotMatch(r.stdout, /\n  doctor /, 'only the group\'s commands');
  }
  assert.equal(run('weights', '--version').stdout.trim(), version);
});

test('a bad configuration value is an error of the configuration (exit code 1), naming the field', () => {
  const r = run('doctor', '--set', 'gpu.device=-1');
  assert.equal(r.status, 1);
  assert.match(r.stderr, /^spillway: config gpu\.device: /);
});

test('every way of starting a server passes the server\'s V8 flags: the bin\'s shebang, npm start, the restore bench', () => {
  const shebang = readFileSync(cli, 'utf8').split('\n')[0]!;
  const start = (JSON.parse(readFileSync(join(projectRoot, 'package.json'), 'utf8')) as { scripts: Record<string, string> }).scripts.start!;
  const restore = readFileSync(join(projectRoot, 'bench', 'restore', 'run.sh'), 'utf8');
  for (const flag of NODE_FLAGS) {
    assert.ok(shebang.startsWith('#!/usr/bin/env -S node ') && shebang.includes(flag), `${shebang} passes ${flag}`);
    assert.ok(start.includes(`node ${flag} `), `npm start passes ${flag}`);
    assert.ok(restore.includes(`node ${flag} dist/runtime/cli.js serve`), `bench/restore/run.sh passes ${flag}`);
  }
  assert.deepEqual(missingNodeFlags(['--inspect', ...NODE_FLAGS]), []);
  assert.deepEqual(missingNodeFlags([]), NODE_FLAGS);
});
