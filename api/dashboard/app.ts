/**
 * The dashboard, run in the browser: polls /v1/telemetry for new samples and charts them
 * with uPlot (served from the uplot package, loaded as a global by index.html), and
 * follows /v1/events for the latest moves. Requests carry the bearer token when the
 * server wants one; the token is asked for once and kept for the tab's session.
 */
import type UPlot from 'uplot';
import type { z } from 'zod';
import type { TelemetryResponse, TelemetrySample } from '../schemas.js';
import { takeSseMessages } from './sse.js';

declare const uPlot: typeof UPlot;

type Snapshot = z.output<typeof TelemetryResponse>;
type Sample = z.output<typeof TelemetrySample>;

const MAX_POINTS = 600;
const MAX_EVENT_ROWS = 25;
const TOKEN_KEY = 'spillway-token';

const $ = (id: string) => document.getElementById(id)!;

class Unauthorized extends Error {}

async function api(path: string, signal?: AbortSignal): Promise<Response> {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const res = await fetch(path, { headers: token ? { authorization: `Bearer ${token}` } : {}, signal, cache: 'no-store' });
  if (res.status === 401) {
    ($('token-form') as HTMLFormElement).hidden = false;
    throw new Unauthorized();
  }
  if (!res.ok) throw new Error(`${path}: HTTP ${res.status}`);
  return res;
}

// ---- charts --------------------------------------------------------------------------

interface Chart {
  el: HTMLElement;
  plot: UPlot;
  data: Array<Array<number | null>>;
  values: (s: Sample) => Array<number | null>;
}

const COLORS = ['#4fb0ff', '#f2a93b', '#c678dd', '#7bd88f'];

function chart(id: string, labels: string[], values: Chart['values']): Chart {
  const el = $(id);
  const axis = { stroke: '#8a97a8', grid: { stroke: '#2a3441' }, ticks: { stroke: '#2a3441' } };
  const opts: UPlot.Options = {
    width: el.clientWidth,
    height: 200,
    series: [{}, ...labels.map((label, i) => ({ label, stroke: COLORS[i], width: 2, spanGaps: false }))],
    axes: [axis, { ...axis, size: 60 }],
    scales: { x: { time: true } },
    legend: { live: false },
  };
  const data: Chart['data'] = [[], ...labels.map(() => [])];
  return { el, plot: new uPlot(opts, data as UPlot.AlignedData, el), data, values };
}

const percent = (v: number | null) => (v === null ? null : v * 100);
const charts = [
  chart('chart-blocks', ['raw', 'quantized', 'host', 'disk'], (s) => [s.blocks.raw, s.blocks.quantized, s.blocks.host ?? null, s.blocks.disk]),
  chart('chart-moves', ['demotions', 'promotions', 'drops'], (s) => [s.movesPerSecond.demote, s.movesPerSecond.promote, s.movesPerSecond.drop]),
  chart('chart-hits', ['tier-0 hit rate', 'prefix hit rate'], (s) => [percent(s.hitRate), percent(s.prefixHitRate)]),
  chart('chart-disk', ['read', 'write'], (s) => [s.diskBytesPerSecond.read / 1e6, s.diskBytesPerSecond.write / 1e6]),
];

function addSamples(samples: Sample[]): void {
  for (const c of charts) {
    for (const s of samples) {
      c.data[0]!.push(s.at / 1000);
      c.values(s).forEach((v, i) => c.data[i + 1]!.push(v));
    }
    for (const series of c.data) series.splice(0, Math.max(0, series.length - MAX_POINTS));
    c.plot.setData(c.data as UPlot.AlignedData);
    c.el.dataset.points = String(c.data[0]!.length);
  }
}

window.addEventListener('resize', () => {
  for (const c of charts) c.plot.setSize({ width: c.el.clientWidth, height: 200 });
});

// ---- tiles, totals and the path --------------------------------------------------------

const rate = (v: number) => (v >= 100 ? v.toFixed(0) : v.toFixed(1));
const megabytes = (v: number) => (v / 1e6).toFixed(1);

function cell(text: string): HTMLTableCellElement {
  const td = document.createElement('td');
  td.textContent = text;
  return td;
}

function row(cells: string[]): HTMLTableRowElement {
  const tr = document.createElement('tr');
  tr.append(...cells.map(cell));
  return tr;
}

