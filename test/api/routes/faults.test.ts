/** The fault route: absent unless server.faults is set; when set, an armed ENOSPC surfaces as DISK_FULL (507). */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { buildServer } from '../../../api/server.js';
import { blockContent, tempDir, tinyStore } from '../../helpers.js';

const ARM = { method: 'POST' as const, url: '/v1/faults/disk', payload: { op: 'write', error: 'ENOSPC', count: 1 } };

test('POST /v1/faults/disk is not served by default', async () => {
  const dir = tempDir();
  const app = await buildServer(await tinyStore(dir.path, { raw: 1, quantized: 1, disk: 4 }));
  try {
    assert.equal((await app.inject(ARM)).statusCode, 404);
  } finally {
    await app.close();
    dir.cleanup();
  }
});

test('with server.faults, an armed ENOSPC fails the write that needs a spill with DISK_FULL, once', async () => {
  const dir = tempDir();
  const app = await buildServer(await tinyStore(dir.path, { raw: 1, quantized: 1, disk: 4 }, { server: { faults: true } }));
  const put = (i: number) => app.inject({
    method: 'PUT', url: `/v1/sequences/f/blocks/${i}`, headers: { 'content-type': 'application/octet-stream' }, payload: blockContent(i),
  });
  try {
    await app.inject({ method: 'POST', url: '/v1/sequences', payload: { id: 'f' } });
    await app.inject({ method: 'POST', url: '/v1/sequences/f/blocks', payload: { count: 3 } });
    assert.equal((await put(0)).statusCode, 200);
    assert.equal((await put(1)).statusCode, 200); // block 0 is quantized into tier 1
    const armed = await app.inject(ARM);
    assert.equal(armed.statusCode, 200);
    assert.deepEqual(armed.json(), ARM.payload);
    const full = await put(2); // block 0 must spill to disk: the armed fault refuses it
    assert.equal(full.statusCode, 507);
    assert.equal(full.json().error.code, 'DISK_FULL');
    assert.equal((await put(2)).statusCode, 200, 'the fault was used up');
    const bad = await app.inject({ ...ARM, payload: { op: 'write', error: 'EPERM', count: 1 } });
    assert.equal(bad.statusCode, 400);
    assert.equal(bad.json().error.field, 'body.error');
  } finally {
    await app.close();
    dir.cleanup();
  }
});
