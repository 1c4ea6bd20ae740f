// A group of charts that share a time range and one live subscription:
// the device view (one chart per metric) or one dashboard panel. It loads
// history in one batched query, merges live points into it, slides the
// window while following, and reloads when the library says reset().

import type { Live, Point, Presence, Subscription } from "../live";
import { ApiError, query, type SeriesData } from "./api";
import { TimeChart } from "./chart";
import { onNextFrame } from "./frame";
import { presetFrom, PRESETS, rangeSpan, sameRange, type PresetKey, type Range } from "./ranges";
import { SeriesStore } from "./series";

export interface ChartSpec {
  key: string;
  title: string;
  series: string[];
  label?: (id: string) => string;
  hideTitle?: boolean;
}

export interface GroupOptions {
  live: Live;
  /** Live subscription patterns (may be wider than the charted series). */
  patterns: string[];
  specs: ChartSpec[];
  range: Range;
  /** Charts are appended here. */
  container: HTMLElement;
  syncKey: string;
  /** Range, following or load state changed. */
  onChange?: (g: ChartGroup) => void;
  /** A live point arrived for a series no chart shows. */
  onUnknownSeries?: (ids: string[]) => void;
  onPresence?: (p: Presence) => void;
  /** The first history answer has been drawn by every chart. */
  onPainted?: () => void;
  /** Default preset to return to when following after a fixed range. */
  defaultPreset?: PresetKey;
}

export type LoadState = "loading" | "ready" | "error";

/** Raw readings kept by the server per series (README: 256). */
const RAW_KEPT = 256;
/** Zoomed spans up to this are tried at raw resolution. */
const RAW_SPAN_MS = 120_000;

export class ChartGroup {
  readonly charts: TimeChart[] = [];
  private stores = new Map<string, SeriesStore>();
  private chartOf = new Map<string, TimeChart>();
  private opts: GroupOptions;
  private sub: Subscription | null = null;
  private seq = 0;
  private abort: AbortController | null = null;
  private timer = 0;
  private painted = false;
  private latestT = 0;
  range: Range;
  lastPreset: PresetKey;
  state: LoadState = "loading";
  error: string | null = null;
  /** Step of the last history answer (ms; 0 raw; null before any). */
  step: number | null = null;
  /** Points received live (test hook). */
  pointsReceived = 0;
  destroyed = false;

  constructor(opts: GroupOptions) {
    this.opts = opts;
    this.range = opts.range;
    this.lastPreset = "preset" in opts.range ? opts.range.preset : (opts.defaultPreset ?? "1h");
    for (const spec of opts.specs) this.addChart(spec, false);
    // Subscribe before querying history: nothing between the two is lost.
    this.sub = opts.live.subscribe(opts.patterns, {
      points: (pts) => this.onPoints(pts),
      reset: () => void this.load(),
      presence: (p) => opts.onPresence?.(p),
    });
    this.applyWindow();
    this.restartTimer();
    void this.load();
  }

  get following(): boolean {
    return "preset" in this.range;
  }

  /** The clock used for "now": the page's, or the newest reading if ahead
   *  (a server clock slightly ahead of this machine's). */
  now(): number {
    const n = Date.now();
    return this.latestT > n ? Math.min(this.latestT, n + 60_000) : n;
  }

  /** The visible window [from, to] in Unix ms. */
  window(): { from: number; to: number } {
    if ("preset" in this.range) {
      const to = this.now();
      return { from: to - PRESETS[this.range.preset], to };
    }
    return { from: this.range.from, to: this.range.to };
  }

  /** Adds a chart (a metric seen for the first time); loads its history
   *  when load is true. */
  addChart(spec: ChartSpec, load = true): TimeChart {
    const stores = spec.series.map((id) => {
      let s = this.stores.get(id);
      if (!s) {
        s = new SeriesStore(id);
        this.stores.set(id, s);
      }
      return s;
    });
    const chart = new TimeChart({
      key: spec.key,
      title: spec.title,
      stores,
      label: spec.label,
      hideTitle: spec.hideTitle,
      syncKey: this.opts.syncKey,
      onZoom: (from, to) => this.zoom(from, to),
      onDblClick: () => this.follow(),
    });
    for (const id of spec.series) this.chartOf.set(id, chart);
    this.charts.push(chart);
    this.opts.container.append(chart.el);
    const w = this.window();
    chart.setWindow(w.from, w.to);
    if (load) void this.loadSeries(stores, chart);
    else chart.setStatus("Loading…");
    return chart;
  }

