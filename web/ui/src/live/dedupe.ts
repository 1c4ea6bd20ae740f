import type { Point } from "./types";

// Exactly-once delivery to handlers. The server sends every reading once
// per stream, but the library also merges readings from elsewhere: a gap
// backfilled from /api/v1/query overlaps the readings that did arrive live
// around it, a reset reload overlaps what follows it, and a tab that takes
// over the shared connection resumes from the last cursor it saw. A reading
// is identified by (series, t, v); each subscription remembers the readings
// it delivered recently, per series, and drops repeats.
//
// The memory is bounded: per series, readings older than windowMs behind
// the newest one, and beyond maxPerSeries the earliest delivered, are
// forgotten. A reading that is not remembered is delivered: at worst a
// duplicate, never a silent drop.

export interface DedupeOptions {
  /** How far behind the newest reading of a series repeats are caught. */
  windowMs?: number;
  /** Readings remembered per series. */
  maxPerSeries?: number;
}

const DEFAULT_WINDOW_MS = 10 * 60_000;
const DEFAULT_MAX = 4096;

class SeriesWindow {
  private keys = new Set<string>();
  private queue: { k: string; t: number }[] = [];
  private head = 0;
  private newest = -Infinity;

  constructor(
    private readonly windowMs: number,
    private readonly max: number,
  ) {}

  /** True when (t, v) was not delivered recently; remembers it. */
  admit(t: number, v: number): boolean {
    const k = `${t}:${v}`;
    if (this.keys.has(k)) return false;
    if (t > this.newest) this.newest = t;
    // Older than the window: not remembered, delivered (cannot be told
    // apart from a reading never seen).
    if (t < this.newest - this.windowMs) return true;
    this.keys.add(k);
    this.queue.push({ k, t });
    this.evict();
    return true;
  }

  get size(): number {
    return this.keys.size;
  }

  private evict(): void {
    const floor = this.newest - this.windowMs;
    while (this.head < this.queue.length) {
      const e = this.queue[this.head];
      if (this.keys.size <= this.max && e.t >= floor) break;
      this.keys.delete(e.k);
      this.head++;
    }
    if (this.head > 1024 && this.head * 2 > this.queue.length) {
      this.queue = this.queue.slice(this.head);
      this.head = 0;
    }
  }
}

export class Deduper {
  private series = new Map<string, SeriesWindow>();
  private readonly windowMs: number;
  private readonly max: number;

  constructor(opts: DedupeOptions = {}) {
    this.windowMs = opts.windowMs ?? DEFAULT_WINDOW_MS;
    this.max = opts.maxPerSeries ?? DEFAULT_MAX;
  }

  /** The points not delivered before, in their order; remembers them. */
  filter(points: readonly Point[]): Point[] {
    const out: Point[] = [];
    for (const p of points) {
      let w = this.series.get(p.s);
      if (!w) {
        w = new SeriesWindow(this.windowMs, this.max);
        this.series.set(p.s, w);
      }
      if (w.admit(p.t, p.v)) out.push(p);
    }
    return out;
  }

  /** Readings remembered for a series (tests). */
  remembered(series: string): number {
    return this.series.get(series)?.size ?? 0;
  }
}
