/**
 * Weights as `npm start` loads them: starts `spillway serve` with `weights.source` set (and
 * its other settings as given), waits until readiness turns 200, and prints one JSON line:
 * the load's bytes, seconds and GB/s as /v1/weights reports them, and the time from process
 * start to ready. The page cache is the caller's business (run.sh drops it first).
 *
 * With --gpus, `spillway serve --gpus LIST` (SOURCE a split checkpoint, one rank per GPU):
 * each rank's load with its device, and the group's: every rank's bytes over the slowest
 * rank's load time, the ranks having started together.
 *
 *   node dist/bench/weights/serve.js --source DIR [--gpus 0,1] [--set path=value ...]
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { ServerProcess, startServerGroup } from '../../api/process.js';

const TIMEOUT_MS = 300_000;

/** Waits for readiness, then reads how the weights loaded. */
async function loaded(url: string, start: number) {
  for (;;) {
    if (performance.now() - start > TIMEOUT_MS) throw new Error(`${url} not ready after ${TIMEOUT_MS / 1000} s`);
    const ready = await fetch(`${url}/v1/ready`).then((r) => r.status, () => 0);
    if (ready === 200) break;
    await sleep(50);
  }
  const readySeconds = (performance.now() - start) / 1000;
  const w = (await (await fetch(`${url}/v1/weights`)).json()) as {
    memory: string; io: string; files: number; tensors: number; progress: { bytesDone: number }; result: { seconds: number; gbps: number };
  };
  const ipc = await fetch(`${url}/v1/weights/ipc`);
  const body = (await ipc.json()) as { deviceIndex?: number; pciBusId?: string; error?: { code: string } };
  return {
    memory: w.memory, io: w.io, files: w.files, tensors: w.tensors,
    bytes: w.progress.bytesDone, seconds: w.result.seconds, gbps: w.result.gbps, readySeconds,
    ipcHandle: ipc.status === 200 ? { exported: true, deviceIndex: body.deviceIndex, pciBusId: body.pciBusId } : `${ipc.status} ${body.error?.code}`,
  };
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { source: { type: 'string' }, gpus: { type: 'string' }, set: { type: 'string', multiple: true } } });
  if (values.source === undefined) throw new Error('usage: serve.js --source DIR [--gpus LIST] [--set path=value ...]');
  const scratch = mkdtempSync(join(tmpdir(), 'spillway-serve-bench-'));
  const args = ['--set', `weights.source=${values.source}`, '--set', 'server.port=0', '--set', `tiers.disk.path=${join(scratch, 'tier2.slots')}`,
    ...(values.set ?? []).flatMap((s) => ['--set', s])];
  const start = performance.now();
  try {
    if (values.gpus === undefined) {
      const server = await ServerProcess.start({ args, timeoutMs: TIMEOUT_MS });
      try {
        const w = await loaded(server.url, start);
        console.log(JSON.stringify({ loader: `spillway serve (${w.memory} memory, io ${w.io})`, ...w }));
      } finally {
        await server.stop();
      }
      return;
    }
    const group = await startServerGroup(values.gpus, args, TIMEOUT_MS);
    try {
      const ranks = await Promise.all(group.urls.map((url) => loaded(url, start)));
      const bytes = ranks.reduce((a, r) => a + r.bytes, 0);
      const seconds = Math.max(...ranks.map((r) => r.seconds));
      console.log(JSON.stringify({
        loader: `spillway serve --gpus ${values.gpus} (${ranks[0]!.memory} memory, io ${ranks.map((r) => r.io).join('/')})`,
        bytes, seconds, gbps: bytes / seconds / 1e9, readySeconds: Math.max(...ranks.map((r) => r.readySeconds)), ranks,
      }));
    } finally {
      group.kill('SIGTERM');
      await group.exited;
    }
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  console.error(`serve bench: ${(err as Error).message}`);
  process.exitCode = 1;
});
