// Backfill: the readings a gap (or a reset) says were not sent live, from
// GET /api/v1/query, as points.
//
// - Patterns are expanded to series ids (the query takes ids only): exact
//   ids as they are, wildcards through GET /api/v1/devices ('+' one level,
//   '#' the rest, over "{device}/{metric}"). Ids go 100 to a query.
// - A recent range (from within rawMaxAgeMs) is asked for with step=raw: the
//   readings themselves. The server keeps only the newest rawPoints readings
//   per series, so when a series' answer is full and starts after the range
//   does, older readings of the range may have been dropped from that
//   buffer: the start of the range is then asked for in buckets, as below.
// - An older range is asked for in buckets of the smallest step (1 s, 2 s,
//   5 s, ... 1 d) that keeps it under maxPoints per series. A chart then
//   gets one point per bucket, at the bucket's start time, with the
//   bucket's mean as its value: a faithful outline of the missing stretch
//   (its extremes are averaged out), not the individual readings. The first
//   and last buckets may also hold readings that did arrive live.
// - A series the server does not know (404 "unknown series") is dropped
//   from the query, which is then asked again.

import type { LiveEnv } from "./env";
import { apiUrl } from "./protocol";
import { isExact, matches } from "./patterns";
import type { Point } from "./types";

export interface BackfillConfig {
  base: string;
  /** Ranges that start less than this long ago are asked for raw, ms. */
  rawMaxAgeMs: number;
  /** Raw readings the server keeps per series (aggregator raw-points). */
  rawPoints: number;
  /** Series per query (the server's query max-series). */
  maxSeriesPerQuery: number;
  /** Buckets per series of a stepped query. */
  maxPoints: number;
  /** How long a /devices answer is reused, ms. */
  devicesTtlMs: number;
}

export const backfillDefaults: Omit<BackfillConfig, "base"> = {
  rawMaxAgeMs: 5 * 60_000,
  rawPoints: 256,
  maxSeriesPerQuery: 100,
  maxPoints: 1500,
  devicesTtlMs: 30_000,
};

/** A range of reading times, inclusive, for the series of patterns. */
export interface FillRange {
  from: number;
  to: number;
  patterns: readonly string[];
}

export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
    this.name = "HttpError";
  }

  /** Asking again will not help. */
  get permanent(): boolean {
    return this.status >= 400 && this.status < 500 && this.status !== 408 && this.status !== 429;
  }
}

interface SeriesData {
  id: string;
  step: number;
  t: number[];
  avg: number[];
  last: number[];
}

/** Steps a stepped backfill may use, ms. */
const STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400].map((s) => s * 1000);
const DAY = 86_400_000;

/** The smallest step that keeps [from, to) under maxPoints buckets. */
export function pickStep(spanMs: number, maxPoints: number): number {
  for (const s of STEPS) if (Math.ceil(spanMs / s) <= maxPoints) return s;
  return Math.ceil(spanMs / maxPoints / DAY) * DAY;
}

export class Backfiller {
  private devices: { at: number; ids: string[] } | null = null;

  constructor(
    private readonly env: LiveEnv,
    private readonly cfg: BackfillConfig,
  ) {}

  /** The readings of r, as points (series by series, in time order). */
  async run(r: FillRange, signal?: AbortSignal): Promise<Point[]> {
    const ids = await this.expand(r.patterns, signal);
    const out: Point[] = [];
    if (ids.length === 0 || r.to < r.from) return out;
    const recent = this.env.timers.now() - r.from <= this.cfg.rawMaxAgeMs;
    for (let i = 0; i < ids.length; i += this.cfg.maxSeriesPerQuery) {
      const chunk = ids.slice(i, i + this.cfg.maxSeriesPerQuery);
      if (recent) await this.raw(chunk, r, out, signal);
      else await this.stepped(chunk, r.from, r.to, out, signal);
    }
    return out;
  }

  /** The series ids the patterns cover. */
  async expand(patterns: readonly string[], signal?: AbortSignal): Promise<string[]> {
    const ids = new Set<string>();
    const wild = patterns.filter((p) => !isExact(p));
    for (const p of patterns) if (isExact(p)) ids.add(p);
    if (wild.length > 0) {
      for (const id of await this.deviceSeries(signal)) {
        if (wild.some((p) => matches(p, id))) ids.add(id);
      }
    }
    return [...ids].sort();
  }

