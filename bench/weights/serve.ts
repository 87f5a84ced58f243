/**
 * Weights as `npm start` loads them: starts `spillway serve` with `weights.source` set (and
 * its other settings as given), waits until readiness turns 200, and prints one JSON line:
 * the load's bytes, seconds and GB/s as /v1/weights reports them, and the time from process
 * start to ready. The page cache is the caller's business (run.sh drops it first).
 *
 *   node dist/bench/weights/serve.js --source DIR [--set path=value ...]
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { ServerProcess } from '../../api/process.js';

const TIMEOUT_MS = 300_000;

async function main(argv: string[]): Promise<void> {
  const at = argv.indexOf('--source');
  const source = argv[at + 1];
  if (at < 0 || source === undefined) throw new Error('usage: serve.js --source DIR [--set path=value ...]');
  const sets = argv.filter((_, i) => i !== at && i !== at + 1);
  const scratch = mkdtempSync(join(tmpdir(), 'spillway-serve-bench-'));
  const start = performance.now();
  const server = await ServerProcess.start({
    args: ['--set', `weights.source=${source}`, '--set', 'server.port=0', '--set', `tiers.disk.path=${join(scratch, 'tier2.slots')}`, ...sets],
    timeoutMs: TIMEOUT_MS,
  });
  try {
    for (;;) {
      if (performance.now() - start > TIMEOUT_MS) throw new Error(`not ready after ${TIMEOUT_MS / 1000} s`);
      const ready = await fetch(`${server.url}/v1/ready`).then((r) => r.status, () => 0);
      if (ready === 200) break;
      await sleep(50);
    }
    const readySeconds = (performance.now() - start) / 1000;
    const w = (await (await fetch(`${server.url}/v1/weights`)).json()) as {
      memory: string; io: string; files: number; tensors: number; progress: { bytesDone: number }; result: { seconds: number; gbps: number };
    };
    const ipc = await fetch(`${server.url}/v1/weights/ipc`);
    console.log(JSON.stringify({
      loader: `spillway serve (${w.memory} memory, io ${w.io})`,
      files: w.files,
      tensors: w.tensors,
      bytes: w.progress.bytesDone,
      seconds: w.result.seconds,
      gbps: w.result.gbps,
      readySeconds,
      ipcHandle: ipc.status === 200 ? 'exported' : `${ipc.status} ${((await ipc.json()) as { error: { code: string } }).error.code}`,
    }));
  } finally {
    await server.stop();
    rmSync(scratch, { recursive: true, force: true });
  }
}

main(process.argv.slice(2)).catch((err: unknown) => {
  console.error(`serve bench: ${(err as Error).message}`);
  process.exitCode = 1;
});
