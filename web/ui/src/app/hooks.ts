// window.__telegauge: read-only introspection for browser tests (see
// README.md in this folder). Everything returned is a copy.

import type { ConnectionState, Live } from "../live";
import { requestCounts, type Device } from "./api";
import { allCharts } from "./chart";
import { FrameSampler, type FrameStats } from "./frame";
import type { Route } from "./router";

export interface ChartSummary {
  key: string;
  title: string;
  window: { from: number; to: number };
  draws: number;
  lastDrawMs: number;
  series: { id: string; step: number; count: number; firstT: number | null; lastT: number | null; loaded: boolean }[];
}

export interface ChartData {
  key: string;
  series: { id: string; step: number; t: number[]; v: number[]; min: number[]; max: number[] }[];
}

export interface TelegaugeHooks {
  readonly version: 1;
  route(): { view: string; id?: string; params: Record<string, string> };
  live(): ConnectionState | null;
  charts(): ChartSummary[];
  chartData(key: string): ChartData | null;
  devices(): Device[];
  requests(): Record<string, number>;
  /** The current view's group state: range, following, load state, step. */
  view(): Record<string, unknown>;
  readonly frames: {
    start(): void;
    stop(): FrameStats;
    peek(): FrameStats;
    readonly running: boolean;
  };
  /** performance.mark times (ms since navigation start) of tg:* marks. */
  marks(): Record<string, number[]>;
}

export interface HookSources {
  live: () => Live | null;
  route: () => Route;
  devices: () => Device[];
  view: () => Record<string, unknown>;
}

export function installHooks(src: HookSources): void {
  const sampler = new FrameSampler();
  const hooks: TelegaugeHooks = {
    version: 1,
    route() {
      const r = src.route();
      return { view: r.view, id: "id" in r ? r.id : undefined, params: Object.fromEntries(r.params) };
    },
    live() {
      const l = src.live();
      return l ? { ...l.state() } : null;
    },
    charts() {
      return allCharts().map((c) => ({
        key: c.key,
        title: c.title,
        window: { from: c.from, to: c.to },
        draws: c.draws,
        lastDrawMs: c.lastDrawMs,
        series: c.series.map((s) => ({
          id: s.id,
          step: s.step,
          count: s.length,
          firstT: s.length ? s.t[0] : null,
          lastT: s.lastT(),
          loaded: s.loaded,
        })),
      }));
    },
    chartData(key) {
      const c = allCharts().find((x) => x.key === key);
      if (!c) return null;
      return {
        key,
        series: c.series.map((s) => ({ id: s.id, step: s.step, t: s.t.slice(), v: s.val.slice(), min: s.min.slice(), max: s.max.slice() })),
      };
    },
    devices: () => structuredClone(src.devices()),
    requests: () => ({ ...requestCounts }),
    view: () => src.view(),
    frames: {
      start: () => sampler.start(),
      stop: () => sampler.stop(),
      peek: () => sampler.peek(),
      get running() {
        return sampler.running;
      },
    },
    marks() {
      const out: Record<string, number[]> = {};
      for (const m of performance.getEntriesByType("mark")) {
        if (m.name.startsWith("tg:")) (out[m.name] ??= []).push(m.startTime);
      }
      return out;
    },
  };
  Object.defineProperty(window, "__telegauge", { value: Object.freeze(hooks), configurable: true, enumerable: false, writable: false });
}

declare global {
  interface Window {
    __telegauge?: TelegaugeHooks;
  }
}
