#!/usr/bin/env node
/**
 * spillway serve  [--config FILE] [--set path=value ...]   start the HTTP API
 * spillway doctor [--config FILE] [--set path=value ...] [--json] [--weights SRC]
 * spillway weights split --in SRC --out DIR --world N [--rules FILE]   (runtime/weights/cli.ts)
 */
import { loadConfig } from './config.js';
import { doctor, formatDoctor } from './doctor.js';
import { SpillwayError } from './errors.js';
import { takeWeightsFlag, weightsCommand } from './weights/cli.js';

async function main(argv: string[]): Promise<number> {
  const [command = 'serve', ...rest] = argv;
  if (command === 'weights') return weightsCommand(rest);
  const weights = command === 'doctor' ? takeWeightsFlag(rest) : undefined;
  const json = rest.includes('--json');
  const config = loadConfig(rest.filter((a) => a !== '--json'));
  if (command === 'doctor') {
    const report = await doctor(config, weights);
    console.log(json ? JSON.stringify(report, null, 2) : formatDoctor(report));
    return report.weights && report.weights.problems.length > 0 ? 1 : 0;
  }
  if (command === 'serve') {
    const { serve } = await import('../api/server.js');
    await serve(config);
    return -1; // keep running
  }
  console.error(`unknown command "${command}"; use serve, doctor or weights`);
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
