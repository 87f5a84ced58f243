/** `spillway serve` as a child process on a port of its own, for the tests that need one. */
import { createServer } from 'node:net';
import { ServerProcess } from '../../api/process.js';

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

export interface ServedProcess {
  server: ServerProcess;
  /** Built from the PORT the server was given, not from its log: requests there check that PORT is honoured. */
  url: string;
  /** Polls `path` until it answers `status` (or the process exits, or time runs out). */
  until(path: string, status?: number, timeoutMs?: number): Promise<Response>;
}

/**
 * Starts `spillway serve ARGS` with PORT and HOST from the environment, as `npm start` is run.
 * Event-loop shedding is off (ARGS may turn it on): the loop's delay is the test machine's.
 */
export async function startServe(args: string[] = []): Promise<ServedProcess> {
  const port = await freePort();
  const server = await ServerProcess.start({
    args: ['--set', 'server.maxEventLoopDelayMs=0', ...args], env: { PORT: String(port), HOST: '127.0.0.1' },
  });
  const url = `http://127.0.0.1:${port}`;
  let exited = false;
  void server.exited.then(() => (exited = true));
  return {
    server,
    url,
    async until(path, status = 200, timeoutMs = 20_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        if (exited) throw new Error(`server exited: ${server.output()}`);
        const res = await fetch(url + path).catch(() => undefined);
        if (res?.status === status) return res;
        if (Date.now() > deadline) throw new Error(`${path} did not answer ${status} in ${timeoutMs} ms: ${server.output()}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    },
  };
}
