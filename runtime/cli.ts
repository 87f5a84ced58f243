#!/usr/bin/env node
/**
 * spillway serve  [--config FILE] [--set path=value ...]   start the HTTP API
 * spillway doctor [--config FILE] [--set path=value ...] [--json]
 */
import { loadConfig } from './config.js';
import { doctor, formatDoctor } from './doctor.js';
import { SpillwayError } from './errors.js';

async function main(argv: string[]): Promise<number> {
  const [command = 'serve', ...rest] = argv;
  const json = rest.includes('--json');
  const config = loadConfig(rest.filter((a) => a !== '--json'));
  if (command === 'doctor') {
    const report = await doctor(config);
    console.log(json ? JSON.stringify(report, null, 2) : formatDoctor(report));
    return 0;
  }
  if (command === 'serve') {
    const { serve } = await import('../api/server.js');
    await serve(config);
    return -1; // keep running
  }
  console.error(`unknown command "${command}"; use serve or doctor`);
  return 2;
}

main(process.argv.slice(2)).then(
  (code) => {
    if (code >= 0) process.exitCode = code;
  },
  (err: unknown) => {
    console.error(err instanceof SpillwayError ? `spillway: ${err.message}` : err);
    process.exitCode = 1;
  },
);
