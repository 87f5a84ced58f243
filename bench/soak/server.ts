/**
 * The server under soak, as a user runs it: `spillway serve --config FILE` in its own
 * process, so that its memory and descriptors can be read from /proc and it can be killed
 * and started again. It listens on a port the kernel picks; the port is read from its log.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, readdirSync, readFileSync, type WriteStream } from 'node:fs';
import { join } from 'node:path';
import { projectRoot } from '../../runtime/config.js';

const CLI = join(projectRoot, 'dist', 'runtime', 'cli.js');
const LISTENING = /Server listening at (http:\/\/127\.0\.0\.1:\d+)/;

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export class ServerProcess {
  readonly pid: number;
  readonly url: string;
  /** Settles when the process exits, for whatever reason. */
  readonly exited: Promise<Exit>;
  private readonly child: ChildProcess;

  private constructor(child: ChildProcess, url: string, exited: Promise<Exit>) {
    this.child = child;
    this.pid = child.pid!;
    this.url = url;
    this.exited = exited;
  }

  /**
   * Starts the server and resolves once it listens; rejects with the end of its log if it
   * exits first or does not listen within `timeoutMs`. Its output is appended to `logPath`.
   */
  static start(configPath: string, logPath: string, timeoutMs = 120_000): Promise<ServerProcess> {
    const log: WriteStream = createWriteStream(logPath, { flags: 'a' });
    const child = spawn(process.execPath, [CLI, 'serve', '--config', configPath], {
      // The CLI's own default, as `npm start` sets it: libuv's pool runs the disk operations.
      env: { ...process.env, UV_THREADPOOL_SIZE: process.env.UV_THREADPOOL_SIZE ?? '16' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let tail = '';
    const exited = new Promise<Exit>((resolve) => child.once('exit', (code, signal) => {
      log.end();
      resolve({ code, signal });
    }));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        reject(new Error(`server did not listen within ${timeoutMs} ms: ${tail}`));
      }, timeoutMs);
      let listening = false;
      const onData = (chunk: Buffer) => {
        log.write(chunk);
        if (listening) return;
        tail = (tail + chunk.toString()).slice(-4000);
        const m = LISTENING.exec(tail);
        if (m) {
          listening = true;
          clearTimeout(timer);
          resolve(new ServerProcess(child, m[1]!, exited));
        }
      };
      child.stdout!.on('data', onData);
      child.stderr!.on('data', onData);
      void exited.then(({ code, signal }) => {
        clearTimeout(timer);
        reject(new Error(`server exited (code ${code}, signal ${signal}) before listening: ${tail}`));
      });
    });
  }

  /** Resident memory in bytes (VmRSS), or null once the process is gone. */
  rssBytes(): number | null {
    try {
      const kb = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${this.pid}/status`, 'utf8'));
      return kb ? Number(kb[1]) * 1024 : null;
    } catch {
      return null;
    }
  }

  /** Open file descriptors, or null once the process is gone. */
  openFds(): number | null {
    try {
      return readdirSync(`/proc/${this.pid}/fd`).length;
    } catch {
      return null;
    }
  }

  kill(signal: NodeJS.Signals): void {
    this.child.kill(signal);
  }
}
