/**
 * A cross-server prefix restore against the local disk tier, in one run: two `spillway
 * serve` processes share a directory as their shared tier (tiers.shared.path).
 *
 * 1. Server A commits a prefix of N blocks (msgpack batch writes with token ids) and
 *    publishes them to the shared directory (on commit); the bench waits for all N.
 * 2. A's blocks are pushed to its local disk tier by filler blocks (tiers 0 and 1 plus 64),
 *    then restored with one zero-copy attach (`/v1/zero-copy/leases/:id/attach`): the
 *    local disk tier's fill rate (disk read, verify, dequantize into tier 0).
 * 3. Server B, which holds nothing, attaches the same prefix: each block is read from the
 *    shared directory, verified, placed in tier 1 and dequantized into tier 0.
 *    The page cache is dropped first where the bench may (root), so that B reads the disk.
 * 4. A sample of blocks read back from both servers must be equal bit for bit (both are the
 *    same stored bytes, dequantized), and within the 4-bit bound of what was written.
 *
 * Reports both rates (logical GB/s: N x raw block bytes / seconds) and their ratio
 * (target: shared >= 0.8 of disk). Run on the GPU machine, `--dir` on the disk the tiers use:
 *
 *   UV_THREADPOOL_SIZE=64 node dist/bench/shared/run.js --dir /path/on/disk --blocks 1024 --out report.json
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { SpillwayClient } from '../../api/client.js';
import { ServerProcess } from '../../api/process.js';
import { parseConfig } from '../../runtime/config.js';
import { computeLayout } from '../../runtime/layout.js';
import { blockContent, FOUR_BIT_BOUND, relativeError } from '../block-content.js';

const { values: opts } = parseArgs({
  options: {
    dir: { type: 'string' },
    blocks: { type: 'string', default: '1024' },
    out: { type: 'string', default: 'shared-report.json' },
    backend: { type: 'string', default: 'auto' },
  },
});
if (!opts.dir) {
  console.error('usage: node dist/bench/shared/run.js --dir DIR [--blocks N] [--out FILE] [--backend auto|gpu|host]');
  process.exit(2);
}
const dir = resolve(opts.dir);
const blocks = Number(opts.blocks);
if (!Number.isInteger(blocks) || blocks < 1) throw new Error(`--blocks: a positive integer, got ${opts.blocks}`);

const layout = computeLayout(parseConfig({}));
const raw = layout.rawBlockBytes;
const tpb = layout.tokensPerBlock;
const SOURCES = 16;
const BATCH = 16;
const CHECKED = 32;
const sources = Array.from({ length: SOURCES }, (_, i) => blockContent(1000 + i, raw));

const sharedDir = join(dir, 'shared');
rmSync(dir, { recursive: true, force: true });
mkdirSync(dir, { recursive: true });
const args = (name: string) => [
  '--set', `backend=${opts.backend}`, '--set', 'server.port=0',
  // Tiers 0 and 1 each hold the whole prefix: one attach restores it, and no restore spills.
  '--set', `tiers.raw.bytes=${(blocks + 64) * raw}`, '--set', `tiers.quantized.bytes=${(blocks + 64) * layout.quantizedBlockBytes}`,
  '--set', `tiers.disk.path=${join(dir, name, 'tier2.slots')}`, '--set', `tiers.disk.bytes=${4 * blocks * raw}`,
  '--set', `tiers.shared.path=${sharedDir}`, '--set', `tiers.shared.bytes=${2 * blocks * raw}`,
];

const tokens = Array.from({ length: blocks * tpb }, (_, i) => (i * 7919) % 128000);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function writeSequence(c: SpillwayClient, id: string, count: number, committed: boolean): Promise<void> {
  await c.createSequence({ id });
  await c.allocate(id, count);
  for (let start = 0; start < count; start += BATCH) {
    const n = Math.min(BATCH, count - start);
    await c.writeBlocks(id, Array.from({ length: n }, (_, k) => {
      const index = start + k;
      return { index, data: sources[index % SOURCES]!, ...(committed ? { tokens: tokens.slice(index * tpb, (index + 1) * tpb) } : {}) };
    }));
  }
}

/** One zero-copy attach of the whole prefix, timed; every entry must have its slot. */
async function restore(c: SpillwayClient, hashes: string[], id: string): Promise<{ seconds: number; attached: number; failed: number }> {
  const lease = await c.createLease({ client: 'bench-shared' });
  const started = process.hrtime.bigint();
  const answer = await c.attach(lease.id, { prefix: hashes, id });
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  const failed = answer.blocks.filter((b) => 'error' in b).length;
  await c.endLease(lease.id);
  return { seconds, attached: answer.attached, failed };
}