  setRange(r: Range): void {
    if (sameRange(r, this.range)) return;
    this.range = r;
    if ("preset" in r) this.lastPreset = r.preset;
    this.changed();
    void this.load();
  }

  /** Stops the window where it is (data stays; nothing is reloaded). */
  pause(): void {
    if (!this.following) return;
    const w = this.window();
    this.range = { from: Math.round(w.from), to: Math.round(w.to) };
    this.changed();
  }

  /** Back to the live window of the last preset. */
  follow(): void {
    if (this.following) return;
    this.setRange({ preset: this.lastPreset });
  }

  /** Shows [from, to) at the finest resolution that fits, not following. */
  zoom(from: number, to: number): void {
    if (to - from < 1000) return;
    this.setRange({ from, to });
  }

  reload(): void {
    void this.load();
  }

  private changed(): void {
    this.applyWindow();
    this.restartTimer();
    this.opts.onChange?.(this);
  }

  private applyWindow(): void {
    const w = this.window();
    for (const c of this.charts) c.setWindow(w.from, w.to);
  }

  /** While following, slide about one pixel's worth at a time. */
  private restartTimer(): void {
    clearInterval(this.timer);
    this.timer = 0;
    if (!this.following || this.destroyed) return;
    const width = Math.max(100, ...this.charts.map((c) => c.plotWidth()));
    const period = Math.min(5000, Math.max(100, rangeSpan(this.range) / width));
    this.timer = window.setInterval(() => this.tick(), period);
  }

  private tick(): void {
    const w = this.window();
    const margin = Math.max(2 * (this.step ?? 0), 1000);
    for (const s of this.stores.values()) s.trimBefore(w.from - margin);
    for (const c of this.charts) c.setWindow(w.from, w.to);
  }

  private onPoints(pts: Point[]): void {
    let unknown: Set<string> | null = null;
    const following = this.following;
    const to = following ? Infinity : (this.range as { to: number }).to;
    const dirty = new Set<TimeChart>();
    for (const p of pts) {
      const s = this.stores.get(p.s);
      if (!s) {
        (unknown ??= new Set()).add(p.s);
        continue;
      }
      this.pointsReceived++;
      if (p.t > this.latestT) this.latestT = p.t;
      if (p.t > to) continue; // a fixed window in the past: Follow reloads
      s.add(p.t, p.v);
      const c = this.chartOf.get(p.s);
      if (c) dirty.add(c);
    }
    if (dirty.size) {
      // Drawn on the next animation frame, however many points came in.
      const w = following ? this.window() : null;
      for (const c of dirty) {
        if (w) c.setWindow(w.from, w.to);
        c.invalidate();
      }
    }
    if (unknown && this.opts.onUnknownSeries) this.opts.onUnknownSeries([...unknown]);
  }

  /** Query parameters for the current range. */
  private params(): { from: number | string; to?: number | string; span: number; maxPoints: number } {
    const width = Math.max(0, ...this.charts.map((c) => c.plotWidth()));
    const maxPoints = Math.round(Math.min(4000, Math.max(60, width || this.opts.container.clientWidth || 1000)));
    if ("preset" in this.range) {
      return { from: presetFrom(this.range.preset), span: PRESETS[this.range.preset], maxPoints };
    }
    return { from: this.range.from, to: this.range.to, span: this.range.to - this.range.from, maxPoints };
  }

