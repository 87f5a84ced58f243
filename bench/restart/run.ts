/**
 * Warm restart of a full disk tier, against reading the tier file, in one run.
 *
 *   node dist/bench/restart/run.js --dir DIR [--disk 2GiB] [--backend auto|host|gpu] [--out FILE.json]
 *
 * 1. Opens a store with small memory tiers over a disk tier of --disk, and fills the disk
 *    with committed blocks (one sequence after another, each block written with its token
 *    ids, so that it is cached under its prefix hash), until every disk slot is used.
 * 2. Closes it and opens a new store on the same file: the recovery reads the slots' heads,
 *    checks them and caches every committed block again. Its report is kept, and the
 *    prefix of one sequence is looked up and read back (within the 4-bit bound).
 * 3. Reads the whole tier file with dd (O_DIRECT, 16 MiB blocks, after dropping the page
 *    cache where allowed): the time recovery is to stay well under.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { parseConfig, type Config } from '../../runtime/config.js';
import { diskTier } from '../../runtime/layout.js';
import { openStore } from '../../runtime/open.js';
import { blockHash, ROOT_HASH } from '../../runtime/prefix.js';
import { blockContent, FOUR_BIT_BOUND, relativeError } from '../block-content.js';

const { values: args } = parseArgs({
  options: {
    dir: { type: 'string', default: 'data/restart-bench' },
    disk: { type: 'string', default: '2GiB' },
    backend: { type: 'string', default: 'auto' },
    out: { type: 'string' },
  },
});
const dir = args.dir;
mkdirSync(dir, { recursive: true });
const path = join(dir, 'tier.slots');
rmSync(path, { force: true });

const config: Config = parseConfig({
  backend: args.backend,
  tiers: { raw: { bytes: '64MiB' }, quantized: { bytes: '64MiB' }, disk: { path, bytes: args.disk } },
  limits: { maxTokensPerSequence: 16 * 1024 },
});
const SEQUENCE_BLOCKS = 1024;

function tokensOf(sequence: number, index: number): number[] {
  return Array.from({ length: config.model.tokensPerBlock }, (_, j) => (sequence * 1_000_003 + index * 131 + j) & 0x7fffffff);
}

const store = await openStore(config);
const slots = diskTier(store.layout).slots;
const bytes = store.layout.rawBlockBytes;
const sequenceBlocks = Math.min(SEQUENCE_BLOCKS, Math.floor(store.limits.maxTokensPerSequence / store.layout.tokensPerBlock));
// Sixteen contents, block k holding the (k mod 16)-th: making 2 MiB of seeded values in
// JavaScript costs more than writing them.
const sources = Array.from({ length: 16 }, (_, k) => blockContent(k, bytes));
let written = 0;
const fillStarted = performance.now();
for (let s = 0; store.stats().tiers.at(-1)!.used < slots; s++) {
  const { id } = store.createSequence(`fill-${s}`);
  store.allocate(id, sequenceBlocks);
  for (let i = 0; i < sequenceBlocks && store.stats().tiers.at(-1)!.used < slots; i++) {
    await store.write(id, i, sources[i % sources.length]!, tokensOf(s, i));
    written++;
  }
  store.freeSequence(id);
}
const fillS = (performance.now() - fillStarted) / 1000;
await store.close();

const reopened = await openStore(config);
const recovery = reopened.recovery!;
// The first sequence's prefix: found again and read back.
let parent = ROOT_HASH;
const hashes = Array.from({ length: 64 }, (_, i) => (parent = blockHash(parent, tokensOf(0, i))));
const found = reopened.lookupPrefix(hashes);
let worst = 0;
for (const [i, f] of found.entries()) {
  const r = await reopened.readById(f.blockId, { promote: false });
  worst = Math.max(worst, relativeError(sources[i % sources.length]!, r.data));
}
await reopened.close();

const dropped = spawnSync('sh', ['-c', 'sync; echo 3 > /proc/sys/vm/drop_caches'], { stdio: 'ignore' }).status === 0;
const ddStarted = performance.now();
const dd = spawnSync('dd', [`if=${path}`, 'of=/dev/null', 'bs=16M', 'iflag=direct'], { encoding: 'utf8' });
const ddMs = performance.now() - ddStarted;
if (dd.status !== 0) throw new Error(`dd: ${dd.stderr}`);

const report = {
  backend: reopened.describeBackend().name, diskBytes: diskTier(reopened.layout).bytes, slots, blocksWritten: written, fillSeconds: fillS,
  recovery, lookup: { asked: hashes.length, found: found.length, worstRelativeError: worst, bound: FOUR_BIT_BOUND },
  ddReadMs: ddMs, pageCacheDropped: dropped, recoveryVsRead: recovery.totalMs / ddMs,
};
console.log(JSON.stringify(report, null, 2));
console.log(`recovery of ${recovery.recovered} committed blocks in ${slots} slots (${(report.diskBytes / 2 ** 30).toFixed(2)} GiB): ${recovery.totalMs.toFixed(0)} ms `
  + `(heads ${recovery.scanMs.toFixed(0)} ms, ${(recovery.bytesScanned / 2 ** 20).toFixed(1)} MiB read); reading the file with dd: ${ddMs.toFixed(0)} ms; ratio ${report.recoveryVsRead.toFixed(3)}`);
if (args.out) writeFileSync(args.out, JSON.stringify(report, null, 2));
rmSync(path, { force: true });
rmSync(path + '.writing', { force: true });
// Every disk slot held a committed block at the close (the last blocks written were still in memory, and are not recovered).
if (found.length !== hashes.length || worst >= FOUR_BIT_BOUND || recovery.recovered !== slots) process.exit(1);
