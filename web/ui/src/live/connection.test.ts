import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { Connection, connectionDefaults, type ConnectionConfig, type ConnState } from "./connection";
import type { ServerEvent } from "./protocol";
import { World, type TabOptions } from "./testkit";
import type { Transport } from "./types";

const HB = 15_000;

function setup(o: { transports?: Transport[]; tab?: TabOptions; world?: World; patterns?: string[]; cfg?: Partial<ConnectionConfig> } = {}) {
  const world = o.world ?? new World();
  const tab = world.tab(o.tab);
  const events: ServerEvent[] = [];
  const states: ConnState[] = [];
  const cfg: ConnectionConfig = {
    base: world.origin,
    transports: o.transports ?? ["ws", "sse", "longpoll", "poll"],
    heartbeatMs: HB,
    hiddenRate: 1,
    ...connectionDefaults(HB),
    ...o.cfg,
  };
  const conn = new Connection(tab.env, cfg, { event: (e) => void events.push(e), state: (s) => void states.push(s) }, {
    patterns: o.patterns ?? ["dev1/#"],
  });
  conn.start();
  return { world, tab, net: world.net, conn, events, states, cfg, last: () => conn.state() };
}

const tick = (ms: number) => vi.advanceTimersByTimeAsync(ms);
const pt = (t: number, v = t) => ({ s: "dev1/temp", t, v });

