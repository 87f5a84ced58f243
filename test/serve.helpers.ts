/** Running `spillway serve` as a child process, as a user does, for the tests that need one. */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { projectRoot } from '../runtime/config.js';

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

export interface ServeProcess {
  url: string;
  child: ChildProcessWithoutNullStreams;
  /** stdout and stderr so far. */
  output(): string;
  /** Polls `path` until it answers `status` (or the process exits, or time runs out). */
  until(path: string, status?: number, timeoutMs?: number): Promise<Response>;
  stop(): Promise<void>;
}

export async function startServe(args: string[] = []): Promise<ServeProcess> {
  const port = await freePort();
  const child = spawn(process.execPath, [join(projectRoot, 'dist', 'runtime', 'cli.js'), 'serve', ...args], {
    env: { ...process.env, PORT: String(port), HOST: '127.0.0.1' },
  });
  let output = '';
  child.stdout.on('data', (d) => (output += d));
  child.stderr.on('data', (d) => (output += d));
  const url = `http://127.0.0.1:${port}`;
  return {
    url,
    child,
    output: () => output,
    async until(path, status = 200, timeoutMs = 20_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        if (child.exitCode !== null) throw new Error(`server exited with ${child.exitCode}: ${output}`);
        try {
          const res = await fetch(url + path);
          if (res.status === status) return res;
        } catch {
          // not listening yet
        }
        if (Date.now() > deadline) throw new Error(`${path} did not answer ${status} in ${timeoutMs} ms: ${output}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    },
    async stop() {
      if (child.exitCode !== null) return;
      child.kill('SIGTERM');
      await new Promise((r) => child.once('exit', r));
    },
  };
}
