/**
 * The standard-library Python client: it hashes blocks as the server does, its example
 * decode loop runs against a real server on 127.0.0.1, and its batch calls write and read
 * many blocks through its own msgpack. Skips, saying why, where python3 is not installed.
 */
import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { buildServer } from '../../api/server.js';
import { projectRoot } from '../../runtime/config.js';
import { chainHashes } from '../../runtime/prefix.js';
import { rng, tempDir, tinyStore } from '../helpers.js';

const run = promisify(execFile);
const CLIENT_DIR = join(projectRoot, 'clients', 'python');
const python = spawnSync('python3', ['--version']).status === 0;
const skip = python ? false : 'python3 is not installed; the Python client is not tested';
const env = { ...process.env, PYTHONPATH: CLIENT_DIR, PYTHONDONTWRITEBYTECODE: '1' };

test('the Python client computes the same block hashes as the server', { skip }, async () => {
  const next = rng(42);
  const tokens = [0, 0xffffffff, ...Array.from({ length: 62 }, () => Math.floor(next() * 2 ** 32))];
  for (const tpb of [1, 4, 16]) {
    const script = `import json, sys; from spillway_client import chain_hashes; print(json.dumps(chain_hashes(json.loads(sys.argv[1]), ${tpb})))`;
    const { stdout } = await run('python3', ['-c', script, JSON.stringify(tokens)], { env });
    assert.deepEqual(JSON.parse(stdout), chainHashes(tokens, tpb), `${tpb} tokens a block`);
  }
});

test('the Python example runs a decode loop against a real server with a token', { skip, timeout: 60_000 }, async () => {
  const dir = tempDir();
  const token = 'python-example-token-42';
  const store = await tinyStore(dir.path, { raw: 2, quantized: 2, disk: 16 }, { server: { token } });
  const app = await buildServer(store);
  try {
    const url = await app.listen({ host: '127.0.0.1', port: 0 });
    const { stdout } = await run('python3', [join(CLIENT_DIR, 'example_decode_loop.py'), '--url', url], { env: { ...env, SPILLWAY_TOKEN: token } });
    assert.match(stdout, /request A \(seq-\d+\): 24 tokens in 6 blocks/);
    assert.match(stdout, /read back from tiers \[.*'disk'.*\]/, 'the context outgrew memory and came back from disk');
    assert.match(stdout, /attached 3 cached blocks of 3/);
    assert.match(stdout, /^ok$/m);
    const stats = store.stats();
    assert.equal(stats.sequences, 0);
    assert.equal(stats.cachedBlocks, 6, 'committed blocks stay cached after the requests end');
    store.checkInvariants();
    const refused = await run('python3', [join(CLIENT_DIR, 'example_decode_loop.py'), '--url', url], { env: { ...env, SPILLWAY_TOKEN: '' } }).catch((err: { code: number; stderr: string }) => err);
    assert.notEqual((refused as { code: number }).code, 0);
    assert.match((refused as { stderr: string }).stderr, /401 UNAUTHORIZED/);
  } finally {
    await app.close();
    dir.cleanup();
  }
});

test('the Python client writes and reads many blocks in one request each, as msgpack', { skip, timeout: 60_000 }, async () => {
  const dir = tempDir();
  const store = await tinyStore(dir.path, { raw: 4, quantized: 4, disk: 16 });
  const app = await buildServer(store);
  try {
    const url = await app.listen({ host: '127.0.0.1', port: 0 });
    const script = `
import sys
from spillway_client import SpillwayClient, SpillwayError
client = SpillwayClient(sys.argv[1])
size = client.status()["capacity"]["rawBlockBytes"]
seq = client.create_sequence()["id"]
client.allocate(seq, 5)
data = [bytes((i * 7 + j) % 251 for j in range(size)) for i in range(4)]
written = client.write_blocks(seq, [(i, data[i], [i, i + 1, i + 2, i + 3] if i < 2 else None) for i in range(4)])
assert [w["index"] for w in written] == [0, 1, 2, 3], written
assert written[0]["hash"] and written[2]["hash"] is None, written
blocks = client.read_blocks(seq, [3, 0, 2, 1])
assert [bytes(b.data) for b in blocks] == [data[3], data[0], data[2], data[1]], "blocks in the order asked"
assert all(b.format == "raw" and b.tier for b in blocks), blocks[0]
try:
    client.read_blocks(seq, [0, 4])
    raise AssertionError("an unwritten block was read")
except SpillwayError as err:
    assert err.status < 500 and "body.indices.1" in str(err), err
try:
    client.write_blocks(seq, [(4, b"short", None)])
    raise AssertionError("a short block was written")
except SpillwayError as err:
    assert err.code == "WRONG_SIZE" and "body.blocks.0.data" in str(err), err
print("ok")
`;
    const { stdout } = await run('python3', ['-c', script, url], { env });
    assert.match(stdout, /^ok$/m);
    store.checkInvariants();
  } finally {
    await app.close();
    dir.cleanup();
  }
});
