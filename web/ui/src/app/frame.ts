// One requestAnimationFrame for everything that needs drawing: charts mark
// themselves dirty as points arrive and are drawn at most once per frame.

export interface Drawable {
  flush(): void;
}

const dirty = new Set<Drawable>();
let scheduled = false;
const afterFrame: (() => void)[] = [];

export function schedule(d: Drawable): void {
  dirty.add(d);
  if (!scheduled) {
    scheduled = true;
    requestAnimationFrame(run);
  }
}

export function unschedule(d: Drawable): void {
  dirty.delete(d);
}

/** Runs fn after the next frame's drawing (once). */
export function onNextFrame(fn: () => void): void {
  afterFrame.push(fn);
  if (!scheduled) {
    scheduled = true;
    requestAnimationFrame(run);
  }
}

function run(): void {
  scheduled = false;
  const list = [...dirty];
  dirty.clear();
  for (const d of list) {
    try {
      d.flush();
    } catch (e) {
      console.error("telegauge: draw failed", e);
    }
  }
  const after = afterFrame.splice(0);
  for (const fn of after) fn();
}

/** Records requestAnimationFrame intervals until stopped (test hook). */
export class FrameSampler {
  private intervals: number[] = [];
  private last = 0;
  private raf = 0;
  running = false;

  start(): void {
    if (this.running) return;
    this.running = true;
    this.intervals = [];
    this.last = 0;
    const tick = (now: number) => {
      if (!this.running) return;
      if (this.last) this.intervals.push(now - this.last);
      this.last = now;
      this.raf = requestAnimationFrame(tick);
    };
    this.raf = requestAnimationFrame(tick);
  }

  stop(): FrameStats {
    this.running = false;
    cancelAnimationFrame(this.raf);
    return frameStats(this.intervals);
  }

  /** Statistics so far, without stopping. */
  peek(): FrameStats {
    return frameStats(this.intervals);
  }
}

export interface FrameStats {
  frames: number;
  meanMs: number;
  p50Ms: number;
  p95Ms: number;
  p99Ms: number;
  maxMs: number;
  /** Frames that took longer than 1.5 x 16.7 ms (a dropped frame at 60 Hz). */
  slowFrames: number;
  /** Mean frames per second over the sampled time. */
  fps: number;
  intervals: number[];
}

function frameStats(iv: number[]): FrameStats {
  const sorted = [...iv].sort((a, b) => a - b);
  const q = (p: number) => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] : 0);
  const total = iv.reduce((a, b) => a + b, 0);
  return {
    frames: iv.length,
    meanMs: iv.length ? total / iv.length : 0,
    p50Ms: q(0.5),
    p95Ms: q(0.95),
    p99Ms: q(0.99),
    maxMs: sorted.length ? sorted[sorted.length - 1] : 0,
    slowFrames: iv.filter((x) => x > 25).length,
    fps: total ? (iv.length * 1000) / total : 0,
    intervals: [...iv],
  };
}
