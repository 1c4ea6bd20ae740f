import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { createLiveWith } from "./live";
import { World, type FakeRequest, type TabOptions } from "./testkit";
import type { ConnectionState, Handlers, LiveOptions, Point, Presence } from "./types";

const NOW = 1_700_000_000_000;
const tick = (ms: number) => vi.advanceTimersByTimeAsync(ms);
const pt = (s: string, t: number, v = t % 1000) => ({ s, t, v });

function setup(opts: LiveOptions = {}, tabOpts?: TabOptions) {
  const world = new World();
  const tab = world.tab(tabOpts);
  const live = createLiveWith(tab.env, { shareAcrossTabs: false, ...opts });
  const states: ConnectionState[] = [];
  live.onState((s) => void states.push(s));
  return { world, tab, live, net: world.net, states };
}

function collect(withReset = true) {
  const got: Point[] = [];
  const presence: Presence[] = [];
  const calls: Point[][] = [];
  let resets = 0;
  const handlers: Handlers = {
    points: (p) => {
      calls.push(p);
      got.push(...p);
    },
    presence: (p) => void presence.push(p),
  };
  if (withReset) handlers.reset = () => void resets++;
  return { got, presence, calls, handlers, resets: () => resets };
}

// Answers /devices and (unless manual) /query like the server, from raw
// readings kept in `store`.
function history(world: World, store: Point[], manual = false) {
  const asked: URLSearchParams[] = [];
  world.net.auto = (r: FakeRequest) => {
    if (r.path === "/api/v1/devices") {
      const ids = [...new Set(store.map((p) => p.s))];
      const devs = new Map<string, string[]>();
      for (const id of ids) {
        const [d, m] = id.split("/");
        devs.set(d, [...(devs.get(d) ?? []), m]);
      }
      r.respond(200, { devices: [...devs].map(([id, metrics]) => ({ id, metrics })) });
      return;
    }
    if (r.path !== "/api/v1/query" || manual) return false;
    asked.push(r.params);
    const from = Number(r.params.get("from"));
    const to = Number(r.params.get("to"));
    const series = r.params.getAll("series").map((id) => {
      const rs = store.filter((p) => p.s === id && p.t >= from && p.t < to).sort((a, b) => a.t - b.t);
      return { id, step: 0, t: rs.map((p) => p.t), min: [], max: [], avg: rs.map((p) => p.v), count: [], last: rs.map((p) => p.v) };
    });
    r.respond(200, { series });
  };
  return asked;
}

