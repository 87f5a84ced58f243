/**
 * The dashboard at /: a static page, its script (api/dashboard/app.ts, compiled) and
 * uPlot from the uplot package. Nothing comes from a CDN. The page holds no data: what it
 * shows it fetches from the guarded API, with the bearer token where one is set.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { projectRoot } from '../../runtime/config.js';
import type { RoutePlugin } from '../context.js';

const pageDir = join(projectRoot, 'api', 'dashboard');
const uplotDir = dirname(createRequire(import.meta.url).resolve('uplot'));

const ASSETS: Array<[url: string, file: string, type: string]> = [
  ['/', join(pageDir, 'index.html'), 'text/html; charset=utf-8'],
  ['/dashboard/style.css', join(pageDir, 'style.css'), 'text/css; charset=utf-8'],
  ['/dashboard/app.js', fileURLToPath(new URL('../dashboard/app.js', import.meta.url)), 'text/javascript; charset=utf-8'],
  ['/dashboard/sse.js', fileURLToPath(new URL('../dashboard/sse.js', import.meta.url)), 'text/javascript; charset=utf-8'],
  ['/dashboard/uplot.js', join(uplotDir, 'uPlot.iife.min.js'), 'text/javascript; charset=utf-8'],
  ['/dashboard/uplot.css', join(uplotDir, 'uPlot.min.css'), 'text/css; charset=utf-8'],
];

const CSP = "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; object-src 'none'; frame-ancestors 'none'";

export const dashboardRoutes: RoutePlugin = async (app) => {
  for (const [url, file, type] of ASSETS) {
    const body = readFileSync(file);
    app.get(url, { schema: { hide: true } }, async (_request, reply) => {
      reply.header('content-type', type);
      reply.header('cache-control', 'no-cache');
      reply.header('x-content-type-options', 'nosniff');
      reply.header('content-security-policy', CSP);
      return body;
    });
  }
};
