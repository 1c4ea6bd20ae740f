import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { createLiveWith } from "./live";
import type { Shared } from "./tabs";
import { World, type FakeTab, type TabOptions } from "./testkit";
import type { Handlers, Live, Point } from "./types";

const NOW = 1_700_000_000_000;
const HB = 15_000;
const tick = (ms: number) => vi.advanceTimersByTimeAsync(ms);
const pt = (s: string, t: number, v = t % 1000) => ({ s, t, v });

interface Tab {
  tab: FakeTab;
  live: Live & { readonly coordinator: unknown };
  got: Point[];
  handlers: Handlers;
}

function open(world: World, o: TabOptions = {}): Tab {
  const tab = world.tab(o);
  const live = createLiveWith(tab.env, {});
  const got: Point[] = [];
  return { tab, live, got, handlers: { points: (p) => void got.push(...p), reset: () => {} } };
}

const leader = (t: Tab) => (t.live.coordinator as Shared).isLeader;

// Every subscription the WebSocket carries: URL patterns plus messages.
function wsPatterns(ws: { params: URLSearchParams; sent: Record<string, unknown>[] }): string[] {
  const set = new Set(ws.params.getAll("series"));
  for (const m of ws.sent) {
    for (const p of m.series as string[]) {
      if (m.type === "subscribe") set.add(p);
      else set.delete(p);
    }
  }
  return [...set].sort();
}

