/**
 * PNG charts of a soak report: each an SVG drawn here and rendered by resvg. Faults are
 * marked where they happened; the window the leak test judged is shaded on the RSS and
 * descriptor charts.
 *
 *   node dist/bench/soak/charts.js REPORT.json OUT_DIR
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Resvg } from '@resvg/resvg-js';
import type { Sample } from './sampling.js';
import type { SoakReport } from './soak.js';

const W = 760;
const H = 250;
const PAD = { left: 64, right: 16, top: 44, bottom: 34 };
const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#17becf', '#7f7f7f'];

interface Series {
  name: string;
  points: Array<[number, number | null]>;
  dashed?: boolean;
  /** Index into COLORS; by default the series' position. */
  color?: number;
}

interface Chart {
  file: string;
  title: string;
  unit: 'count' | 'bytes' | 'ms' | 'per-second';
  series: Series[];
  log?: boolean;
  shade?: [number, number] | null;
}

function human(v: number, unit: Chart['unit']): string {
  if (unit === 'bytes') {
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (Math.abs(v) >= 1024 && i < units.length - 1) {
      v /= 1024;
      i++;
    }
    return `${+v.toPrecision(3)} ${units[i]}`;
  }
  if (unit === 'ms') return v >= 1000 ? `${+(v / 1000).toPrecision(3)} s` : `${+v.toPrecision(3)} ms`;
  if (Math.abs(v) >= 1e6) return `${+(v / 1e6).toPrecision(3)}M`;
  if (Math.abs(v) >= 1e3) return `${+(v / 1e3).toPrecision(3)}k`;
  return `${+v.toPrecision(3)}`;
}

/** Round tick values from 0 to the first at or above max: steps of 1, 2 or 5 times a power of ten (of 1024 for bytes). */
function ticks(max: number, unit: Chart['unit']): number[] {
  if (max <= 0) return [0];
  const base = unit === 'bytes' && max >= 1024 ? 1024 ** Math.floor(Math.log(max) / Math.log(1024)) : 1;
  const scaled = max / base;
  const raw = scaled / 4;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = ([1, 2, 5, 10].find((m) => m * mag >= raw) ?? 10) * mag * base;
  const out = [0];
  while (out[out.length - 1]! < max) out.push(out.length * step);
  return out;
}

function escape(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;');
}

export function chartSvg(chart: Chart, faults: SoakReport['faults'], durationS: number): string {
  const x0 = PAD.left;
  const x1 = W - PAD.right;
  const y0 = H - PAD.bottom;
  const y1 = PAD.top;
  const minutes = durationS > 300;
  const values = chart.series.flatMap((s) => s.points.map(([, v]) => v).filter((v): v is number => v !== null && Number.isFinite(v)));
  const positive = values.filter((v) => v > 0);
  const max = Math.max(...values, 0);
  let yTicks: number[];
  let y: (v: number) => number;
  if (chart.log && positive.length > 0) {
    const lo = 10 ** Math.floor(Math.log10(Math.min(...positive)));
    const hi = 10 ** Math.ceil(Math.log10(Math.max(...positive)));
    yTicks = [];
    for (let v = lo; v <= hi * 1.0001; v *= 10) yTicks.push(v);
    y = (v) => y0 - ((Math.log10(Math.max(v, lo)) - Math.log10(lo)) / Math.max(1e-9, Math.log10(hi) - Math.log10(lo))) * (y0 - y1);
  } else {
    yTicks = ticks(max, chart.unit);
    const top = yTicks[yTicks.length - 1]! || 1;
    y = (v) => y0 - (v / top) * (y0 - y1);
  }
  const span = Math.max(durationS, 1e-9);
  const x = (t: number) => x0 + (t / span) * (x1 - x0);
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="DejaVu Sans, Arial, sans-serif" font-size="11">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${x0}" y="18" font-size="13" font-weight="bold">${escape(chart.title)}</text>`,
  ];
  if (chart.shade) {
    parts.push(`<rect x="${x(chart.shade[0])}" y="${y1}" width="${Math.max(1, x(chart.shade[1]) - x(chart.shade[0]))}" height="${y0 - y1}" fill="#e8f0fe"/>`);
  }
  for (const v of yTicks) {
    parts.push(`<line x1="${x0}" x2="${x1}" y1="${y(v)}" y2="${y(v)}" stroke="#e0e0e0"/>`);
    parts.push(`<text x="${x0 - 6}" y="${y(v) + 4}" text-anchor="end" fill="#444">${escape(human(v, chart.unit))}</text>`);
  }
  const xStep = ticks(minutes ? durationS / 60 : durationS, 'count').map((v) => (minutes ? v * 60 : v));
  for (const t of xStep) {
    parts.push(`<line x1="${x(t)}" x2="${x(t)}" y1="${y0}" y2="${y0 + 4}" stroke="#444"/>`);
    parts.push(`<text x="${x(t)}" y="${y0 + 16}" text-anchor="middle" fill="#444">${human(minutes ? t / 60 : t, 'count')}</text>`);
  }
  parts.push(`<text x="${x1}" y="${H - 4}" text-anchor="end" fill="#444">${minutes ? 'minutes' : 'seconds'} into the run</text>`);
  parts.push(`<line x1="${x0}" x2="${x1}" y1="${y0}" y2="${y0}" stroke="#444"/><line x1="${x0}" x2="${x0}" y1="${y0}" y2="${y1}" stroke="#444"/>`);
  for (const f of faults) {
    parts.push(`<line x1="${x(f.at)}" x2="${x(f.at)}" y1="${y1}" y2="${y0}" stroke="${f.ok ? '#888' : '#d00'}" stroke-dasharray="4 3"/>`);
    parts.push(`<text x="${x(f.at) + 3}" y="${y1 + 10}" fill="${f.ok ? '#555' : '#d00'}" font-size="10">${f.kind}</text>`);
  }
  let lx = x0;
  chart.series.forEach((s, i) => {
    const color = COLORS[(s.color ?? i) % COLORS.length]!;
    let d = '';
    let pen = false;
    for (const [t, v] of s.points) {
      if (v === null || !Number.isFinite(v) || (chart.log && v <= 0)) {
        pen = false;
        continue;
      }
      d += `${pen ? 'L' : 'M'}${x(t).toFixed(1)},${y(v).toFixed(1)}`;
      pen = true;
    }
    parts.push(`<path d="${d}" fill="none" stroke="${color}" stroke-width="1.4"${s.dashed ? ' stroke-dasharray="5 3"' : ''}/>`);
    parts.push(`<line x1="${lx}" x2="${lx + 16}" y1="30" y2="30" stroke="${color}" stroke-width="2"${s.dashed ? ' stroke-dasharray="5 3"' : ''}/>`);
    parts.push(`<text x="${lx + 20}" y="34" fill="#222">${escape(s.name)}</text>`);
    lx += 34 + s.name.length * 6.5;
  });
  parts.push('</svg>');
  return parts.join('\n');
}