function dropPageCache(): string {
  try {
    execFileSync('sync');
    writeFileSync('/proc/sys/vm/drop_caches', '1');
    return 'dropped';
  } catch (err) {
    return `not dropped (${(err as Error).message.split('\n')[0]}): the shared reads may come from memory`;
  }
}

async function main(): Promise<void> {
  const a = await ServerProcess.start({ args: args('a'), logPath: join(dir, 'a.log') });
  const b = await ServerProcess.start({ args: args('b'), logPath: join(dir, 'b.log') });
  try {
    const ca = new SpillwayClient({ baseUrl: a.url });
    const cb = new SpillwayClient({ baseUrl: b.url });
    const status = await ca.status();
    console.log(`backend ${status.backend.name}; disk ${status.backend.paths.disk}; shared ${status.shared?.io}`);

    const writeStarted = process.hrtime.bigint();
    await writeSequence(ca, 'prompt', blocks, true);
    const writeSeconds = Number(process.hrtime.bigint() - writeStarted) / 1e9;
    const hashes = (await ca.lookupPrefix({ tokens })).hashes;
    for (let s = (await ca.status()).shared!; s.published.written! + s.published.exists! < blocks; s = (await ca.status()).shared!) {
      if (s.published.failed! + s.published.skipped! > 0) throw new Error(`publishing failed or skipped: ${JSON.stringify(s)}`);
      await sleep(100);
    }
    const publishedAt = await ca.status();
    // Publishing runs behind the commits: how long after the first write the last block was in the shared directory.
    const publishSeconds = Number(process.hrtime.bigint() - writeStarted) / 1e9;

    // Push the prefix down to A's disk tier: filler through tiers 0 and 1, then gone.
    await ca.freeSequence('prompt');
    const slots = publishedAt.capacity.tiers;
    await writeSequence(ca, 'filler', slots[0]!.slots + slots[1]!.slots + 64, false);
    await ca.freeSequence('filler');
    const onDisk = (await ca.lookupPrefix({ hashes })).cached.filter((x) => x.tier === 'disk').length;
    if (onDisk !== blocks) throw new Error(`${onDisk} of ${blocks} prefix blocks on A's disk tier before the restore`);

    const disk = await restore(ca, hashes, 'from-disk');
    const pageCache = dropPageCache();
    const shared = await restore(cb, hashes, 'from-shared');

    let maxError = 0;
    let unequal = 0;
    for (let k = 0; k < CHECKED; k++) {
      const i = Math.floor((k * blocks) / CHECKED);
      const [x, y] = await Promise.all([ca.readBlock('from-disk', i), cb.readBlock('from-shared', i)]);
      if (!x.data.equals(y.data)) unequal++;
      maxError = Math.max(maxError, relativeError(sources[i % SOURCES]!, y.data));
    }
    const gb = (seconds: number) => (blocks * raw) / seconds / 1e9;
    const report = {
      backend: status.backend.name, sharedIo: status.shared?.io, diskPath: status.backend.paths.disk, pageCache,
      blocks, rawBlockBytes: raw, quantizedBlockBytes: layout.quantizedBlockBytes,
      commit: { writeSeconds, publishedAfterSeconds: publishSeconds },
      disk: { ...disk, logicalGBps: gb(disk.seconds) },
      shared: { ...shared, logicalGBps: gb(shared.seconds), status: (await cb.status()).shared },
      ratio: disk.seconds / shared.seconds,
      target: 0.8,
      checked: { blocks: CHECKED, unequalBetweenServers: unequal, maxRelativeError: maxError, bound: FOUR_BIT_BOUND },
    };
    writeFileSync(opts.out!, JSON.stringify(report, null, 2));
    console.log(`commit of ${blocks} blocks ${writeSeconds.toFixed(2)} s; all published ${publishSeconds.toFixed(2)} s after the first write`);
    console.log(`disk restore ${disk.seconds.toFixed(3)} s (${gb(disk.seconds).toFixed(2)} GB/s logical); shared ${shared.seconds.toFixed(3)} s (${gb(shared.seconds).toFixed(2)} GB/s); ratio ${report.ratio.toFixed(2)} (target >= 0.8); page cache ${pageCache}`);
    const ok = disk.failed === 0 && shared.failed === 0 && disk.attached === blocks && shared.attached === blocks && unequal === 0 && maxError < FOUR_BIT_BOUND;
    if (!ok) {
      console.error(`restore incomplete or wrong: ${JSON.stringify({ disk, shared, unequal, maxError })}`);
      process.exitCode = 1;
    }
  } finally {
    await Promise.all([a.stop(), b.stop()]);
  }
}

await main();
