/**
 * `spillway weights split`: writes a checkpoint split per rank (runtime/weights/split.ts),
 * with a progress bar on a terminal and a summary, or the summary as JSON.
 */
import { positiveInteger, type Command } from '../command-line.js';
import { formatBytes } from '../bytes.js';
import { terminalProgress } from './progress.js';
import { splitCheckpoint } from './split.js';

export const splitCommand: Command = {
  name: 'weights split',
  summary: 'split a checkpoint per tensor-parallel rank',
  description: 'Splits a safetensors checkpoint per tensor-parallel rank: DIR/rank-R-of-N/ holds rank R\'s\npart of each file, for weights.source = DIR with weights.rank and weights.world (docs/WEIGHTS.md).',
  options: {
    in: { type: 'string', multiple: true, required: true, value: 'SRC', help: 'a checkpoint directory, an index JSON, or single files' },
    out: { type: 'string', required: true, value: 'DIR', help: 'an empty directory for the split' },
    world: { type: 'string', required: true, value: 'N', help: 'the number of ranks' },
    rules: { type: 'string', value: 'FILE', help: 'split rules (JSON), consulted before the Llama-style defaults' },
    json: { type: 'boolean', help: 'print the summary as JSON, without progress' },
  },
  async run(values) {
    const world = positiveInteger(splitCommand, values, 'world');
    const inputs = values.in as string[];
    const json = values.json === true;
    const summary = await splitCheckpoint({
      input: inputs.length === 1 ? inputs[0]! : inputs,
      out: values.out as string,
      world,
      rules: values.rules as string | undefined,
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
  },
};