function series(samples: Sample[], name: string, pick: (s: Sample) => number | null | undefined, dashed = false, color?: number): Series {
  return { name, points: samples.map((s) => [s.t, pick(s) ?? null]), dashed, color };
}

/** The charts of a report, each as its file name and chart. */
function chartsOf(report: SoakReport): Chart[] {
  const s = report.samples;
  const control = (x: Sample) => (x.opsPerSecond.create ?? 0) + (x.opsPerSecond.allocate ?? 0) + (x.opsPerSecond.free ?? 0);
  const gpu = report.server.backend === 'gpu';
  return [
    {
      file: 'ops.png', title: 'Requests per second', unit: 'per-second', series: [
        series(s, 'reads', (x) => x.opsPerSecond.read), series(s, 'writes', (x) => x.opsPerSecond.write),
        series(s, 'batch reads', (x) => x.opsPerSecond.readBatch), series(s, 'batch writes', (x) => x.opsPerSecond.writeBatch),
        series(s, 'create/allocate/free', control),
      ],
    },
    {
      file: 'latency.png', title: 'Latency per request: p50 (solid), p99 (dashed)', unit: 'ms', log: true, series: [
        series(s, 'read p50', (x) => x.p50Ms.read), series(s, 'write p50', (x) => x.p50Ms.write), series(s, 'batch write p50', (x) => x.p50Ms.writeBatch),
        series(s, 'read p99', (x) => x.p99Ms.read, true, 0), series(s, 'write p99', (x) => x.p99Ms.write, true, 1),
      ],
    },
    {
      file: 'tiers.png', title: 'Blocks per tier', unit: 'count', series: [
        series(s, 'raw', (x) => x.blocks?.raw), series(s, 'quantized', (x) => x.blocks?.quantized), series(s, 'disk', (x) => x.blocks?.disk),
        series(s, 'live blocks', (x) => x.liveBlocks, true),
      ],
    },
    {
      file: 'moves.png', title: 'Moves per second', unit: 'per-second', series: [
        series(s, 'demotions', (x) => x.movesPerSecond?.demote), series(s, 'promotions', (x) => x.movesPerSecond?.promote),
        series(s, 'drops', (x) => x.movesPerSecond?.drop),
      ],
    },
    { file: 'rss.png', title: `Server RSS (shaded: the window judged, ${report.leak.rss.ok ? 'bounded' : 'GROWS'})`, unit: 'bytes', shade: report.leak.rss.window, series: [series(s, 'RSS', (x) => x.rssBytes)] },
    { file: 'fds.png', title: `Server open file descriptors (shaded: judged, ${report.leak.fds.ok ? 'bounded' : 'GROWS'})`, unit: 'count', shade: report.leak.fds.window, series: [series(s, 'open fds', (x) => x.openFds)] },
    {
      file: 'memory.png', title: gpu ? 'HBM: tier 0 and 1 slots in use, and the GPU\'s memory in use' : 'Tier 0 and 1 slots in use (host memory on this backend)', unit: 'bytes', series: [
        series(s, 'tier 0+1 in use', (x) => x.fastTierBytes), ...(gpu ? [series(s, 'GPU memory used', (x) => x.gpuMemoryBytes, true)] : []),
      ],
    },
    {
      file: 'disk.png', title: 'Disk tier: slots in use, and the slot file\'s allocated size', unit: 'bytes', series: [
        series(s, 'slots in use', (x) => x.diskSlotBytes), series(s, 'file allocated', (x) => x.diskFileBytes, true),
      ],
    },
  ];
}

/** Writes the report's charts as PNGs into `dir`; returns their paths. */
export function drawCharts(report: SoakReport, dir: string): string[] {
  mkdirSync(dir, { recursive: true });
  return chartsOf(report).map((chart) => {
    const svg = chartSvg(chart, report.faults, report.durationS);
    const png = new Resvg(svg, { font: { loadSystemFonts: true, defaultFontFamily: 'DejaVu Sans' } }).render().asPng();
    const path = join(dir, chart.file);
    writeFileSync(path, png);
    return path;
  });
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const [reportPath, dir] = process.argv.slice(2);
  if (!reportPath || !dir) {
    console.error('usage: node dist/bench/soak/charts.js REPORT.json OUT_DIR');
    process.exit(2);
  }
  for (const p of drawCharts(JSON.parse(readFileSync(reportPath, 'utf8')) as SoakReport, dir)) console.log(p);
}
