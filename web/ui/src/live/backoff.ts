// Exponential backoff with full jitter (AWS Architecture Blog, "Exponential
// Backoff And Jitter"): the n-th retry waits a uniform random time in
// [0, min(cap, base * 2^n)). Full jitter spreads a fleet of dashboards that
// lost the server at the same moment over the whole window, so a restarted
// server is not hit by all of them at once.

export class Backoff {
  private n = 0;

  constructor(
    private readonly random: () => number,
    readonly baseMs = 1000,
    readonly capMs = 30_000,
  ) {}

  /** The next delay, ms; each call widens the window until the cap. */
  next(): number {
    const ceil = Math.min(this.capMs, this.baseMs * 2 ** this.n);
    if (ceil < this.capMs) this.n++;
    return Math.floor(this.random() * ceil);
  }

  /** Retries since the last reset. */
  get attempts(): number {
    return this.n;
  }

  /** Back to the smallest window (after a connection stayed healthy). */
  reset(): void {
    this.n = 0;
  }
}
