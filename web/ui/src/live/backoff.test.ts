import { describe, expect, it } from "vitest";
import { Backoff } from "./backoff";

describe("Backoff", () => {
  it("waits a uniform random time below an exponentially growing ceiling (full jitter)", () => {
    let r = 0.999999;
    const b = new Backoff(() => r, 1000, 30_000);
    const highs = Array.from({ length: 7 }, () => b.next());
    expect(highs).toEqual([999, 1999, 3999, 7999, 15999, 29999, 29999]);
    r = 0;
    expect(b.next()).toBe(0);
    r = 0.5;
    expect(b.next()).toBe(15_000);
  });

  it("is capped however many times it fails", () => {
    const b = new Backoff(() => 0.999999, 1000, 30_000);
    for (let i = 0; i < 1000; i++) expect(b.next()).toBeLessThan(30_000);
  });

  it("starts from the base again after reset()", () => {
    const b = new Backoff(() => 0.999999, 1000, 30_000);
    b.next();
    b.next();
    b.next();
    expect(b.attempts).toBe(3);
    b.reset();
    expect(b.next()).toBe(999);
  });
});
