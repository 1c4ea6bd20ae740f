import type { TimerApi } from "./env";

// A watchdog that fires when kick() has not been called for ms. Kicking is
// cheap (it records the time; the one pending timer re-arms itself when it
// finds a later kick), so it can be kicked on every message of a busy
// stream. Because it compares clock times when its timer fires, a timer
// delayed by a throttled background tab never fires early.
export class Watchdog {
  private last = 0;
  private handle: unknown = null;
  private armedFor = 0;

  constructor(
    private readonly timers: TimerApi,
    private ms: number,
    private readonly onFire: () => void,
  ) {}

  /** Starts or restarts the countdown, optionally with a new timeout. */
  kick(ms?: number): void {
    if (ms !== undefined) this.ms = ms;
    this.last = this.timers.now();
    const due = this.last + this.ms;
    if (this.handle !== null && due >= this.armedFor) return;
    this.arm(due);
  }

  stop(): void {
    if (this.handle !== null) this.timers.clearTimeout(this.handle);
    this.handle = null;
  }

  get running(): boolean {
    return this.handle !== null;
  }

  private arm(due: number): void {
    this.stop();
    this.armedFor = due;
    this.handle = this.timers.setTimeout(() => this.check(), Math.max(0, due - this.timers.now()));
  }

  private check(): void {
    this.handle = null;
    const due = this.last + this.ms;
    if (this.timers.now() < due) {
      this.arm(due);
      return;
    }
    this.onFire();
  }
}
