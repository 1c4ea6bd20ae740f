// A time chart (uPlot) of one or more series: line = mean (or the reading
// for raw data), shaded min/max band, legend with the values at the cursor,
// drag to zoom, arrow keys to move the cursor, redrawn at most once per
// animation frame.

import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import { h, setText } from "./dom";
import * as fmt from "./format";
import { schedule, unschedule } from "./frame";
import { alignedData, lowerBound, type SeriesStore } from "./series";
import { onThemeChange, themeColors, withAlpha } from "./theme";

export interface TimeChartOptions {
  /** Unique key (tests find charts by it: data-chart). */
  key: string;
  title: string;
  stores: SeriesStore[];
  /** Legend label of a series (default: its id). */
  label?: (id: string) => string;
  /** Charts with the same key share the cursor. */
  syncKey?: string;
  /** Draw min/max bands (default: when there are at most 4 series). */
  band?: boolean;
  /** A drag selected [from, to) (ms). */
  onZoom?: (from: number, to: number) => void;
  /** Double click on the plot. */
  onDblClick?: () => void;
  /** Called after every draw. */
  onDraw?: (c: TimeChart) => void;
  /** Hide the title visually (kept for screen readers): the panel has its own. */
  hideTitle?: boolean;
}

const registry = new Set<TimeChart>();

/** Charts on the page now (for window.__telegauge). */
export function allCharts(): TimeChart[] {
  return [...registry];
}

export class TimeChart {
  readonly el: HTMLElement;
  readonly key: string;
  title: string;
  private opts: TimeChartOptions;
  private stores: SeriesStore[];
  private plotEl: HTMLElement;
  private legendEl: HTMLElement;
  private statusEl: HTMLElement;
  private titleEl: HTMLElement;
  private u: uPlot | null = null;
  private ro: ResizeObserver;
  private seen: number[] = [];
  private structureChanged = true;
  private data: (number | null)[][] = [[]];
  private legendRows: { value: HTMLElement; range: HTMLElement }[] = [];
  private legendTime: HTMLElement;
  private kbIdx: number | null = null;
  private width = 0;
  private height = 0;
  private unTheme: () => void;
  from = 0;
  to = 0;
  /** Draws so far and when the last one happened (performance.now()). */
  draws = 0;
  lastDrawAt = 0;
  /** Milliseconds the last draw took. */
  lastDrawMs = 0;
  destroyed = false;

  constructor(opts: TimeChartOptions) {
    this.opts = opts;
    this.key = opts.key;
    this.title = opts.title;
    this.stores = opts.stores;
    this.titleEl = h("h3", { class: opts.hideTitle ? "chart-title sr-only" : "chart-title", id: `chart-t-${cssId(opts.key)}` }, opts.title);
    this.legendTime = h("span", { class: "legend-time" });
    this.legendEl = h("div", { class: "chart-legend", "data-testid": "chart-legend" });
    this.statusEl = h("p", { class: "chart-status", role: "status", hidden: true });
    this.plotEl = h("div", {
      class: "chart-plot",
      tabindex: 0,
      role: "img",
      "aria-labelledby": `chart-t-${cssId(opts.key)}`,
      "aria-describedby": `chart-l-${cssId(opts.key)}`,
      "data-testid": "chart-plot",
    });
    this.legendEl.id = `chart-l-${cssId(opts.key)}`;
    this.el = h(
      "figure",
      { class: "chart", "data-testid": "chart", "data-chart": opts.key },
      h("figcaption", { class: "chart-head" }, this.titleEl, this.legendTime),
      this.legendEl,
      h("div", { class: "chart-body" }, this.plotEl, this.statusEl),
    );
    this.buildLegend();
    this.plotEl.addEventListener("keydown", (e) => this.onKey(e));
    this.plotEl.addEventListener("blur", () => {
      this.kbIdx = null;
      this.u?.setCursor({ left: -10, top: -10 });
    });
    this.ro = new ResizeObserver(() => this.resize());
    this.ro.observe(this.plotEl);
    this.unTheme = onThemeChange(() => this.rebuild());
    registry.add(this);
  }

  /** The series now shown. */
  get series(): readonly SeriesStore[] {
    return this.stores;
  }

  setStores(stores: SeriesStore[]): void {
    this.stores = stores;
    this.rebuild();
  }

  setTitle(title: string): void {
    this.title = title;
    setText(this.titleEl, title);
  }

  /** Sets the visible window [from, to] in Unix ms. */
  setWindow(from: number, to: number): void {
    if (from === this.from && to === this.to) return;
    this.from = from;
    this.to = to;
    this.invalidate();
  }

