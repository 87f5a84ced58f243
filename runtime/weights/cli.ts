/**
 * spillway weights split --in SRC [--in SRC ...] --out DIR --world N [--rules FILE] [--json]
 *
 * SRC is a checkpoint directory, an index JSON, or (repeated) single files.
 */
import { SpillwayError } from '../errors.js';
import { formatBytes, terminalProgress } from './progress.js';
import { splitCheckpoint } from './split.js';

const USAGE = 'usage: spillway weights split --in SRC [--in SRC ...] --out DIR --world N [--rules FILE] [--json]';

/** Removes `--weights DIR` from `args` (doctor's option) and returns DIR. */
export function takeWeightsFlag(args: string[]): string | undefined {
  const at = args.indexOf('--weights');
  if (at < 0) return undefined;
  const [, dir] = args.splice(at, 2);
  if (dir === undefined || dir.startsWith('--')) throw new SpillwayError('INVALID_ARGUMENT', '--weights needs a checkpoint directory, index or file');
  return dir;
}

export async function weightsCommand(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  if (sub !== 'split') {
    console.error(USAGE);
    return 2;
  }
  const inputs: string[] = [];
  let out: string | undefined;
  let world: number | undefined;
  let rules: string | undefined;
  let json = false;
  for (let i = 0; i < rest.length; i++) {
    const arg = rest[i]!;
    const value = () => {
      const v = rest[++i];
      if (v === undefined) throw new SpillwayError('INVALID_ARGUMENT', `${arg} needs a value; ${USAGE}`);
      return v;
    };
    if (arg === '--in') inputs.push(value());
    else if (arg === '--out') out = value();
    else if (arg === '--world') world = Number(value());
    else if (arg === '--rules') rules = value();
    else if (arg === '--json') json = true;
    else throw new SpillwayError('INVALID_ARGUMENT', `unknown option ${arg}; ${USAGE}`);
  }
  if (inputs.length === 0 || out === undefined || world === undefined) throw new SpillwayError('INVALID_ARGUMENT', USAGE);
  const summary = await splitCheckpoint({
    input: inputs.length === 1 ? inputs[0]! : inputs,
    out,
    world,
    rules,
    onProgress: json ? undefined : terminalProgress('split'),
  });
  if (json) {
    console.log(JSON.stringify(summary, null, 2));
  } else {
    const t = summary.tensors;
    console.log(`split ${t.column + t.row + t.replicated} tensors for world ${summary.world} into ${summary.out}: ${t.column} column-parallel, ${t.row} row-parallel, ${t.replicated} replicated`);
    console.log(`read ${formatBytes(summary.bytesRead)} in ${summary.seconds.toFixed(2)} s (${(summary.bytesRead / summary.seconds / 1e9).toFixed(2)} GB/s); each rank holds ${formatBytes(summary.rankBytes)}`);
  }
  return 0;
}