  private async deviceSeries(signal?: AbortSignal): Promise<string[]> {
    const now = this.env.timers.now();
    if (this.devices && now - this.devices.at < this.cfg.devicesTtlMs) return this.devices.ids;
    const body = await this.get(apiUrl(this.cfg.base, "/devices", {}), signal);
    const ids: string[] = [];
    const list = (body as { devices?: unknown })?.devices;
    if (Array.isArray(list)) {
      for (const d of list as { id?: unknown; metrics?: unknown }[]) {
        if (typeof d?.id !== "string" || !Array.isArray(d.metrics)) continue;
        for (const m of d.metrics) if (typeof m === "string") ids.push(`${d.id}/${m}`);
      }
    }
    this.devices = { at: now, ids };
    return ids;
  }

  private async raw(ids: string[], r: FillRange, out: Point[], signal?: AbortSignal): Promise<void> {
    // Up to well after the range: a full buffer that still starts after
    // r.from is how a dropped older part shows.
    const to = Math.max(r.to + 1, this.env.timers.now()) + 5 * 60_000;
    const data = await this.query(ids, { from: r.from, to, step: "raw" }, signal);
    const truncated: { id: string; before: number }[] = [];
    for (const sd of data) {
      const n = Math.min(sd.t.length, sd.last.length);
      for (let j = 0; j < n; j++) {
        const t = sd.t[j];
        if (t >= r.from && t <= r.to) out.push({ s: sd.id, t, v: sd.last[j] });
      }
      if (n >= this.cfg.rawPoints && sd.t[0] > r.from) truncated.push({ id: sd.id, before: Math.min(sd.t[0], r.to + 1) });
    }
    if (truncated.length === 0) return;
    const end = Math.max(...truncated.map((x) => x.before));
    const before = new Map(truncated.map((x) => [x.id, x.before]));
    const buckets: Point[] = [];
    await this.stepped(truncated.map((x) => x.id), r.from, end - 1, buckets, signal);
    for (const p of buckets) if (p.t < before.get(p.s)!) out.push(p);
  }

  // Buckets covering reading times [from, to], as points.
  private async stepped(ids: string[], from: number, to: number, out: Point[], signal?: AbortSignal): Promise<void> {
    const step = pickStep(to + 1 - from, this.cfg.maxPoints);
    const qFrom = Math.floor(from / step) * step; // from applies to bucket starts
    const data = await this.query(ids, { from: qFrom, to: to + 1, step: `${step / 1000}s`, maxPoints: this.cfg.maxPoints }, signal);
    for (const sd of data) {
      const n = Math.min(sd.t.length, sd.avg.length);
      for (let j = 0; j < n; j++) if (sd.t[j] <= to) out.push({ s: sd.id, t: sd.t[j], v: sd.avg[j] });
    }
  }

  private async query(ids: string[], q: Record<string, string | number>, signal?: AbortSignal): Promise<SeriesData[]> {
    let series = ids;
    for (;;) {
      if (series.length === 0) return [];
      const url = apiUrl(this.cfg.base, "/query", { series, ...q });
      try {
        return parseQuery(await this.get(url, signal));
      } catch (err) {
        const unknown = err instanceof HttpError && err.status === 404 ? /unknown series "([^"]+)"/.exec(err.message)?.[1] : undefined;
        if (!unknown || !series.includes(unknown)) throw err;
        series = series.filter((s) => s !== unknown);
      }
    }
  }

  private async get(url: string, signal?: AbortSignal): Promise<unknown> {
    const res = await this.env.fetch(url, { signal, headers: { Accept: "application/json" }, credentials: "same-origin", cache: "no-store" });
    let body: unknown = null;
    try {
      body = await res.json();
    } catch {
      body = null;
    }
    if (!res.ok) {
      const msg = typeof (body as { error?: unknown })?.error === "string" ? (body as { error: string }).error : `HTTP ${res.status}`;
      throw new HttpError(res.status, msg);
    }
    return body;
  }
}

function parseQuery(body: unknown): SeriesData[] {
  const list = (body as { series?: unknown })?.series;
  if (!Array.isArray(list)) return [];
  const out: SeriesData[] = [];
  const nums = (x: unknown): number[] => (Array.isArray(x) ? (x as number[]) : []);
  for (const s of list as Record<string, unknown>[]) {
    if (typeof s?.id !== "string") continue;
    out.push({ id: s.id, step: typeof s.step === "number" ? s.step : 0, t: nums(s.t), avg: nums(s.avg), last: nums(s.last) });
  }
  return out;
}