describe("tabs share one connection", () => {
  beforeEach(() => void vi.useFakeTimers({ now: NOW }));
  afterEach(() => void vi.useRealTimers());

  it("the leader connects for every tab's patterns and passes readings on", async () => {
    const world = new World();
    const a = open(world);
    a.live.subscribe(["dev1/#"], a.handlers);
    await tick(0);
    const b = open(world);
    b.live.subscribe(["dev2/#"], b.handlers);
    await tick(0);
    expect(leader(a)).toBe(true);
    expect(leader(b)).toBe(false);
    expect(world.net.openWS()).toHaveLength(1);
    const ws = world.net.lastWS();
    expect(ws.tab).toBe(a.tab.id);
    ws.subscribed("c1");
    await tick(0);
    expect(wsPatterns(ws)).toEqual(["dev1/#", "dev2/#"]);
    ws.points("c2", [pt("dev1/t", 1), pt("dev2/t", 2)]);
    await tick(0);
    expect(a.got.map((p) => p.s)).toEqual(["dev1/t"]);
    expect(b.got.map((p) => p.s)).toEqual(["dev2/t"]);
    expect(a.live.state()).toMatchObject({ status: "live", transport: "ws", leader: true });
    expect(b.live.state()).toMatchObject({ status: "live", transport: "ws", leader: false, stale: false });
  });

  it("a follower's later subscriptions and closes reach the leader's connection", async () => {
    const world = new World();
    const a = open(world);
    a.live.subscribe(["dev1/#"], a.handlers);
    await tick(0);
    const ws = world.net.lastWS();
    ws.subscribed("c1");
    const b = open(world);
    await tick(0);
    const sub = b.live.subscribe(["+/temp"], b.handlers);
    await tick(0);
    expect(ws.sent).toEqual([{ type: "subscribe", series: ["+/temp"], cursor: "c1" }]);
    sub.close();
    await tick(0);
    expect(ws.sent[1]).toEqual({ type: "unsubscribe", series: ["+/temp"] });
    expect(world.net.ws).toHaveLength(1);
  });

  it("when the leader tab closes, another takes over and resumes from the last cursor", async () => {
    const world = new World();
    const a = open(world);
    const b = open(world);
    a.live.subscribe(["dev1/#"], a.handlers);
    b.live.subscribe(["dev1/#"], b.handlers);
    await tick(0);
    const ws1 = world.net.lastWS();
    ws1.subscribed("c1");
    ws1.points("c2", [pt("dev1/t", 1)]);
    ws1.points("c3", [pt("dev1/t", 2)]);
    await tick(0);
    a.live.close();
    await tick(0);
    expect(ws1.closedByClient).toBe(true);
    expect(leader(b)).toBe(true);
    const ws2 = world.net.lastWS();
    expect(ws2.tab).toBe(b.tab.id);
    expect(ws2.params.get("cursor")).toBe("c3");
    ws2.subscribed("c3");
    ws2.points("c4", [pt("dev1/t", 2), pt("dev1/t", 3)]);
    expect(b.got.map((p) => p.t)).toEqual([1, 2, 3]);
    expect(b.live.state()).toMatchObject({ status: "live", leader: true });
  });

  it("when the leader tab crashes, the browser releases its lock and the next tab resumes", async () => {
    const world = new World();
    const a = open(world);
    const b = open(world);
    const c = open(world);
    for (const t of [a, b, c]) t.live.subscribe(["dev1/#"], t.handlers);
    await tick(0);
    world.net.lastWS().subscribed("c1");
    world.net.lastWS().points("c2", [pt("dev1/t", 1)]);
    await tick(0);
    a.tab.kill();
    await tick(0);
    expect([leader(b), leader(c)]).toEqual([true, false]);
    const ws = world.net.lastWS();
    expect(ws.tab).toBe(b.tab.id);
    expect(ws.params.get("cursor")).toBe("c2");
    ws.subscribed("c2");
    ws.points("c3", [pt("dev1/t", 2)]);
    await tick(0);
    expect(c.got.map((p) => p.t)).toEqual([1, 2]);
    expect(c.live.state()).toMatchObject({ status: "live", leader: false });
  });

  it("the new leader finishes a backfill the old one had not", async () => {
    const world = new World();
    const a = open(world);
    const b = open(world);
    a.live.subscribe(["dev1/t"], a.handlers);
    b.live.subscribe(["dev1/t"], b.handlers);
    await tick(0);
    world.net.lastWS().subscribed("c1");
    world.net.lastWS().receive({ type: "gap", from: NOW - 1000, to: NOW - 1, cursor: "c2" });
    await tick(0);
    const q1 = world.net.next("/query");
    expect(q1.tab).toBe(a.tab.id);
    a.tab.kill();
    await tick(0);
    const q2 = world.net.next("/query");
    expect(q2.tab).toBe(b.tab.id);
    expect(q2.params.get("from")).toBe(String(NOW - 1000));
    expect(b.live.state().stale).toBe(true);
    q2.respond(200, { series: [{ id: "dev1/t", step: 0, t: [NOW - 500], last: [7], avg: [7] }] });
    await tick(0);
    expect(b.got).toEqual([{ s: "dev1/t", t: NOW - 500, v: 7 }]);
    // The new WebSocket resumed after the gap.
    expect(world.net.lastWS().params.get("cursor")).toBe("c2");
  });

  it("a follower gets backfilled readings too, once", async () => {
    const world = new World();
    const a = open(world);
    const b = open(world);
    a.live.subscribe(["dev1/t"], a.handlers);
    b.live.subscribe(["dev1/t"], b.handlers);
    await tick(0);
    world.net.lastWS().subscribed("c1");
    world.net.lastWS().points("c2", [pt("dev1/t", NOW - 900, 1)]);
    world.net.lastWS().receive({ type: "gap", from: NOW - 800, to: NOW - 1, cursor: "c3" });
    await tick(0);
    world.net.next("/query").respond(200, {
      series: [{ id: "dev1/t", step: 0, t: [NOW - 900, NOW - 500], last: [1, 2], avg: [1, 2] }],
    });
    await tick(0);
    expect(b.got.map((p) => p.v)).toEqual([1, 2]);
    expect(b.live.state().stale).toBe(false);
  });

  it("asks for the hidden rate only when every tab is hidden", async () => {
    const world = new World();
    const a = open(world);
    const b = open(world);
    a.live.subscribe(["dev1/#"], a.handlers);
    b.live.subscribe(["dev2/#"], b.handlers);
    await tick(0);
    world.net.lastWS().subscribed("c1");
    const n = world.net.ws.length;
    a.tab.page.setHidden(true); // the leader's tab
    await tick(10_000);
    expect(world.net.ws).toHaveLength(n);
    b.tab.page.setHidden(true);
    await tick(2_000);
    expect(world.net.ws).toHaveLength(n + 1);
    expect(world.net.lastWS().params.get("rate")).toBe("1");
    world.net.lastWS().subscribed("c2");
    b.tab.page.setHidden(false);
    await tick(0);
    expect(world.net.ws).toHaveLength(n + 2);
    expect(world.net.lastWS().params.has("rate")).toBe(false);
    expect(world.net.lastWS().params.get("cursor")).toBe("c2");
  });

  it("a visible follower takes over from a leader that went silent (frozen)", async () => {
    const world = new World();
    const a = open(world);
    const b = open(world, { hidden: true });
    a.live.subscribe(["dev1/#"], a.handlers);
    b.live.subscribe(["dev1/#"], b.handlers);
    await tick(0);
    world.net.lastWS().subscribed("c1");
    world.net.lastWS().points("c2", [pt("dev1/t", 1)]);
    await tick(0);
    a.tab.freeze();
    await tick(3 * HB);
    // Hidden: marks stale, but waits.
    expect(b.live.state()).toMatchObject({ leader: false, stale: true });
    expect(leader(b)).toBe(false);
    b.tab.page.setHidden(false);
    await tick(0);
    expect(leader(b)).toBe(true);
    expect(world.locks.holder(`telegauge-live:${world.origin}`)).toBe(b.tab.id);
    expect(world.net.lastWS().tab).toBe(b.tab.id);
    expect(world.net.lastWS().params.get("cursor")).toBe("c2");
  });

  it("forgets a tab that vanished without a word, after a while", async () => {
    const world = new World();
    const a = open(world);
    const b = open(world);
    a.live.subscribe(["dev1/#"], a.handlers);
    b.live.subscribe(["dev2/#"], b.handlers);
    await tick(0);
    const ws = world.net.lastWS();
    ws.subscribed("c1");
    await tick(0);
    expect(wsPatterns(ws)).toEqual(["dev1/#", "dev2/#"]);
    b.tab.freeze();
    // Tabs announce themselves every 30 s; 150 s of silence is too long.
    for (let i = 0; i < 10; i++) {
      await tick(HB);
      ws.receive({ type: "heartbeat", t: 0, cursor: `h${i}` });
    }
    expect(wsPatterns(ws)).toEqual(["dev1/#", "dev2/#"]);
    for (let i = 0; i < 4; i++) {
      await tick(HB);
      ws.receive({ type: "heartbeat", t: 0, cursor: `i${i}` });
    }
    expect(wsPatterns(ws)).toEqual(["dev1/#"]);
  });

  it("without Web Locks (plain HTTP) still shares, electing over BroadcastChannel with leases", async () => {
    const world = new World();
    const a = open(world, { without: ["locks"] });
    a.live.subscribe(["dev1/#"], a.handlers);
    await tick(1_000);
    const b = open(world, { without: ["locks"] });
    b.live.subscribe(["dev2/#"], b.handlers);
    await tick(1_000);
    expect([leader(a), leader(b)]).toEqual([true, false]);
    expect(world.net.openWS()).toHaveLength(1);
    const ws = world.net.lastWS();
    ws.subscribed("c1");
    ws.points("c2", [pt("dev2/t", 1)]);
    await tick(0);
    expect(b.got).toHaveLength(1);
    // The leader crashes: its lease runs out (10 s) and b takes over.
    a.tab.kill();
    await tick(9_000);
    expect(leader(b)).toBe(false);
    await tick(5_000);
    expect(leader(b)).toBe(true);
    expect(world.net.lastWS().tab).toBe(b.tab.id);
    expect(world.net.lastWS().params.get("cursor")).toBe("c2");
  });

  it("without Web Locks hands over at once when the leader tab closes", async () => {
    const world = new World();
    const a = open(world, { without: ["locks"] });
    const b = open(world, { without: ["locks"] });
    a.live.subscribe(["dev1/#"], a.handlers);
    b.live.subscribe(["dev1/#"], b.handlers);
    await tick(1_000);
    expect(leader(a)).toBe(true);
    a.live.close();
    await tick(300);
    expect(leader(b)).toBe(true);
  });

  it("leaves no timers behind once every tab is closed", async () => {
    for (const without of [[], ["locks"]] as const) {
      const world = new World();
      const tabs = [open(world, { without: [...without] }), open(world, { without: [...without] })];
      for (const t of tabs) t.live.subscribe(["dev1/#"], t.handlers);
      await tick(1_000);
      world.net.lastWS().subscribed("c1");
      world.net.lastWS().receive({ type: "gap", from: Date.now() - 1000, to: Date.now() - 1, cursor: "c2" });
      await tick(0);
      for (const t of tabs) t.live.close();
      await tick(0);
      expect(vi.getTimerCount()).toBe(0);
      for (const t of tabs) expect(t.tab.page.listenerCount()).toBe(0);
    }
  });

  it("without BroadcastChannel each tab connects on its own", async () => {
    const world = new World();
    const a = open(world, { without: ["BroadcastChannel"] });
    const b = open(world, { without: ["BroadcastChannel"] });
    a.live.subscribe(["dev1/#"], a.handlers);
    b.live.subscribe(["dev1/#"], b.handlers);
    await tick(0);
    expect(world.net.ws).toHaveLength(2);
    expect(a.live.state().leader).toBe(true);
  });
});
