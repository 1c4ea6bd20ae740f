import { describe, expect, it } from "vitest";
import { Deduper } from "./dedupe";

const p = (s: string, t: number, v: number) => ({ s, t, v });

describe("Deduper", () => {
  it("passes each (series, t, v) once, in order", () => {
    const d = new Deduper();
    expect(d.filter([p("a/x", 1, 1), p("a/x", 2, 2), p("b/x", 1, 1)])).toEqual([p("a/x", 1, 1), p("a/x", 2, 2), p("b/x", 1, 1)]);
    expect(d.filter([p("a/x", 2, 2), p("a/x", 3, 3), p("b/x", 1, 1)])).toEqual([p("a/x", 3, 3)]);
  });

  it("keeps two readings at the same time with different values", () => {
    const d = new Deduper();
    expect(d.filter([p("a/x", 1, 1), p("a/x", 1, 2)])).toHaveLength(2);
  });

  it("delivers rather than drops what it no longer remembers (time window)", () => {
    const d = new Deduper({ windowMs: 1000 });
    d.filter([p("a/x", 0, 0)]);
    d.filter([p("a/x", 5000, 1)]);
    // t=0 is out of the window: forgotten, so a repeat is delivered.
    expect(d.filter([p("a/x", 0, 0)])).toEqual([p("a/x", 0, 0)]);
    expect(d.remembered("a/x")).toBe(1);
  });

  it("bounds the readings remembered per series", () => {
    const d = new Deduper({ maxPerSeries: 100 });
    const pts = Array.from({ length: 1000 }, (_, i) => p("a/x", i, i));
    expect(d.filter(pts)).toHaveLength(1000);
    expect(d.remembered("a/x")).toBe(100);
    expect(d.filter([p("a/x", 999, 999)])).toHaveLength(0);
    expect(d.filter([p("a/x", 0, 0)])).toHaveLength(1);
  });
});
