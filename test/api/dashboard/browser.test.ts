/**
 * The dashboard in headless Chromium: it loads, its charts fill as a load runs through
 * the API, and a screenshot is kept. Skips, saying why, where Chromium is not installed.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { test } from 'node:test';
import { chromium } from 'playwright-core';
import { SpillwayClient } from '../../../api/client.js';
import { buildServer } from '../../../api/server.js';
import { blockContent, tempDir, tinyStore } from '../../helpers.js';

const CHROMIUM = '/usr/bin/chromium';
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];

const skip = existsSync(CHROMIUM) ? false : `${CHROMIUM} is not installed (apt-get install -y chromium); the dashboard is not tested in a browser`;

test('the dashboard loads, charts blocks, moves, hit rate and disk throughput as a load runs, and renders', { skip, timeout: 120_000 }, async () => {
  const dir = tempDir();
  const profile = tempDir('spillway-chromium-');
  const app = await buildServer(await tinyStore(dir.path, { raw: 4, quantized: 4, disk: 48 }, { server: { telemetryIntervalMs: 200 } }));
  const context = await chromium.launchPersistentContext(profile.path, { executablePath: CHROMIUM, headless: true, args: ARGS, viewport: { width: 1280, height: 1100 } });
  try {
    const url = await app.listen({ host: '127.0.0.1', port: 0 });
    const page = context.pages()[0] ?? (await context.newPage());
    const problems: string[] = [];
    page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
    page.on('console', (msg) => {
      if (msg.type() === 'error') problems.push(`console: ${msg.text()}`);
    });
    page.on('requestfailed', (req) => {
      // The event stream is cut when the page closes; anything else failing is a fault.
      if (!req.url().endsWith('/v1/events')) problems.push(`request failed: ${req.url()}`);
    });
    await page.goto(url, { waitUntil: 'load' });
    await page.waitForSelector('#chart-blocks canvas');
    assert.equal(await page.locator('.chart canvas').count(), 4, 'four charts');
    const points = async () => Number(await page.locator('#chart-moves').getAttribute('data-points'));
    const before = await points();

    // A decode-like load: more blocks than the memory tiers hold, read back, so blocks are
    // demoted to disk and promoted again while the page watches.
    const client = new SpillwayClient({ baseUrl: url });
    for (let round = 0; round < 3; round++) {
      const seq = `load-${round}`;
      await client.createSequence({ id: seq });
      await client.allocate(seq, 14);
      for (let i = 0; i < 14; i++) await client.writeBlock(seq, i, blockContent(round * 100 + i), [round, i, 0, 1]);
      for (let i = 0; i < 14; i++) await client.readBlock(seq, i);
      await client.lookupPrefix({ tokens: [round, 0, 0, 1, round, 1, 0, 1] });
      await sleep(250);
    }

    await page.waitForFunction(() => Number(document.getElementById('total-demotions')?.textContent) > 0 && Number(document.getElementById('total-promotions')?.textContent) > 0);
    await page.waitForFunction(() => document.querySelectorAll('#event-rows tr').length > 0);
    await sleep(600);
    assert.ok((await points()) > before, 'the charts gained points');
    const tiles = await page.locator('.tiles').innerText();
    assert.match(tiles, /disk blocks\s+\d+ \/ 48/);
    assert.match(await page.locator('#path-rows').innerText(), /disk/);
    assert.match(await page.locator('#connection').innerText(), /live/);
    assert.match(await page.locator('#event-rows').innerText(), /demote|promote/);

    const shot = join(profile.path, 'dashboard.png');
    await page.screenshot({ path: shot, fullPage: true });
    assert.ok(existsSync(shot));
    console.log(`# dashboard screenshot: ${shot}`);
    assert.deepEqual(problems, []);
  } finally {
    await context.close();
    await app.close();
    dir.cleanup();
    if (!process.env.SPILLWAY_KEEP_SCREENSHOT) profile.cleanup();
  }
});