function render(snap: Snapshot): void {
  $('backend').textContent = `${snap.path.backend} backend`;
  $('tile-raw').textContent = `${snap.blocks.raw} / ${snap.slots.raw}`;
  $('tile-quantized').textContent = `${snap.blocks.quantized} / ${snap.slots.quantized}`;
  $('tile-host').textContent = snap.slots.host === undefined ? 'no host tier' : `${snap.blocks.host ?? 0} / ${snap.slots.host}`;
  $('tile-disk').textContent = `${snap.blocks.disk} / ${snap.slots.disk}`;
  $('tile-demote').textContent = rate(snap.movesPerSecond.demote);
  $('tile-promote').textContent = rate(snap.movesPerSecond.promote);
  $('tile-hit').textContent = snap.hitRate === null ? 'no reads' : `${(snap.hitRate * 100).toFixed(1)} %`;
  $('tile-disk-rate').textContent = `${megabytes(snap.diskBytesPerSecond.read)} / ${megabytes(snap.diskBytesPerSecond.write)} MB/s`;
  const shared = snap.shared;
  $('tile-shared').textContent = shared ? `${shared.hits} / ${shared.misses}` : 'not configured';
  $('tile-shared-bytes').textContent = shared ? `${megabytes(shared.bytesRead)} / ${megabytes(shared.bytesWritten)} / ${megabytes(shared.usedBytes)} MB` : '–';
  $('tile-loop').textContent = `${snap.eventLoopDelayMs.toFixed(1)} ms`;
  $('total-demotions').textContent = String(snap.totals.demotions);
  $('total-promotions').textContent = String(snap.totals.promotions);
  $('total-drops').textContent = String(snap.totals.drops);
  $('total-reads').textContent = String(snap.totals.reads);
  $('total-events-dropped').textContent = String(snap.totals.eventsDropped);
  const disk = `${snap.path.disk}${snap.path.direct ? '' : ' (O_DIRECT unavailable: buffered)'}`;
  $('path-rows').replaceChildren(
    row(['raw', String(snap.slots.raw), String(snap.blocks.raw), snap.path.raw]),
    row(['quantized', String(snap.slots.quantized), String(snap.blocks.quantized), snap.path.quantized]),
    ...(snap.slots.host === undefined ? [] : [row(['host', String(snap.slots.host), String(snap.blocks.host ?? 0), snap.path.host ?? ''])]),
    row(['disk', String(snap.slots.disk), String(snap.blocks.disk), disk]),
    ...(shared ? [row(['shared', '', '', `${shared.io}, on ${shared.path}`])] : []),
  );
}

function setBadge(id: string, text: string, ok: boolean): void {
  const el = $(id);
  el.textContent = text;
  el.className = `badge ${ok ? 'ok' : 'bad'}`;
}

// ---- polling -----------------------------------------------------------------------

let since = 0;

async function poll(): Promise<number> {
  const snap = (await (await api(`/v1/telemetry?since=${since}`)).json()) as Snapshot;
  const fresh = snap.history ?? [];
  if (fresh.length > 0) {
    addSamples(fresh);
    since = fresh[fresh.length - 1]!.at;
  }
  render(snap);
  return snap.intervalMs;
}

async function pollForever(): Promise<void> {
  let interval = 1000;
  for (;;) {
    try {
      interval = await poll();
      setBadge('connection', 'live', true);
    } catch (err) {
      setBadge('connection', err instanceof Unauthorized ? 'token needed' : 'disconnected', false);
    }
    await new Promise((r) => setTimeout(r, interval));
  }
}

// ---- the event stream (read with fetch, which can send the token; EventSource cannot) --

interface MoveEvent {
  kind: string;
  blockId: number;
  sequences: string[];
  from: string;
  to: string;
  bytes: number;
  durationMs: number;
  at: number;
}

function showMove(e: MoveEvent): void {
  const rows = $('event-rows');
  const time = new Date(e.at).toLocaleTimeString();
  rows.prepend(row([time, e.kind, String(e.blockId), `${e.from} → ${e.to}`, String(e.bytes), e.durationMs.toFixed(2), e.sequences.join(' ')]));
  while (rows.children.length > MAX_EVENT_ROWS) rows.lastElementChild!.remove();
}

async function followEvents(): Promise<void> {
  const res = await api('/v1/events');
  setBadge('events-state', 'streaming', true);
  const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    const taken = takeSseMessages(buffer + value);
    buffer = taken.rest;
    for (const { event, data } of taken.messages) {
      if (event === 'move') showMove(JSON.parse(data) as MoveEvent);
      if (event === 'dropped') setBadge('events-state', `missed ${(JSON.parse(data) as { dropped: number }).dropped}`, false);
    }
  }
}

async function followEventsForever(): Promise<void> {
  for (;;) {
    try {
      await followEvents();
    } catch {
      // reconnect below
    }
    setBadge('events-state', 'reconnecting', false);
    await new Promise((r) => setTimeout(r, 2000));
  }
}

$('token-form').addEventListener('submit', (e) => {
  e.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, ($('token') as HTMLInputElement).value);
  ($('token-form') as HTMLFormElement).hidden = true;
});

void pollForever();
void followEventsForever();
