// In-memory data of one chart series: history from /api/v1/query merged
// with live points, sorted by time, one entry per timestamp.
//
// Two modes, set by each history load:
//  - buckets (step > 0): entries are bucket starts; a live point is folded
//    into the bucket that holds its reading time (min, max, running mean);
//  - raw (step 0): entries are readings; a live point with a time already
//    present replaces it (the same reading seen twice), never duplicates it.
//
// Live points and history overlap around the moment history is queried:
// a reading may be in the history answer and also be delivered live. So a
// point that falls into a bucket that came from history only widens the
// bucket's min/max (idempotent), except for points that arrived after the
// history and fall into its newest (open) bucket or later, which are folded
// in fully. Buckets created from live points are always folded fully: the
// library delivers every reading exactly once.

import type { SeriesData } from "./api";

export const DEFAULT_CAP = 20_000;

export class SeriesStore {
  /** Bucket width in ms; 0 for raw readings. */
  step = 0;
  t: number[] = [];
  /** The line: bucket mean (buckets) or the reading (raw). */
  val: number[] = [];
  min: number[] = [];
  max: number[] = [];
  private sum: number[] = [];
  private cnt: number[] = [];
  /** 1 where the entry came from a history answer. */
  private hist: number[] = [];
  /** Start of the newest history bucket (-Infinity: none). */
  private horizon = -Infinity;
  /** Points received while a history load is in flight. */
  private pending: { t: number; v: number }[] | null = null;
  /** True once a history answer has been loaded. */
  loaded = false;
  /** Incremented on every change (so charts know when to redraw). */
  version = 0;

  constructor(
    readonly id: string,
    public cap = DEFAULT_CAP,
  ) {}

  get length(): number {
    return this.t.length;
  }

  /** Newest reading/bucket time, or null. */
  lastT(): number | null {
    return this.t.length ? this.t[this.t.length - 1] : null;
  }

  /** A history load starts: live points are held until it ends. */
  beginLoad(): void {
    this.pending = [];
  }

  /** Replaces the data with a history answer (null: the series has no
   *  history), then applies the live points held since beginLoad. */
  load(d: SeriesData | null, step: number): void {
    this.step = d ? d.step : step;
    const n = d ? d.t.length : 0;
    this.t = d ? d.t.slice() : [];
    const line = d ? (this.step === 0 ? d.last : d.avg) : [];
    this.val = line.slice();
    this.min = d ? d.min.slice() : [];
    this.max = d ? d.max.slice() : [];
    this.sum = new Array<number>(n);
    this.cnt = new Array<number>(n);
    this.hist = new Array<number>(n).fill(1);
    for (let i = 0; i < n; i++) {
      const c = d!.count[i] || 1;
      this.cnt[i] = c;
      this.sum[i] = this.val[i] * c;
    }
    this.horizon = n ? this.t[n - 1] : -Infinity;
    this.loaded = true;
    const held = this.pending ?? [];
    this.pending = null;
    for (const p of held) this.merge(p.t, p.v, true);
    this.trimCap();
    this.version++;
  }

  /** Empties the store (before a reload after a reset). */
  clear(): void {
    this.t = [];
    this.val = [];
    this.min = [];
    this.max = [];
    this.sum = [];
    this.cnt = [];
    this.hist = [];
    this.horizon = -Infinity;
    this.loaded = false;
    this.version++;
  }

  /** Adds one live point. */
  add(t: number, v: number): void {
    if (!Number.isFinite(t) || !Number.isFinite(v)) return;
    if (this.pending) {
      this.pending.push({ t, v });
      return;
    }
    this.merge(t, v, false);
    if (this.t.length > this.cap) this.trimCap();
    this.version++;
  }

  private merge(t: number, v: number, early: boolean): void {
    const key = this.step > 0 ? Math.floor(t / this.step) * this.step : t;
    const ts = this.t;
    const n = ts.length;
    let i: number;
    if (n === 0 || key > ts[n - 1]) i = n;
    else if (key === ts[n - 1]) i = n - 1;
    else i = lowerBound(ts, key);
    if (i < n && ts[i] === key) {
      if (this.step === 0) {
        // The same reading again: replace, never duplicate.
        this.val[i] = v;
        this.min[i] = v;
        this.max[i] = v;
        return;
      }
      if (v < this.min[i]) this.min[i] = v;
      if (v > this.max[i]) this.max[i] = v;
      const idempotent = this.hist[i] === 1 && (early || key < this.horizon);
      if (!idempotent) {
        this.sum[i] += v;
        this.cnt[i] += 1;
        this.val[i] = this.sum[i] / this.cnt[i];
      }
      return;
    }
    if (i === n) {
      ts.push(key);
      this.val.push(v);
      this.min.push(v);
      this.max.push(v);
      this.sum.push(v);
      this.cnt.push(1);
      this.hist.push(0);
    } else {
      ts.splice(i, 0, key);
      this.val.splice(i, 0, v);
      this.min.splice(i, 0, v);
      this.max.splice(i, 0, v);
      this.sum.splice(i, 0, v);
      this.cnt.splice(i, 0, 1);
      this.hist.splice(i, 0, 0);
    }
  }

  /** Drops entries older than tMin (amortized: only when worth it). */
  trimBefore(tMin: number): void {
    const ts = this.t;
    if (!ts.length || ts[0] >= tMin) return;
    const k = lowerBound(ts, tMin);
    if (k < 64 && k < ts.length / 8) return;
    this.drop(k);
  }

  private trimCap(): void {
    const excess = this.t.length - this.cap;
    if (excess > 0) this.drop(excess + Math.floor(this.cap / 10));
  }

  private drop(k: number): void {
    this.t.splice(0, k);
    this.val.splice(0, k);
    this.min.splice(0, k);
    this.max.splice(0, k);
    this.sum.splice(0, k);
    this.cnt.splice(0, k);
    this.hist.splice(0, k);
    this.version++;
  }
}

/** First index i with a[i] >= x (a sorted ascending). */
export function lowerBound(a: ArrayLike<number>, x: number): number {
  let lo = 0;
  let hi = a.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (a[mid] < x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** uPlot's aligned data for stores: [x, (val, min, max) per store]. One
 *  store is passed through without copying; several are joined on the
 *  union of their times, with null where a series has no entry. */
export function alignedData(stores: SeriesStore[]): (number | null)[][] {
  if (stores.length === 1) {
    const s = stores[0];
    return [s.t, s.val, s.min, s.max];
  }
  // k-way merge of the sorted time arrays.
  const xs: number[] = [];
  const idx = new Array<number>(stores.length).fill(0);
  for (;;) {
    let next = Infinity;
    for (let k = 0; k < stores.length; k++) {
      const ts = stores[k].t;
      if (idx[k] < ts.length && ts[idx[k]] < next) next = ts[idx[k]];
    }
    if (next === Infinity) break;
    xs.push(next);
    for (let k = 0; k < stores.length; k++) {
      const ts = stores[k].t;
      if (idx[k] < ts.length && ts[idx[k]] === next) idx[k]++;
    }
  }
  const out: (number | null)[][] = [xs];
  for (const s of stores) {
    const v = new Array<number | null>(xs.length).fill(null);
    const lo = new Array<number | null>(xs.length).fill(null);
    const hi = new Array<number | null>(xs.length).fill(null);
    let j = 0;
    for (let i = 0; i < s.t.length; i++) {
      while (xs[j] < s.t[i]) j++;
      v[j] = s.val[i];
      lo[j] = s.min[i];
      hi[j] = s.max[i];
    }
    out.push(v, lo, hi);
  }
  return out;
}
