import { describe, expect, it } from "vitest";
import type { SeriesData } from "./api";
import { alignedData, lowerBound, SeriesStore } from "./series";

function hist(step: number, rows: [t: number, avg: number, count: number, min?: number, max?: number][]): SeriesData {
  return {
    id: "d/m",
    step,
    t: rows.map((r) => r[0]),
    avg: rows.map((r) => r[1]),
    count: rows.map((r) => r[2]),
    min: rows.map((r) => r[3] ?? r[1]),
    max: rows.map((r) => r[4] ?? r[1]),
    last: rows.map((r) => r[1]),
  };
}

describe("SeriesStore, buckets", () => {
  it("folds live points into new buckets and keeps times unique and sorted", () => {
    const s = new SeriesStore("d/m");
    s.beginLoad();
    s.load(hist(1000, [[0, 1, 1], [1000, 2, 1]]), 1000);
    s.add(2100, 3);
    s.add(2900, 5);
    s.add(4000, 7);
    s.add(3500, 6); // late: inserted in order
    expect(s.t).toEqual([0, 1000, 2000, 3000, 4000]);
    expect(s.val).toEqual([1, 2, 4, 6, 7]);
    expect(s.min[2]).toBe(3);
    expect(s.max[2]).toBe(5);
  });

  it("points held during a load only widen the history's buckets", () => {
    const s = new SeriesStore("d/m");
    s.beginLoad();
    s.add(1500, 10); // may already be in the history answer
    s.add(2500, 4); // a bucket the answer does not have
    s.load(hist(1000, [[0, 1, 1], [1000, 2, 2, 1, 3]]), 1000);
    expect(s.t).toEqual([0, 1000, 2000]);
    expect(s.val[1]).toBe(2); // mean untouched
    expect(s.max[1]).toBe(10); // band widened
    expect(s.val[2]).toBe(4);
  });

  it("points after the load fold fully into the open bucket", () => {
    const s = new SeriesStore("d/m");
    s.beginLoad();
    s.load(hist(1000, [[0, 1, 1], [1000, 2, 1]]), 1000);
    s.add(1800, 4);
    expect(s.val[1]).toBe(3);
    s.add(500, 9); // late, into a closed history bucket: idempotent
    expect(s.val[0]).toBe(1);
    expect(s.max[0]).toBe(9);
  });

  it("an empty history answer takes the step given", () => {
    const s = new SeriesStore("d/m");
    s.beginLoad();
    s.load(null, 5000);
    s.add(12_000, 1);
    s.add(13_000, 3);
    expect(s.t).toEqual([10_000]);
    expect(s.val).toEqual([2]);
  });

  it("trims old entries and caps its size", () => {
    const s = new SeriesStore("d/m", 100);
    s.beginLoad();
    s.load(null, 1000);
    for (let i = 0; i < 500; i++) s.add(i * 1000, i);
    expect(s.length).toBeLessThanOrEqual(100);
    expect(s.lastT()).toBe(499_000);
    s.trimBefore(480_000);
    expect(s.t[0]).toBeGreaterThanOrEqual(400_000);
  });
});

describe("SeriesStore, raw", () => {
  it("replaces a reading seen twice instead of duplicating it", () => {
    const s = new SeriesStore("d/m");
    s.beginLoad();
    s.add(1001, 5); // delivered live and present in the history
    s.load(hist(0, [[1000, 1, 1], [1001, 5, 1]]), 0);
    s.add(1002, 6);
    s.add(1002, 6);
    s.add(999, 0);
    expect(s.t).toEqual([999, 1000, 1001, 1002]);
    expect(s.val).toEqual([0, 1, 5, 6]);
  });
});

describe("alignedData", () => {
  it("passes one series through and joins several on the union of times", () => {
    const a = new SeriesStore("a/x");
    const b = new SeriesStore("b/x");
    for (const s of [a, b]) {
      s.beginLoad();
      s.load(null, 1000);
    }
    a.add(1000, 1);
    a.add(3000, 3);
    b.add(2000, 2);
    b.add(3000, 30);
    expect(alignedData([a])[0]).toBe(a.t);
    const d = alignedData([a, b]);
    expect(d[0]).toEqual([1000, 2000, 3000]);
    expect(d[1]).toEqual([1, null, 3]);
    expect(d[4]).toEqual([null, 2, 30]);
  });

  it("lowerBound", () => {
    expect(lowerBound([1, 3, 5], 0)).toBe(0);
    expect(lowerBound([1, 3, 5], 3)).toBe(1);
    expect(lowerBound([1, 3, 5], 4)).toBe(2);
    expect(lowerBound([1, 3, 5], 9)).toBe(3);
  });
});
