/** `spillway serve` as a child process on a port of its own, or a group of them, for the tests that need one. */
import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { CLI, ServerProcess } from '../api/process.js';

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

/** Starts `spillway serve ARGS` with PORT and HOST from the environment, as `npm start` is run. */
export async function startServe(args: string[] = []): Promise<ServedProcess> {
  const port = await freePort();
  const server = await ServerProcess.start({ args, env: { PORT: String(port), HOST: '127.0.0.1' } });
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

export interface Group {
  /** Rank -> its URL, once both listen. */
  urls: string[];
  pids: number[];
  exited: Promise<{ code: number | null; stderr: string }>;
  kill(signal: NodeJS.Signals): void;
}

/**
 * Starts `spillway serve --gpus GPUS ARGS` (PORT unset: ARGS say the port) and resolves once
 * every runtime listens, with their URLs by rank and their pids.
 */
export async function startGroup(gpus: string, args: string[], timeoutMs = 120_000): Promise<Group> {
  const env = { ...process.env };
  delete env.PORT;
  const child = spawn(process.execPath, [CLI, 'serve', '--gpus', gpus, ...args], { env });
  const world = gpus.split(',').length;
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => (stdout += d));
  child.stderr.on('data', (d) => (stderr += d));
  const exited = new Promise<{ code: number | null; stderr: string }>((resolve) => child.once('exit', (code) => resolve({ code, stderr })));
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const listening = [...stdout.matchAll(/Server listening at (http:\/\/[^\s"]+)/g)].map((m) => m[1]!);
    const pids = [...stderr.matchAll(/rank (\d+) of \d+ \(GPU \d+\): pid (\d+)/g)];
    if (listening.length === world && pids.length === world) {
      const urls: string[] = [];
      for (const url of listening) {
        const status = (await (await fetch(`${url}/v1/status`)).json()) as { config: { weights: { rank: number } } };
        urls[status.config.weights.rank] = url;
      }
      return { urls, pids: pids.sort((a, b) => Number(a[1]) - Number(b[1])).map((m) => Number(m[2])), exited, kill: (s) => child.kill(s) };
    }
    if (Date.now() > deadline || child.exitCode !== null) {
      // The runtimes are in process groups of their own: end them too.
      for (const m of pids) {
        try {
          process.kill(Number(m[2]), 'SIGKILL');
        } catch {
          // already gone
        }
      }
      child.kill('SIGKILL');
      throw new Error(`the group did not start: ${stderr}\n${stdout.slice(-4000)}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}