  /** Shows a message over the plot (loading, no data, an error), or hides it. */
  setStatus(text: string | null, kind: "info" | "error" = "info"): void {
    this.statusEl.hidden = !text;
    this.statusEl.dataset.kind = kind;
    setText(this.statusEl, text ?? "");
  }

  /** Plot width in CSS pixels (about how many buckets are worth fetching). */
  plotWidth(): number {
    return this.u ? this.u.bbox.width / devicePixelRatio : Math.max(0, (this.plotEl.clientWidth || this.el.clientWidth) - 60);
  }

  invalidate(): void {
    if (!this.destroyed) schedule(this);
  }

  /** Drops uPlot and makes it again on the next frame (series or theme changed). */
  private rebuild(): void {
    this.u?.destroy();
    this.u = null;
    this.structureChanged = true;
    this.buildLegend();
    this.invalidate();
  }

  private resize(): void {
    const w = Math.floor(this.plotEl.clientWidth);
    const hgt = Math.floor(this.plotEl.clientHeight);
    if (w === this.width && hgt === this.height) return;
    this.width = w;
    this.height = hgt;
    if (this.u && w > 0 && hgt > 0) this.u.setSize({ width: w, height: hgt });
    else this.invalidate();
  }

  private create(): void {
    const colors = themeColors();
    const band = this.opts.band ?? this.stores.length <= 4;
    const series: uPlot.Series[] = [{}];
    const bands: uPlot.Band[] = [];
    this.stores.forEach((s, k) => {
      const c = colors.palette[k % colors.palette.length];
      const label = this.opts.label ? this.opts.label(s.id) : s.id;
      series.push(
        { label, stroke: c, width: 1.5, spanGaps: true },
        { label: `${label} min`, stroke: "rgba(0,0,0,0)", width: 0, points: { show: false }, spanGaps: true, show: band },
        { label: `${label} max`, stroke: "rgba(0,0,0,0)", width: 0, points: { show: false }, spanGaps: true, show: band },
      );
      if (band) bands.push({ series: [3 + 3 * k, 2 + 3 * k], fill: withAlpha(c, 0.18) });
    });
    const fontPx = Math.round(colors.remPx * 0.75);
    const axis = (): uPlot.Axis => ({
      stroke: colors.muted,
      grid: { stroke: colors.grid, width: 1 },
      ticks: { stroke: colors.grid, width: 1 },
      font: `${fontPx}px system-ui, sans-serif`,
    });
    const opts: uPlot.Options = {
      width: this.width,
      height: this.height,
      ms: 1,
      series,
      bands,
      legend: { show: false },
      padding: [8, 8, 0, 0],
      scales: { x: { time: true, auto: false } },
      axes: [
        { ...axis(), space: fontPx * 7, size: fontPx * 4.5 },
        { ...axis(), size: fontPx * 5, values: (_u, splits) => splits.map((v) => fmt.value(v)) },
      ],
      cursor: {
        drag: { x: true, y: false, setScale: false },
        sync: this.opts.syncKey ? { key: this.opts.syncKey, setSeries: false } : undefined,
        points: { size: 6 },
        bind: {
          dblclick: () => () => {
            this.opts.onDblClick?.();
            return null;
          },
        },
      },
      hooks: {
        setCursor: [(u) => this.updateLegend(u.cursor.idx ?? null)],
        setSelect: [
          (u) => {
            const sel = u.select;
            if (sel.width >= 5 && this.opts.onZoom) {
              const from = u.posToVal(sel.left, "x");
              const to = u.posToVal(sel.left + sel.width, "x");
              u.setSelect({ left: 0, top: 0, width: 0, height: 0 }, false);
              this.opts.onZoom(Math.round(from), Math.round(to));
            }
          },
        ],
      },
    };
    this.u = new uPlot(opts, [[]], this.plotEl);
  }

