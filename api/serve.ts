/**
 * `spillway serve` owns the process: it probes the configured GPU, plans the weights and
 * checks that they and the KV tiers fit it, opens the store, builds the app
 * (api/server.ts), listens (not ready while the weights load), then loads the weights. A
 * failed load ends the process with exit code 1; SIGINT and SIGTERM close the app (the
 * store with it) and exit 0.
 */
import type { FastifyInstance } from 'fastify';
import type { Config } from '../runtime/config.js';
import { chooseBackend, openStore, probeFor } from '../runtime/open.js';
import { formatRecovery } from '../runtime/recovery-report.js';
import { assertBudgetFits, memoryBudget, ModelWeights } from '../runtime/weights/model.js';
import { formatBytes } from '../runtime/bytes.js';
import { terminalProgress, type OnProgress } from '../runtime/weights/progress.js';
import { missingNodeFlags } from '../runtime/node-flags.js';
import { buildServer } from './server.js';

/** A progress bar on a terminal; otherwise a log line every tenth of the way. */
function weightsProgress(app: FastifyInstance): OnProgress {
  const bar = terminalProgress('weights');
  if (bar) return bar;
  let logged = -1;
  return (p) => {
    const tenth = p.bytesTotal > 0 ? Math.floor((10 * p.bytesDone) / p.bytesTotal) : 10;
    if (tenth === logged) return;
    logged = tenth;
    app.log.info({ bytesDone: p.bytesDone, bytesTotal: p.bytesTotal, gbps: Number(p.gbps.toFixed(3)), etaSeconds: p.etaSeconds }, `weights ${formatBytes(p.bytesDone)} of ${formatBytes(p.bytesTotal)}`);
  };
}

export async function serve(config: Config): Promise<FastifyInstance> {
  const probe = await probeFor(config);
  const backend = chooseBackend(config, probe);
  const weights = await ModelWeights.plan(config, backend.name, probe);
  const memory = memoryBudget(config, backend.name, probe, weights?.bytes ?? 0);
  assertBudgetFits(memory);
  const store = await openStore(config, probe);
  const app = await buildServer(store, { logger: true, weights, memory });
  const b = store.describeBackend();
  app.log.info({ backend: b.name, device: b.device, reason: b.reason, paths: b.paths, capacity: store.capacity(), memory, auth: config.server.token !== undefined }, 'spillway store open');
  const missing = missingNodeFlags();
  if (missing.length > 0) app.log.warn({ missing }, `node started without ${missing.join(' ')}: expect full garbage collections many times a second under load (runtime/node-flags.ts)`);
  if (store.recovery) app.log.info({ recovery: store.recovery }, `disk tier recovery: ${formatRecovery(store.recovery)}`);
  await app.listen({ host: config.server.host, port: config.server.port });
  const stop = async (code: number) => {
    await app.close();
    process.exit(code);
  };
  process.once('SIGINT', () => void stop(0));
  process.once('SIGTERM', () => void stop(0));
  if (weights) {
    try {
      await weights.load(weightsProgress(app));
      app.log.info({ ...weights.describe(), progress: undefined }, 'weights loaded; ready');
    } catch (err) {
      app.log.error({ err }, 'weights load failed');
      await stop(1);
    }
  }
  return app;
}