  /** Loads the history of every series. */
  private async load(): Promise<void> {
    const seq = ++this.seq;
    this.abort?.abort();
    const ac = new AbortController();
    this.abort = ac;
    const stores = [...this.stores.values()];
    for (const s of stores) s.beginLoad();
    this.state = "loading";
    this.error = null;
    this.opts.onChange?.(this);
    for (const c of this.charts) if (!c.series.some((s) => s.length)) c.setStatus("Loading…");
    try {
      const answers = await this.fetch(stores.map((s) => s.id), ac.signal);
      if (seq !== this.seq || this.destroyed) return;
      let step = 0;
      for (const s of stores) {
        const d = answers.get(s.id) ?? null;
        if (d) step = d.step;
      }
      for (const s of stores) s.load(answers.get(s.id) ?? null, step);
      this.step = step;
      this.state = "ready";
      this.applyWindow();
      for (const c of this.charts) {
        c.setStatus(c.series.some((s) => s.length) ? null : "No data in this range");
        c.invalidate();
      }
      this.restartTimer();
      this.opts.onChange?.(this);
      if (!this.painted) {
        this.painted = true;
        onNextFrame(() => !this.destroyed && this.opts.onPainted?.());
      }
    } catch (e) {
      if (seq !== this.seq || this.destroyed || (e as Error).name === "AbortError") return;
      this.state = "error";
      this.error = e instanceof Error ? e.message : String(e);
      // Show what we have; live points keep coming.
      for (const s of stores) if (!s.loaded) s.load(null, this.step ?? 0);
      else s.load(snapshot(s), s.step);
      for (const c of this.charts) {
        c.setStatus(`History unavailable: ${this.error}`, "error");
        c.invalidate();
      }
      this.opts.onChange?.(this);
    }
  }

  /** The history of one new chart's series, in the group's current range. */
  private async loadSeries(stores: SeriesStore[], chart: TimeChart): Promise<void> {
    const seq = this.seq;
    for (const s of stores) s.beginLoad();
    try {
      const answers = await this.fetch(stores.map((s) => s.id));
      if (this.destroyed) return;
      for (const s of stores) s.load(answers.get(s.id) ?? null, this.step ?? 0);
    } catch {
      for (const s of stores) s.load(null, this.step ?? 0);
    }
    if (seq !== this.seq) return; // a full reload is under way and covers these
    chart.setStatus(null);
    chart.invalidate();
  }

  /** Queries the range for ids; answers by series id. Unknown series (404)
   *  are retried one by one so that one bad id does not hide the others. */
  private async fetch(ids: string[], signal?: AbortSignal): Promise<Map<string, SeriesData>> {
    const p = this.params();
    const out = new Map<string, SeriesData>();
    if (!ids.length) return out;
    const q = (series: string[], step?: string) => query({ series, from: p.from, to: p.to, step, maxPoints: p.maxPoints }, signal);
    let answer: SeriesData[];
    try {
      if (!("preset" in this.range) && p.span <= RAW_SPAN_MS) {
        answer = await this.rawOrBuckets(ids, q);
      } else {
        answer = await q(ids);
      }
    } catch (e) {
      if (!(e instanceof ApiError && e.status === 404) || ids.length === 1) {
        if (e instanceof ApiError && e.status === 404) return out;
        throw e;
      }
      const each = await Promise.all(ids.map((id) => q([id]).catch((err) => (err instanceof ApiError && err.status === 404 ? [] : Promise.reject(err)))));
      answer = each.flat();
    }
    for (const d of answer) out.set(d.id, d);
    return out;
  }

  /** For short zooms: raw readings where the server still has all of them
   *  in the range (their number equals the 1 s buckets' count), buckets
   *  otherwise. */
  private async rawOrBuckets(ids: string[], q: (series: string[], step?: string) => Promise<SeriesData[]>): Promise<SeriesData[]> {
    const [raw, buckets] = await Promise.all([q(ids, "raw"), q(ids)]);
    const rawById = new Map(raw.map((d) => [d.id, d]));
    const useRaw = buckets.every((b) => {
      const r = rawById.get(b.id);
      const total = b.count.reduce((a, c) => a + c, 0);
      return r && r.t.length === total && r.t.length < RAW_KEPT;
    });
    return useRaw ? raw : buckets;
  }

  /** Drops charts and the subscription. */
  destroy(): void {
    this.destroyed = true;
    this.abort?.abort();
    clearInterval(this.timer);
    this.sub?.close();
    this.sub = null;
    for (const c of this.charts) c.destroy();
    this.charts.length = 0;
  }
}

/** A store's current data as a history answer (to keep showing it after a
 *  failed reload). */
function snapshot(s: SeriesStore): SeriesData {
  return { id: s.id, step: s.step, t: s.t, min: s.min, max: s.max, avg: s.val, last: s.val, count: s.t.map(() => 1) };
}

