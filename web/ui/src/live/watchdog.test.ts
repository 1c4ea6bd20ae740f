import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { Watchdog } from "./watchdog";

const timers = {
  now: () => Date.now(),
  setTimeout: (fn: () => void, ms: number) => setTimeout(fn, ms),
  clearTimeout: (h: unknown) => clearTimeout(h as ReturnType<typeof setTimeout>),
};

describe("Watchdog", () => {
  beforeEach(() => void vi.useFakeTimers());
  afterEach(() => void vi.useRealTimers());

  it("fires after ms without a kick, and kicks postpone it", () => {
    const fired = vi.fn();
    const w = new Watchdog(timers, 1000, fired);
    w.kick();
    vi.advanceTimersByTime(900);
    w.kick();
    vi.advanceTimersByTime(900);
    w.kick();
    vi.advanceTimersByTime(999);
    expect(fired).not.toHaveBeenCalled();
    vi.advanceTimersByTime(1);
    expect(fired).toHaveBeenCalledTimes(1);
    expect(w.running).toBe(false);
  });

  it("keeps one timer however often it is kicked", () => {
    const w = new Watchdog(timers, 1000, () => {});
    for (let i = 0; i < 1000; i++) w.kick();
    expect(vi.getTimerCount()).toBe(1);
    w.stop();
    expect(vi.getTimerCount()).toBe(0);
  });

  it("takes a shorter timeout at once", () => {
    const fired = vi.fn();
    const w = new Watchdog(timers, 10_000, fired);
    w.kick();
    w.kick(100);
    vi.advanceTimersByTime(100);
    expect(fired).toHaveBeenCalledTimes(1);
  });
});
