/** The soak's client threads: calls as the client makes them, answers read into shared memory handed back in place, errors as thrown. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { SpillwayClient } from '../../api/client.js';
import { buildServer } from '../../api/server.js';
import { ClientThreads } from '../../bench/soak/client-threads.js';
import { SpillwayError } from '../../runtime/errors.js';
import { blockContent, tempDir, tinyStore, TINY_RAW } from '../helpers.js';

const TOKEN = 'client-threads-token-0123456789';

test('client threads write and read through shared memory, answers landing where the caller asked, errors as the client throws them', async () => {
  const dir = tempDir();
  const app = await buildServer(await tinyStore(dir.path, { raw: 6, quantized: 3, disk: 16 }, { server: { token: TOKEN } }));
  const url = await app.listen({ host: '127.0.0.1', port: 0 });
  const threads = new ClientThreads({ baseUrl: url, token: TOKEN }, 2);
  try {
    const c = threads.client;
    const memory = new SharedArrayBuffer(10 * TINY_RAW);
    const slot = (k: number) => Buffer.from(memory, k * TINY_RAW, TINY_RAW);
    await c.createSequence({ id: 's' });
    await c.allocate('s', 4);
    for (let i = 0; i < 3; i++) blockContent(40 + i).copy(slot(i));
    await Promise.all([0, 1, 2].map((i) => c.writeBlock('s', i, slot(i))));
    await c.writeBlocks('s', [{ index: 3, data: blockContent(43) }]);

    const one = await c.readBlock('s', 1, { into: slot(4) });
    assert.ok(Buffer.isBuffer(one.data));
    assert.equal(one.data.buffer, memory, 'the answer is a view of the caller\'s own shared memory');
    assert.equal(one.data.byteOffset, 4 * TINY_RAW);
    assert.ok(one.data.equals(blockContent(41)));
    assert.equal(one.tier, 'raw');

    // Room for the msgpack framing around the three blocks too.
    const area = Buffer.from(memory, 5 * TINY_RAW, 4 * TINY_RAW);
    const batch = await c.readBlocks('s', [0, 2, 3], { into: area });
    assert.deepEqual(batch.map((b) => b.index), [0, 2, 3]);
    for (const b of batch) {
      assert.equal(b.data.buffer, memory);
      assert.ok(b.data.byteOffset >= area.byteOffset && b.data.byteOffset + b.data.byteLength <= area.byteOffset + area.byteLength);
    }
    assert.ok(batch[2]!.data.equals(blockContent(43)));

    // Without `into` the answer is copied over, as a Buffer of its own.
    const fresh = await c.readBlock('s', 0);
    assert.ok(Buffer.isBuffer(fresh.data) && fresh.data.equals(blockContent(40)));

    // A refusal arrives as the client on this thread throws it: code, message and details.
    const direct = new SpillwayClient({ baseUrl: url, token: TOKEN });
    const thrown = (p: Promise<unknown>) => p.then(() => assert.fail('expected a refusal'), (err: unknown) => err);
    const [here, there] = await Promise.all([thrown(direct.allocate('s', 0)), thrown(c.allocate('s', 0))]);
    direct.close();
    assert.ok(there instanceof SpillwayError && here instanceof SpillwayError);
    assert.equal(there.code, 'INVALID_ARGUMENT');
    assert.deepEqual([there.code, there.message, there.details], [here.code, here.message, here.details]);

    // Arguments that cannot cross to a thread fail the call at once.
    await assert.rejects(c.writeBlocks('s', [{ index: 0, data: blockContent(1), tokens: [() => 0] as unknown as number[] }]), { name: 'DataCloneError' });
    assert.equal((await c.health()).ok, true);

    // Each thread says how late its own event loop ran.
    const late = await threads.lateness();
    assert.equal(late.length, 2);
    for (const l of late) assert.ok(l.p50 >= 0 && l.p99 >= l.p50 && l.max >= l.p99, JSON.stringify(l));
  } finally {
    await threads.close();
    await app.close();
    dir.cleanup();
  }
});

test('calls in flight when the threads close fail, with a connection error', async () => {
  // Nothing listens on the port: the call waits on its connection attempts' errors, or the close.
  const threads = new ClientThreads({ baseUrl: 'http://127.0.0.1:9' }, 1);
  const call = threads.client.status();
  await threads.close();
  await assert.rejects(call, (err: Error & { code?: string }) => typeof err.code === 'string');
});
