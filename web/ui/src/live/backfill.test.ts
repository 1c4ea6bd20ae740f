import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { Backfiller, backfillDefaults, HttpError, pickStep } from "./backfill";
import { World, type FakeRequest } from "./testkit";

const NOW = 1_700_000_000_000;

interface Stored {
  [id: string]: { t: number; v: number }[];
}

// A server with raw readings (the newest `keep` per series) and buckets.
function serve(world: World, raw: Stored, opts: { keep?: number; devices?: { id: string; metrics: string[] }[] } = {}) {
  const keep = opts.keep ?? 256;
  const queries: URLSearchParams[] = [];
  world.net.auto = (r: FakeRequest) => {
    if (r.path === "/api/v1/devices") {
      r.respond(200, { devices: opts.devices ?? [] });
      return;
    }
    if (r.path !== "/api/v1/query") return false;
    queries.push(r.params);
    const ids = r.params.getAll("series");
    const from = Number(r.params.get("from"));
    const to = Number(r.params.get("to"));
    const step = r.params.get("step")!;
    for (const id of ids) {
      if (!raw[id]) {
        r.respond(404, { error: `unknown series "${id}"` });
        return;
      }
    }
    const series = ids.map((id) => {
      const all = raw[id];
      if (step === "raw") {
        const rs = all.slice(-keep).filter((p) => p.t >= from && p.t < to);
        return { id, step: 0, t: rs.map((p) => p.t), min: [], max: [], avg: rs.map((p) => p.v), count: [], last: rs.map((p) => p.v) };
      }
      const ms = parseInt(step, 10) * 1000;
      const buckets = new Map<number, number[]>();
      for (const p of all) {
        const b = Math.floor(p.t / ms) * ms;
        if (b >= from && b < to) buckets.set(b, [...(buckets.get(b) ?? []), p.v]);
      }
      const ts = [...buckets.keys()].sort((a, b) => a - b);
      const avg = ts.map((b) => buckets.get(b)!.reduce((x, y) => x + y, 0) / buckets.get(b)!.length);
      return { id, step: ms, t: ts, min: [], max: [], avg, count: [], last: [] };
    });
    r.respond(200, { series });
  };
  return queries;
}

function readings(from: number, n: number, every: number): { t: number; v: number }[] {
  return Array.from({ length: n }, (_, i) => ({ t: from + i * every, v: i }));
}

describe("Backfiller", () => {
  beforeEach(() => void vi.useFakeTimers({ now: NOW }));
  afterEach(() => void vi.useRealTimers());

  const make = (world: World) => new Backfiller(world.tab().env, { base: world.origin, ...backfillDefaults });

  it("fetches a recent gap raw, exactly its range (to inclusive)", async () => {
    const world = new World();
    const rs = readings(NOW - 60_000, 60, 1000);
    const queries = serve(world, { "d/a": rs });
    const pts = await make(world).run({ from: NOW - 50_000, to: NOW - 40_000, patterns: ["d/a"] });
    expect(pts.map((p) => p.t)).toEqual(rs.filter((p) => p.t >= NOW - 50_000 && p.t <= NOW - 40_000).map((p) => p.t));
    expect(pts).toHaveLength(11);
    expect(queries[0].get("step")).toBe("raw");
  });

  it("expands patterns through /devices and asks at most 100 series per query", async () => {
    const world = new World();
    const devices = Array.from({ length: 250 }, (_, i) => ({ id: `dev${i}`, metrics: ["temp", "hum"] }));
    const raw: Stored = {};
    for (const d of devices) for (const m of d.metrics) raw[`${d.id}/${m}`] = [{ t: NOW - 1000, v: 1 }];
    const queries = serve(world, raw, { devices });
    const pts = await make(world).run({ from: NOW - 2000, to: NOW, patterns: ["+/temp", "dev7/#"] });
    expect(pts).toHaveLength(251);
    expect(queries.map((q) => q.getAll("series").length)).toEqual([100, 100, 51]);
    expect(new Set(pts.map((p) => p.s)).has("dev7/hum")).toBe(true);
  });

  it("does not ask /devices for exact ids", async () => {
    const world = new World();
    serve(world, { "d/a": [{ t: NOW - 10, v: 1 }] });
    await make(world).run({ from: NOW - 100, to: NOW, patterns: ["d/a"] });
    expect(world.net.requests.map((r) => r.path)).toEqual(["/api/v1/query"]);
  });

  it("fetches an old gap in buckets: one point per bucket start with the bucket mean", async () => {
    const world = new World();
    const from = NOW - 3_600_000;
    const rs = readings(from, 600, 1000); // 10 minutes at 1 Hz, an hour ago
    const queries = serve(world, { "d/a": rs });
    const pts = await make(world).run({ from: from + 500, to: from + 599_000, patterns: ["d/a"] });
    // 600 s in at most 1500 buckets: 1 s buckets, from aligned down.
    expect(queries[0].get("step")).toBe("1s");
    expect(Number(queries[0].get("from"))).toBe(from);
    expect(pts).toHaveLength(600);
    expect(pts[1]).toEqual({ s: "d/a", t: from + 1000, v: 1 });
  });

  it("asks in buckets for the part of a recent gap the server's raw buffer no longer holds", async () => {
    const world = new World();
    const from = NOW - 200_000;
    const rs = readings(from, 400, 500); // 400 readings in 200 s; the server keeps 256
    const queries = serve(world, { "d/a": rs });
    const pts = await make(world).run({ from, to: NOW, patterns: ["d/a"] });
    const rawStart = rs[400 - 256].t;
    const raw = pts.filter((p) => p.t >= rawStart);
    const buckets = pts.filter((p) => p.t < rawStart);
    expect(raw).toHaveLength(256);
    expect(buckets.length).toBeGreaterThan(0);
    expect(buckets[0].t).toBe(from);
    expect(buckets[buckets.length - 1].t).toBeLessThan(rawStart);
    expect(queries.map((q) => q.get("step"))).toEqual(["raw", "1s"]);
    // No hole: every second of the range has a point.
    for (let t = from; t < NOW - 1000; t += 1000) expect(pts.some((p) => p.t >= t && p.t < t + 1000)).toBe(true);
  });

  it("drops a series the server does not know and asks again", async () => {
    const world = new World();
    const queries = serve(world, { "d/a": [{ t: NOW - 10, v: 1 }] });
    const pts = await make(world).run({ from: NOW - 100, to: NOW, patterns: ["d/a", "d/nope"] });
    expect(pts).toEqual([{ s: "d/a", t: NOW - 10, v: 1 }]);
    expect(queries.map((q) => q.getAll("series"))).toEqual([["d/a", "d/nope"], ["d/a"]]);
  });

  it("reports other errors with their status", async () => {
    const world = new World();
    world.net.auto = (r) => r.respond(500, { error: "boom" });
    const err = await make(world).run({ from: NOW - 100, to: NOW, patterns: ["d/a"] }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(HttpError);
    expect((err as HttpError).status).toBe(500);
    expect((err as HttpError).permanent).toBe(false);
    expect(new HttpError(400, "x").permanent).toBe(true);
  });

  it("picks the smallest step under the point cap", () => {
    expect(pickStep(60_000, 1500)).toBe(1000);
    expect(pickStep(3_600_000, 1500)).toBe(5000);
    expect(pickStep(86_400_000, 1500)).toBe(60_000);
    expect(pickStep(400 * 86_400_000, 100)).toBe(4 * 86_400_000);
  });
});