describe("Connection", () => {
  beforeEach(() => void vi.useFakeTimers({ now: 1_700_000_000_000 }));
  afterEach(() => void vi.useRealTimers());

  describe("negotiation", () => {
    it("tries WebSocket first and is live once the subscription is acknowledged", async () => {
      const { net, conn, last, events } = setup();
      const ws = net.lastWS();
      expect(ws.path).toBe("/api/v1/ws");
      expect(ws.params.getAll("series")).toEqual(["dev1/#"]);
      expect(ws.params.has("cursor")).toBe(false);
      expect(ws.params.has("rate")).toBe(false);
      expect(last()).toMatchObject({ status: "connecting", transport: "ws", stale: true });
      ws.subscribed("c1");
      expect(last()).toMatchObject({ status: "live", transport: "ws", stale: false, lastHeartbeat: Date.now() });
      expect(conn.cursor).toBe("c1");
      expect(events).toEqual([{ type: "subscribed", cursor: "c1" }]);
    });

    it("moves to SSE at once when the WebSocket upgrade fails, and remembers it", async () => {
      const { net, world, last } = setup();
      net.lastWS().drop();
      expect(net.es).toHaveLength(1);
      const es = net.lastES();
      expect(es.path).toBe("/api/v1/stream");
      es.subscribed("c1");
      expect(last()).toMatchObject({ status: "live", transport: "sse" });
      expect([...world.storage.map.values()].map((v) => JSON.parse(v).transport)).toEqual(["sse"]);
    });

    it("moves on when a WebSocket opens but says nothing", async () => {
      const { net } = setup();
      net.lastWS().accept();
      await tick(4_999);
      expect(net.es).toHaveLength(0);
      await tick(1);
      expect(net.lastWS().closedByClient).toBe(true);
      expect(net.es).toHaveLength(1);
    });

    it("moves on when the handshake does not complete in time", async () => {
      const { net } = setup();
      await tick(9_999);
      expect(net.es).toHaveLength(0);
      await tick(1);
      expect(net.es).toHaveLength(1);
    });

    it("treats an SSE stream that opens without a subscribed event as buffered, and long polls", async () => {
      const { net, last } = setup();
      net.lastWS().drop();
      const es = net.lastES();
      es.accept(); // headers through, body held back by a proxy
      await tick(4_999);
      expect(net.pending("/poll")).toHaveLength(0);
      await tick(1);
      expect(es.closedByClient).toBe(true);
      await tick(0);
      const first = net.next("/poll");
      expect(first.params.has("cursor")).toBe(false); // answered at once with the current cursor
      first.respond(200, { cursor: "c1", points: [], gap: null, reset: false });
      await tick(0);
      expect(last()).toMatchObject({ status: "live", transport: "longpoll" });
      const second = net.next("/poll");
      expect(second.params.get("cursor")).toBe("c1");
      expect(second.params.get("wait")).toBe("25s");
    });

    it("falls back to short polling, last", async () => {
      const { net, last } = setup({ transports: ["longpoll", "poll"] });
      await tick(0);
      net.next("/poll").fail();
      await tick(0);
      net.next("/poll").respond(200, { cursor: "c1", points: [], gap: null, reset: false });
      await tick(0);
      expect(last().transport).toBe("poll");
      expect(net.pending("/poll")).toHaveLength(0);
      await tick(999);
      expect(net.pending("/poll")).toHaveLength(0);
      await tick(1);
      const r = net.next("/poll");
      expect(r.params.get("wait")).toBe("0s");
      expect(r.params.get("cursor")).toBe("c1");
    });

    it("skips what the browser lacks", async () => {
      const { net } = setup({ tab: { without: ["WebSocket"] } });
      expect(net.ws).toHaveLength(0);
      expect(net.es).toHaveLength(1);
    });

    it("starts from the remembered transport, then re-probes from the top when the memory expires, resuming by cursor", async () => {
      const world = new World();
      const a = setup({ world });
      world.net.lastWS().drop();
      world.net.lastES().subscribed("c1");
      a.conn.stop();
      await tick(60_000);

      const b = setup({ world });
      expect(world.net.ws).toHaveLength(1); // no new WebSocket attempt
      const es = world.net.lastES();
      expect(es.closedByClient).toBe(false);
      es.subscribed("c2");
      // Still on SSE a while later (heartbeats keep it alive).
      for (let i = 0; i < 35; i++) {
        await tick(HB);
        es.emit("heartbeat", String(Date.now()), `h${i}`);
      }
      expect(world.net.ws).toHaveLength(1);
      // 10 minutes after SSE was chosen by the first page (60 s + 540 s).
      await tick(14_999);
      expect(es.closedByClient).toBe(false);
      await tick(1);
      expect(es.closedByClient).toBe(true);
      const ws = world.net.lastWS();
      expect(world.net.ws).toHaveLength(2);
      expect(ws.params.get("cursor")).toBe("h34");
      ws.subscribed("c3");
      expect(b.last()).toMatchObject({ status: "live", transport: "ws" });
      expect(world.storage.map.size).toBe(0);
      // The planned switch is not a reconnection.
      expect(b.last().reconnects).toBe(0);
    });

    it("falls back again when the re-probe fails, without losing its place", async () => {
      const world = new World();
      const { net, last } = setup({ world });
      net.lastWS().drop();
      const es = net.lastES();
      es.subscribed("c1");
      for (let i = 0; i < 40; i++) {
        await tick(HB);
        es.emit("heartbeat", "0", `h${i}`);
      }
      // The re-probe happened (10 min): WebSocket tried again, refused.
      expect(net.ws).toHaveLength(2);
      net.lastWS().drop();
      expect(net.es).toHaveLength(2);
      expect(net.lastES().params.get("cursor")).toBe("h38"); // h39 came after the switch
      net.lastES().subscribed("c2");
      expect(last()).toMatchObject({ status: "live", transport: "sse", reconnects: 0 });
    });

    it("falls back when a proven transport keeps dying young", async () => {
      const { net, last } = setup({ transports: ["ws", "sse"] });
      for (let i = 0; i < 3; i++) {
        net.lastWS().subscribed(`c${i}`);
        await tick(1_000);
        net.lastWS().drop();
        await tick(1_000); // retry delay (random 0.5: at most 2 s)
      }
      await tick(5_000);
      expect(net.ws).toHaveLength(3);
      expect(net.es).toHaveLength(1);
      expect(net.lastES().params.get("cursor")).toBe("c2");
      expect(last().reconnects).toBe(3);
    });
  });

  describe("watchdog and backoff", () => {
    it("declares a silent connection dead after two heartbeat intervals and resumes from the last cursor", async () => {
      const { net, last } = setup();
      const ws = net.lastWS();
      ws.subscribed("c1");
      await tick(10_000);
      ws.points("c2", [pt(1)]);
      await tick(HB * 1.5 - 1);
      expect(last().stale).toBe(false);
      await tick(1);
      // Stale before dead: a heartbeat is overdue.
      expect(last()).toMatchObject({ status: "live", stale: true });
      await tick(HB * 0.5 - 1);
      expect(ws.closedByClient).toBe(false);
      await tick(1);
      expect(ws.closedByClient).toBe(true);
      expect(last()).toMatchObject({ status: "reconnecting", stale: true, reconnects: 1 });
      // Full jitter with random 0.5: the first retry waits 500 ms.
      await tick(499);
      expect(net.ws).toHaveLength(1);
      await tick(1);
      expect(net.ws).toHaveLength(2);
      expect(net.lastWS().params.get("cursor")).toBe("c2");
    });

    it("watches SSE the same way: a stream that goes silent is reopened from its last id", async () => {
      const { net, last } = setup({ transports: ["sse"] });
      const es = net.lastES();
      es.subscribed("c1");
      await tick(HB);
      es.emit("heartbeat", String(Date.now()), "c2");
      await tick(2 * HB - 1);
      expect(es.closedByClient).toBe(false);
      await tick(1);
      expect(es.closedByClient).toBe(true);
      expect(last().status).toBe("reconnecting");
      await tick(500);
      expect(net.lastES().params.get("cursor")).toBe("c2");
    });

    it("watches short polls: a poll that hangs is abandoned and polling resumes from the cursor", async () => {
      const { net, last } = setup({ transports: ["poll"] });
      await tick(0);
      net.next("/poll").respond(200, { cursor: "c1", points: [], gap: null, reset: false });
      await tick(1_000);
      const hung = net.next("/poll");
      await tick(10_000);
      expect(hung.aborted).toBe(true);
      expect(last()).toMatchObject({ status: "reconnecting", stale: true });
      await tick(500);
      expect(net.next("/poll").params.get("cursor")).toBe("c1");
    });

    it("heartbeats keep a quiet connection alive", async () => {
      const { net, last } = setup();
      const ws = net.lastWS();
      ws.subscribed("c1");
      for (let i = 0; i < 20; i++) {
        await tick(HB);
        ws.receive({ type: "heartbeat", t: Date.now(), cursor: `c${i + 2}` });
      }
      expect(net.ws).toHaveLength(1);
      expect(last()).toMatchObject({ status: "live", stale: false });
    });

    it("backs off exponentially with full jitter, capped, and starts over after a healthy connection", async () => {
      const { world, net } = setup({ transports: ["ws"] });
      world.random = () => 0.999999;
      const waits: number[] = [];
      const measure = async () => {
        const n = net.ws.length;
        let waited = 0;
        while (net.ws.length === n) {
          await tick(1);
          waited++;
          if (waited > 40_000) throw new Error("no retry");
        }
        waits.push(waited);
      };
      net.lastWS().drop(); // the server is down
      for (let i = 0; i < 7; i++) {
        await measure();
        net.lastWS().drop();
      }
      await measure();
      expect(waits).toEqual([999, 1999, 3999, 7999, 15999, 29999, 29999, 29999]);
      // Up, and healthy for 30 s: the next loss retries quickly again.
      net.lastWS().subscribed("c1");
      for (let i = 0; i < 3; i++) {
        await tick(HB - 1);
        net.lastWS().receive({ type: "heartbeat", t: 0, cursor: "c1" });
      }
      net.lastWS().drop(1001);
      waits.length = 0;
      await measure();
      expect(waits).toEqual([999]);
    });

    it("does not reset the backoff for a connection that dies young", async () => {
      const { world, net } = setup({ transports: ["ws"] });
      world.random = () => 0.999999;
      net.lastWS().drop();
      await tick(999);
      net.lastWS().drop();
      await tick(1999);
      net.lastWS().subscribed("c1");
      await tick(5_000);
      net.lastWS().drop();
      await tick(3_998);
      expect(net.ws).toHaveLength(3);
      await tick(1);
      expect(net.ws).toHaveLength(4);
    });

    it("retries at once when the browser is back online, and shows offline meanwhile", async () => {
      const { world, net, tab, last } = setup({ transports: ["ws"] });
      world.random = () => 0.999999;
      net.lastWS().subscribed("c1");
      net.lastWS().points("c2", [pt(1)]);
      tab.page.setOnline(false);
      expect(net.lastWS().closedByClient).toBe(true);
      expect(last()).toMatchObject({ status: "offline", stale: true, reconnects: 1 });
      await tick(120_000);
      expect(net.ws).toHaveLength(1); // no attempts while offline
      tab.page.setOnline(true);
      expect(net.ws).toHaveLength(2);
      expect(net.lastWS().params.get("cursor")).toBe("c2");
      expect(last().status).toBe("reconnecting");
    });

    it("cuts a backoff wait short when the browser comes back online", async () => {
      const { world, net, tab } = setup({ transports: ["ws"] });
      world.random = () => 0.999999;
      for (let i = 0; i < 5; i++) {
        net.lastWS().drop();
        await tick(40_000);
      }
      net.lastWS().drop(); // now waiting up to 30 s
      const n = net.ws.length;
      await tick(1_000);
      expect(net.ws).toHaveLength(n);
      tab.page.fire("online");
      expect(net.ws).toHaveLength(n + 1);
    });

    it("abandons a long poll that outlives its wait", async () => {
      const { net, last } = setup({ transports: ["longpoll"] });
      await tick(0);
      net.next("/poll").respond(200, { cursor: "c1", points: [], gap: null, reset: false });
      await tick(0);
      const lp = net.next("/poll");
      await tick(25_000 + 10_000 - 1);
      expect(lp.aborted).toBe(false);
      await tick(1);
      expect(lp.aborted).toBe(true);
      expect(last().status).toBe("reconnecting");
    });
  });

  describe("hidden tabs", () => {
    it("reconnect at the hidden rate after a moment, and at full rate as soon as they are visible, by cursor", async () => {
      const { net, conn, last } = setup();
      net.lastWS().subscribed("c1");
      net.lastWS().points("c2", [pt(1)]);
      conn.setHidden(true);
      await tick(1_999);
      expect(net.ws).toHaveLength(1);
      await tick(1);
      expect(net.ws[0].closedByClient).toBe(true);
      const slow = net.lastWS();
      expect(slow.params.get("rate")).toBe("1");
      expect(slow.params.get("cursor")).toBe("c2");
      expect(last().status).toBe("live"); // a planned switch
      slow.subscribed("c3");
      conn.setHidden(false);
      expect(slow.closedByClient).toBe(true);
      const fast = net.lastWS();
      expect(fast.params.has("rate")).toBe(false);
      expect(fast.params.get("cursor")).toBe("c3");
      expect(last().reconnects).toBe(0);
    });

    it("are not delayed further by repeated reports of the same visibility", async () => {
      const { net, conn } = setup();
      net.lastWS().subscribed("c1");
      conn.setHidden(true);
      await tick(1_500);
      conn.setHidden(true);
      await tick(500);
      expect(net.lastWS().params.get("rate")).toBe("1");
    });

    it("do not reconnect for a quick look away", async () => {
      const { net, conn } = setup();
      net.lastWS().subscribed("c1");
      conn.setHidden(true);
      await tick(1_000);
      conn.setHidden(false);
      await tick(10_000);
      expect(net.ws).toHaveLength(1);
    });

    it("pace polls instead of reconnecting", async () => {
      const { net, conn } = setup({ transports: ["longpoll"] });
      await tick(0);
      net.next("/poll").respond(200, { cursor: "c1", points: [], gap: null, reset: false });
      await tick(0);
      conn.setHidden(true);
      await tick(2_000);
      const lp = net.next("/poll"); // the same poll, not reopened
      expect(net.requests).toHaveLength(2);
      lp.respond(200, { cursor: "c2", points: [pt(1)], gap: null, reset: false });
      await tick(999);
      expect(net.pending("/poll")).toHaveLength(0);
      await tick(1);
      expect(net.next("/poll").params.get("cursor")).toBe("c2");
    });
  });

  describe("subscription changes", () => {
    it("are sent in place on a WebSocket, with the cursor", async () => {
      const { net, conn } = setup();
      const ws = net.lastWS();
      ws.subscribed("c1");
      conn.setPatterns(["dev1/#", "+/pressure"]);
      expect(ws.sent).toEqual([{ type: "subscribe", series: ["+/pressure"], cursor: "c1" }]);
      conn.setPatterns(["+/pressure"]);
      expect(ws.sent[1]).toEqual({ type: "unsubscribe", series: ["dev1/#"] });
      expect(net.ws).toHaveLength(1);
    });

    it("reopen an SSE stream from the cursor", async () => {
      const { net, conn } = setup({ transports: ["sse"] });
      net.lastES().subscribed("c1");
      conn.setPatterns(["dev1/#", "dev2/#"]);
      expect(net.es[0].closedByClient).toBe(true);
      expect(net.lastES().params.getAll("series")).toEqual(["dev1/#", "dev2/#"]);
      expect(net.lastES().params.get("cursor")).toBe("c1");
    });

    it("connect when the first pattern arrives and disconnect when the last goes", async () => {
      const { net, conn } = setup({ patterns: [] });
      expect(net.ws).toHaveLength(0);
      conn.setPatterns(["a/b"]);
      expect(net.ws).toHaveLength(1);
      net.lastWS().subscribed("c1");
      conn.setPatterns([]);
      expect(net.lastWS().closedByClient).toBe(true);
      await tick(60_000);
      expect(net.ws).toHaveLength(1);
    });
  });

  it("starts over without a cursor the server refuses, and says reset", async () => {
    const { net, events } = setup({ transports: ["poll"] });
    await tick(0);
    net.next("/poll").respond(200, { cursor: "c1", points: [], gap: null, reset: false });
    await tick(1_000);
    net.next("/poll").respond(400, { error: "malformed cursor" });
    await tick(0);
    expect(events.map((e) => e.type)).toContain("reset");
    await tick(1_000);
    expect(net.next("/poll").params.has("cursor")).toBe(false);
  });

  it("passes on SSE events with their cursors", async () => {
    const { net, events, conn } = setup({ transports: ["sse"] });
    const es = net.lastES();
    es.subscribed("c1");
    es.points("c2", [pt(1)]);
    es.emit("presence", JSON.stringify({ device: "dev1", online: false, t: 5 }));
    es.emit("gap", JSON.stringify({ from: 1, to: 2, cursor: "c3" }), "c3");
    es.emit("reset", JSON.stringify({ cursor: "c4" }), "c4");
    es.emit("heartbeat", "123", "c5");
    expect(events.map((e) => e.type)).toEqual(["subscribed", "points", "presence", "gap", "reset", "heartbeat"]);
    expect(conn.cursor).toBe("c5");
    es.error();
    expect(es.closedByClient).toBe(true); // we reconnect, not EventSource
  });
});