describe("createLive", () => {
  beforeEach(() => void vi.useFakeTimers({ now: NOW }));
  afterEach(() => void vi.useRealTimers());

  it("delivers each reading to the subscriptions whose patterns match it", async () => {
    const { live, net } = setup();
    const a = collect();
    const b = collect();
    live.subscribe(["dev1/#"], a.handlers);
    live.subscribe(["+/temp"], b.handlers);
    await tick(0);
    expect(net.ws).toHaveLength(1); // one connection for both
    const ws = net.lastWS();
    expect(ws.params.getAll("series")).toEqual(["+/temp", "dev1/#"]);
    ws.subscribed("c1");
    ws.points("c2", [pt("dev1/temp", NOW - 5), pt("dev1/hum", NOW - 4), pt("dev2/temp", NOW - 3)]);
    expect(a.got.map((p) => p.s)).toEqual(["dev1/temp", "dev1/hum"]);
    expect(b.got.map((p) => p.s)).toEqual(["dev1/temp", "dev2/temp"]);
    ws.receive({ type: "presence", device: "dev2", online: false, t: NOW });
    expect(a.presence).toHaveLength(0);
    expect(b.presence).toEqual([{ device: "dev2", online: false, t: NOW }]);
  });

  it("tells the connection badge everything it shows", async () => {
    const { live, net, states } = setup();
    live.subscribe(["dev1/#"], collect().handlers);
    expect(live.state()).toMatchObject({ status: "connecting", stale: true, leader: true });
    await tick(0);
    const ws = net.lastWS();
    ws.subscribed("c1");
    await tick(100);
    ws.points("c2", [pt("dev1/temp", NOW - 20)]);
    await tick(1000);
    expect(live.state()).toEqual({
      status: "live",
      transport: "ws",
      lastHeartbeat: NOW + 100,
      latencyMs: 120,
      reconnects: 0,
      leader: true,
      stale: false,
    });
    ws.drop();
    expect(live.state()).toMatchObject({ status: "reconnecting", stale: true, reconnects: 1 });
    const statuses = states.map((s) => s.status).filter((s, i, a) => s !== a[i - 1]);
    expect(statuses).toEqual(["connecting", "live", "reconnecting"]);
  });

  it("after a reconnect resumes from the cursor: no hole, no duplicate", async () => {
    const { live, net } = setup();
    const a = collect();
    live.subscribe(["dev1/#"], a.handlers);
    await tick(0);
    net.lastWS().subscribed("c1");
    net.lastWS().points("c2", [pt("dev1/t", 1), pt("dev1/t", 2)]);
    net.lastWS().points("c3", [pt("dev1/t", 3)]);
    net.lastWS().drop();
    await tick(500);
    const ws = net.lastWS();
    expect(ws.params.get("cursor")).toBe("c3");
    ws.subscribed("c3");
    // Overlap (a reading sent again) is dropped; what follows is delivered.
    ws.points("c4", [pt("dev1/t", 3), pt("dev1/t", 4)]);
    expect(a.got.map((p) => p.t)).toEqual([1, 2, 3, 4]);
  });

  it("backfills a gap from /api/v1/query, without duplicates, and is stale until it has", async () => {
    const { live, net, world } = setup();
    const a = collect();
    live.subscribe(["dev1/#"], a.handlers);
    await tick(0);
    const ws = net.lastWS();
    ws.subscribed("c1");
    const all = Array.from({ length: 30 }, (_, i) => pt(i % 2 ? "dev1/a" : "dev1/b", NOW - 30_000 + i * 1000));
    const asked = history(world, all, true);
    ws.points("c2", all.slice(0, 10));
    // Readings 10..19 are dropped by the server, which says so.
    ws.receive({ type: "gap", from: all[10].t, to: all[19].t, cursor: "c3" });
    ws.points("c4", all.slice(20));
    expect(live.state().stale).toBe(true);
    await tick(0);
    expect(net.pending("/query")).toHaveLength(1);
    net.pending("/query")[0].respond(200, {
      series: ["dev1/a", "dev1/b"].map((id) => {
        // The server answers with the whole range, boundaries included.
        const rs = all.filter((p) => p.s === id && p.t >= all[9].t && p.t <= all[20].t);
        return { id, step: 0, t: rs.map((p) => p.t), min: [], max: [], avg: [], count: [], last: rs.map((p) => p.v) };
      }),
    });
    await tick(0);
    expect(asked).toHaveLength(0); // answered by hand above
    expect(a.got).toHaveLength(30);
    expect(new Set(a.got.map((p) => p.t)).size).toBe(30);
    expect(live.state().stale).toBe(false);
  });

  it("expands patterns through /devices for the backfill query", async () => {
    const { live, net, world } = setup();
    const a = collect();
    live.subscribe(["+/temp"], a.handlers);
    await tick(0);
    net.lastWS().subscribed("c1");
    const store = [pt("boiler/temp", NOW - 500), pt("boiler/hum", NOW - 500), pt("oven/temp", NOW - 400)];
    const asked = history(world, store);
    net.lastWS().receive({ type: "gap", from: NOW - 1000, to: NOW - 1, cursor: "c2" });
    await tick(0);
    expect(asked[0].getAll("series")).toEqual(["boiler/temp", "oven/temp"]);
    expect(asked[0].get("step")).toBe("raw");
    expect(a.got.map((p) => p.s)).toEqual(["boiler/temp", "oven/temp"]);
  });

  it("retries a failed backfill with backoff, and at once when back online", async () => {
    const { live, net, world, tab } = setup();
    const a = collect();
    live.subscribe(["dev1/t"], a.handlers);
    await tick(0);
    net.lastWS().subscribed("c1");
    net.lastWS().receive({ type: "gap", from: NOW - 1000, to: NOW - 1, cursor: "c2" });
    await tick(0);
    net.next("/query").fail();
    await tick(499); // random 0.5 of 1 s
    expect(net.pending("/query")).toHaveLength(0);
    await tick(1);
    net.next("/query").respond(503, { error: "busy" });
    await tick(0);
    world.random = () => 0.99;
    tab.page.fire("online");
    await tick(0);
    history(world, [pt("dev1/t", NOW - 500)]);
    net.next("/query").respond(200, { series: [{ id: "dev1/t", step: 0, t: [NOW - 500], last: [5], avg: [5] }] });
    await tick(0);
    expect(a.got).toEqual([{ s: "dev1/t", t: NOW - 500, v: 5 }]);
    expect(live.state().stale).toBe(false);
  });

  it("gives up a backfill the server refuses, and says so", async () => {
    const { live, net, tab } = setup();
    live.subscribe(["dev1/t"], collect().handlers);
    await tick(0);
    net.lastWS().subscribed("c1");
    net.lastWS().receive({ type: "gap", from: NOW - 1000, to: NOW - 1, cursor: "c2" });
    await tick(0);
    net.next("/query").respond(400, { error: "no" });
    await tick(0);
    expect(tab.warnings.some((w) => w.includes("backfill"))).toBe(true);
    expect(live.state().stale).toBe(false);
  });

  it("backfills a gap only for the subscriptions that existed when it happened", async () => {
    const { live, net, world } = setup();
    const early = collect();
    live.subscribe(["dev1/t"], early.handlers);
    await tick(0);
    net.lastWS().subscribed("c1");
    net.lastWS().receive({ type: "gap", from: NOW - 1000, to: NOW - 1, cursor: "c2" });
    const late = collect();
    live.subscribe(["dev1/t"], late.handlers);
    await tick(0);
    history(world, [pt("dev1/t", NOW - 500)]);
    net.next("/query").respond(200, { series: [{ id: "dev1/t", step: 0, t: [NOW - 500], last: [5], avg: [5] }] });
    await tick(0);
    expect(early.got).toHaveLength(1);
    expect(late.got).toHaveLength(0);
  });

  it("on reset calls reset() and delivers what follows", async () => {
    const { live, net } = setup();
    const a = collect();
    live.subscribe(["dev1/#"], a.handlers);
    await tick(0);
    net.lastWS().subscribed("c1");
    net.lastWS().drop();
    await tick(500);
    net.lastWS().receive({ type: "reset", cursor: "x1" });
    net.lastWS().points("x2", [pt("dev1/t", NOW + 1)]);
    expect(a.resets()).toBe(1);
    expect(a.got).toHaveLength(1);
    expect(net.pending("/query")).toHaveLength(0); // the app reloads, not us
  });

  it("on reset reloads, for subscriptions without a reset handler, what came since the last message", async () => {
    const { live, net, world, tab } = setup();
    const a = collect(false);
    live.subscribe(["dev1/t"], a.handlers);
    await tick(0);
    net.lastWS().subscribed("c1");
    net.lastWS().points("c2", [pt("dev1/t", NOW - 100)]);
    tab.page.setOnline(false);
    await tick(60_000); // the server restarted meanwhile
    const store = [pt("dev1/t", NOW - 100), pt("dev1/t", NOW + 30_000), pt("dev1/t", NOW + 59_000)];
    const asked = history(world, store);
    tab.page.setOnline(true);
    net.lastWS().accept();
    net.lastWS().receive({ type: "reset", cursor: "x1" });
    net.lastWS().points("x2", [pt("dev1/t", NOW + 59_000)]);
    await tick(0);
    expect(asked).toHaveLength(1);
    // Since 30 s before the last message, up to 30 s ahead of now.
    expect(Number(asked[0].get("from"))).toBe(NOW - 30_000);
    // NOW - 100 and NOW + 59 s were delivered already: not again.
    expect(a.got.map((p) => p.t)).toEqual([NOW - 100, NOW + 59_000, NOW + 30_000]);
  });

  it("asks for the hidden rate while the tab is hidden, and full rate when it is visible", async () => {
    const { live, net, tab } = setup({ hiddenRate: 0.5 });
    live.subscribe(["dev1/#"], collect().handlers);
    await tick(0);
    net.lastWS().subscribed("c1");
    tab.page.setHidden(true);
    await tick(2000);
    expect(net.lastWS().params.get("rate")).toBe("0.5");
    net.lastWS().subscribed("c2");
    tab.page.setHidden(false);
    expect(net.lastWS().params.has("rate")).toBe(false);
    expect(net.lastWS().params.get("cursor")).toBe("c2");
  });

  it("drops a closed subscription's patterns from the connection", async () => {
    const { live, net } = setup();
    const a = collect();
    const s1 = live.subscribe(["dev1/#"], a.handlers);
    live.subscribe(["dev2/#"], collect().handlers);
    await tick(0);
    const ws = net.lastWS();
    ws.subscribed("c1");
    s1.close();
    await tick(0);
    expect(ws.sent).toEqual([{ type: "unsubscribe", series: ["dev1/#"] }]);
    ws.points("c2", [pt("dev1/t", 1)]);
    expect(a.got).toHaveLength(0);
  });

  it("keeps delivering when a handler throws", async () => {
    const { live, net, tab } = setup();
    const b = collect();
    live.subscribe(["dev1/#"], { points: () => { throw new Error("app bug"); } });
    live.subscribe(["dev1/#"], b.handlers);
    await tick(0);
    net.lastWS().subscribed("c1");
    net.lastWS().points("c2", [pt("dev1/t", 1)]);
    expect(b.got).toHaveLength(1);
    expect(tab.warnings.some((w) => w.includes("handler"))).toBe(true);
  });

  it("refuses invalid patterns before they reach the server", () => {
    const { live } = setup();
    expect(() => live.subscribe(["a/b/c"], collect().handlers)).toThrow(TypeError);
    expect(() => live.subscribe(["a/#/b"], collect().handlers)).toThrow(TypeError);
  });

  it("close() closes the connection and leaves no timers or listeners", async () => {
    const { live, net, tab } = setup();
    live.subscribe(["dev1/#"], collect().handlers);
    await tick(0);
    net.lastWS().subscribed("c1");
    live.close();
    expect(net.lastWS().closedByClient).toBe(true);
    expect(vi.getTimerCount()).toBe(0);
    expect(tab.page.listenerCount()).toBe(0);
    expect(() => live.subscribe(["a/b"], collect().handlers)).toThrow();
  });

  it("works over SSE and polling the same way", async () => {
    for (const transports of [["sse"], ["longpoll"], ["poll"]] as const) {
      const { live, net } = setup({ transports: [...transports] });
      const a = collect();
      live.subscribe(["dev1/#"], a.handlers);
      await tick(0);
      if (transports[0] === "sse") {
        net.lastES().subscribed("c1");
        net.lastES().points("c2", [pt("dev1/t", 1)]);
      } else {
        net.next("/poll").respond(200, { cursor: "c1", points: [], gap: null, reset: false });
        await tick(1000);
        net.next("/poll").respond(200, { cursor: "c2", points: [pt("dev1/t", 1)], gap: null, reset: false });
        await tick(0);
      }
      expect(a.got).toHaveLength(1);
      expect(live.state()).toMatchObject({ status: "live", transport: transports[0] });
      live.close();
    }
  });
});
