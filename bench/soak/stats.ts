/** Latency summaries and the growth test that decides whether memory or descriptors leak. */
import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks';

/** How late a thread's event loop runs: a timer every LOOP_TIMER_MS, sampled by monitorEventLoopDelay. */
const LOOP_TIMER_MS = 10;

export interface LoopLateness {
  p50: number;
  p99: number;
  max: number;
}

export function loopDelayMonitor(): IntervalHistogram {
  return monitorEventLoopDelay({ resolution: LOOP_TIMER_MS });
}

/** The monitor's values are the timer's lateness plus its period, in nanoseconds: the lateness, in ms. */
export function lateness(h: IntervalHistogram): LoopLateness {
  const late = (ns: number) => Math.max(0, ns / 1e6 - LOOP_TIMER_MS);
  return { p50: late(h.percentile(50)), p99: late(h.percentile(99)), max: late(h.max) };
}

/** The p-th quantile (0..1) of unsorted values; null for none. */
export function quantile(values: number[], p: number): number | null {
  if (values.length === 0) return null;
  const sorted = Float64Array.from(values).sort();
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]!;
}

/** Latencies of one operation over a whole run, in 2% wide log buckets: bounded for runs of hours. */
export class LatencyHistogram {
  private readonly buckets = new Map<number, number>();
  count = 0;

  add(ms: number): void {
    const b = Math.floor(Math.log(Math.max(ms, 1e-3)) / Math.log(1.02));
    this.buckets.set(b, (this.buckets.get(b) ?? 0) + 1);
    this.count++;
  }

  /** The upper edge of the bucket holding the p-th quantile: at most 2% high. */
  quantile(p: number): number | null {
    if (this.count === 0) return null;
    const rank = Math.min(this.count - 1, Math.floor(p * this.count));
    let seen = 0;
    for (const b of [...this.buckets.keys()].sort((x, y) => x - y)) {
      seen += this.buckets.get(b)!;
      if (seen > rank) return 1.02 ** (b + 1);
    }
    return null;
  }
}

export interface GrowthVerdict {
  /** The samples judged: the second half of the longest server lifetime, in seconds of the run. */
  window: [number, number] | null;
  samples: number;
  mean: number | null;
  /** Least-squares slope over the window, per minute. */
  slopePerMinute: number | null;
  /** The slope times the window's length: how much the fit grew across it. */
  growth: number | null;
  /** Growth allowed: max(relative * mean, absolute). */
  threshold: number | null;
  ok: boolean;
  note: string;
}

export interface GrowthRule {
  relative: number;
  absolute: number;
}

/** The fewest samples a window needs to be judged at all. */
const MIN_SAMPLES = 10;

/**
 * "Grows without bound", decided on points (t seconds, value) from one process: a line is
 * fitted by least squares over the second half (the first half holds warm-up: arenas being
 * touched, caches filling), and the run fails if the fit grows across that half by more
 * than max(rule.relative * its mean, rule.absolute). A bounded process levels off and its
 * fit stays flat; a leak of a fixed amount per operation rises steadily and is caught.
 */
export function judgeGrowth(points: Array<[number, number]>, rule: GrowthRule): GrowthVerdict {
  const half = points.slice(Math.floor(points.length / 2));
  if (half.length < MIN_SAMPLES) {
    return { window: null, samples: half.length, mean: null, slopePerMinute: null, growth: null, threshold: null, ok: false, note: `only ${half.length} samples in the second half; at least ${MIN_SAMPLES} are needed` };
  }
  const n = half.length;
  const mt = half.reduce((a, [t]) => a + t, 0) / n;
  const mv = half.reduce((a, [, v]) => a + v, 0) / n;
  let num = 0;
  let den = 0;
  for (const [t, v] of half) {
    num += (t - mt) * (v - mv);
    den += (t - mt) ** 2;
  }
  const slope = den > 0 ? num / den : 0;
  const span = half[n - 1]![0] - half[0]![0];
  const growth = slope * span;
  const threshold = Math.max(rule.relative * mv, rule.absolute);
  const ok = growth <= threshold;
  return {
    window: [half[0]![0], half[n - 1]![0]], samples: n, mean: mv, slopePerMinute: slope * 60, growth, threshold, ok,
    note: ok ? 'bounded: the fit over the second half grows less than the threshold' : 'grows: the fit over the second half rises past the threshold',
  };
}
