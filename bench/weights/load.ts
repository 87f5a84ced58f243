/**
 * Loads a checkpoint with spillway's loader into the named sink and prints one JSON line:
 * bytes, seconds, GB/s. The page cache is the caller's business (run.sh drops it first).
 *
 *   node dist/bench/weights/load.js --source DIR [--sink host] [--rank R --world N]
 *                                   [--concurrency 16] [--request-bytes 16MiB]
 *
 * The host sink's reads run on libuv's pool, sized from UV_THREADPOOL_SIZE when the
 * process starts (an ES module sets it too late): run.sh sets it to the concurrency.
 */
import { performance } from 'node:perf_hooks';
import { parseConfig } from '../../runtime/config.js';
import { SpillwayError } from '../../runtime/errors.js';
import { createSink, executePlan, planWeights, terminalProgress } from '../../runtime/weights/index.js';

const FLAGS: Record<string, string> = {
  '--source': 'source', '--sink': 'sink', '--rank': 'rank', '--world': 'world',
  '--concurrency': 'concurrency', '--request-bytes': 'requestBytes',
};

async function main(argv: string[]): Promise<void> {
  const args: Record<string, string> = { sink: 'host' };
  for (let i = 0; i < argv.length; i += 2) {
    const key = FLAGS[argv[i]!];
    if (!key || argv[i + 1] === undefined) throw new SpillwayError('INVALID_ARGUMENT', `usage: load.js ${Object.keys(FLAGS).map((f) => `${f} X`).join(' ')}`);
    args[key] = argv[i + 1]!;
  }
  const { sink: sinkName, source, requestBytes, ...numbers } = args;
  const weights = parseConfig({
    weights: { source, requestBytes, ...Object.fromEntries(Object.entries(numbers).map(([k, v]) => [k, Number(v)])) },
  }).weights;
  const sink = createSink(sinkName!);
  const start = performance.now();
  const plan = await planWeights(weights);
  const planSeconds = (performance.now() - start) / 1000;
  const loaded = await executePlan(plan, sink, { concurrency: weights.concurrency, onProgress: terminalProgress('load', process.stderr) });
  console.log(JSON.stringify({
    loader: 'spillway',
    sink: sink.name,
    layout: plan.layout,
    rank: plan.rank,
    world: plan.world,
    files: plan.files.length,
    tensors: plan.tensors.length,
    bytes: loaded.bytesRead,
    tensorBytes: plan.tensorBytes,
    arenaBytes: plan.arenaBytes,
    requests: plan.requests.length,
    concurrency: weights.concurrency,
    requestBytes: weights.requestBytes,
    uvThreadpoolSize: process.env.UV_THREADPOOL_SIZE ?? 'unset (libuv default 4)',
    planSeconds,
    seconds: loaded.seconds,
    gbps: loaded.gbps,
    wallSeconds: (performance.now() - start) / 1000,
  }));
}

main(process.argv.slice(2)).catch((err: unknown) => {
  console.error(err instanceof SpillwayError ? `load: ${err.message}` : err);
  process.exitCode = 1;
});