  /** Draws now (called by the frame scheduler). */
  flush(): void {
    if (this.destroyed) return;
    if (this.width <= 0 || this.height <= 0) {
      this.width = Math.floor(this.plotEl.clientWidth);
      this.height = Math.floor(this.plotEl.clientHeight);
      if (this.width <= 0 || this.height <= 0) return; // not laid out (hidden): drawn on resize
    }
    const t0 = performance.now();
    if (!this.u) this.create();
    const u = this.u!;
    let changed = this.structureChanged || this.seen.length !== this.stores.length;
    for (let k = 0; !changed && k < this.stores.length; k++) changed = this.seen[k] !== this.stores[k].version;
    u.batch(() => {
      if (changed) {
        this.data = alignedData(this.stores);
        this.seen = this.stores.map((s) => s.version);
        this.structureChanged = false;
        u.setData(this.data as uPlot.AlignedData, false);
      }
      if (this.to > this.from) u.setScale("x", { min: this.from, max: this.to });
    });
    if (u.cursor.idx == null && this.kbIdx == null) this.updateLegend(null);
    this.draws++;
    this.lastDrawAt = performance.now();
    this.lastDrawMs = this.lastDrawAt - t0;
    this.el.dataset.draws = String(this.draws);
    this.opts.onDraw?.(this);
  }

  private buildLegend(): void {
    const colors = themeColors();
    this.legendRows = [];
    const items = this.stores.map((s, k) => {
      const value = h("span", { class: "legend-value", "data-testid": "legend-value" }, "–");
      const range = h("span", { class: "legend-range" });
      this.legendRows.push({ value, range });
      const label = this.opts.label ? this.opts.label(s.id) : s.id;
      return h(
        "span",
        { class: "legend-item", "data-series": s.id },
        h("span", { class: "legend-swatch", style: `background:${colors.palette[k % colors.palette.length]}`, "aria-hidden": "true" }),
        this.stores.length > 1 ? h("span", { class: "legend-label" }, label) : null,
        value,
        range,
      );
    });
    this.legendEl.replaceChildren(...items);
    if (!this.stores.length) this.legendEl.append(h("span", { class: "muted" }, "no series"));
  }

  /** Legend values at data index idx, or the latest values when null. */
  private updateLegend(idx: number | null): void {
    const d = this.data;
    const xs = d[0] as number[];
    if (idx != null && idx < xs.length) {
      setText(this.legendTime, fmt.cursorTime(xs[idx]));
      this.legendEl.dataset.at = String(xs[idx]);
    } else {
      setText(this.legendTime, this.stores.some((s) => s.length) ? "latest" : "");
      delete this.legendEl.dataset.at;
    }
    this.stores.forEach((s, k) => {
      const row = this.legendRows[k];
      if (!row) return;
      let v: number | null | undefined;
      let lo: number | null | undefined;
      let hi: number | null | undefined;
      if (idx != null && idx < xs.length) {
        v = d[1 + 3 * k]?.[idx];
        lo = d[2 + 3 * k]?.[idx];
        hi = d[3 + 3 * k]?.[idx];
      } else if (s.length) {
        // Latest entry inside the window (or the newest there is).
        let i = s.length - 1;
        if (this.to > this.from && s.t[i] > this.to) i = Math.max(0, lowerBound(s.t, this.to) - 1);
        v = s.val[i];
        lo = s.min[i];
        hi = s.max[i];
      }
      setText(row.value, fmt.value(v));
      setText(row.range, this.stores.length <= 4 && lo != null && hi != null && lo !== hi ? `${fmt.value(lo)} – ${fmt.value(hi)}` : "");
    });
  }

  private onKey(e: KeyboardEvent): void {
    const u = this.u;
    const xs = this.data[0] as number[];
    if (!u || !xs.length) return;
    let i = this.kbIdx ?? u.cursor.idx ?? null;
    const lo = Math.max(0, lowerBound(xs, this.from));
    const hi = Math.max(lo, lowerBound(xs, this.to + 1) - 1);
    const jump = Math.max(1, Math.round((hi - lo) / 10));
    switch (e.key) {
      case "ArrowLeft":
        i = i == null ? hi : Math.max(lo, i - (e.shiftKey ? jump : 1));
        break;
      case "ArrowRight":
        i = i == null ? hi : Math.min(hi, i + (e.shiftKey ? jump : 1));
        break;
      case "Home":
        i = lo;
        break;
      case "End":
        i = hi;
        break;
      case "Escape":
        this.kbIdx = null;
        u.setCursor({ left: -10, top: -10 });
        this.updateLegend(null);
        return;
      default:
        return;
    }
    e.preventDefault();
    this.kbIdx = i;
    const left = u.valToPos(xs[i], "x");
    u.setCursor({ left, top: u.bbox.height / devicePixelRatio / 2 });
    this.updateLegend(i);
  }

  destroy(): void {
    this.destroyed = true;
    unschedule(this);
    this.ro.disconnect();
    this.unTheme();
    this.u?.destroy();
    this.u = null;
    this.el.remove();
    registry.delete(this);
  }
}

function cssId(s: string): string {
  return s.replace(/[^A-Za-z0-9_-]/g, "_");
}
