import { describe, expect, it } from "vitest";
import { apiUrl, parsePoll, parseSSE, parseWS, wsUrl } from "./protocol";

describe("protocol", () => {
  it("builds URLs with repeated series parameters", () => {
    const u = apiUrl("https://h.example/", "/stream", { series: ["a/#", "+/t"], cursor: null, rate: "1" });
    expect(u).toBe("https://h.example/api/v1/stream?series=a%2F%23&series=%2B%2Ft&rate=1");
    expect(wsUrl("https://h/api/v1/ws")).toBe("wss://h/api/v1/ws");
    expect(wsUrl("http://h/api/v1/ws")).toBe("ws://h/api/v1/ws");
  });

  it("parses WebSocket messages", () => {
    expect(parseWS(JSON.stringify({ type: "subscribed", series: ["a/#"], cursor: "c1" }))).toEqual({ type: "subscribed", cursor: "c1" });
    expect(parseWS(JSON.stringify({ type: "points", cursor: "c2", points: [{ s: "a/x", t: 1, v: 2 }, { s: "bad" }] }))).toEqual({
      type: "points",
      cursor: "c2",
      points: [{ s: "a/x", t: 1, v: 2 }],
    });
    expect(parseWS(JSON.stringify({ type: "heartbeat", t: 5, cursor: "c3" }))).toEqual({ type: "heartbeat", t: 5, cursor: "c3" });
    expect(parseWS(JSON.stringify({ type: "gap", from: 1, to: 2, cursor: "c4" }))).toEqual({ type: "gap", from: 1, to: 2, cursor: "c4" });
    expect(parseWS(JSON.stringify({ type: "presence", device: "d", online: false, t: 9 }))).toEqual({
      type: "presence",
      presence: { device: "d", online: false, t: 9 },
    });
    expect(parseWS(JSON.stringify({ type: "reset", cursor: "c5" }))).toEqual({ type: "reset", cursor: "c5" });
    expect(parseWS("not json")).toBeNull();
    expect(parseWS(JSON.stringify({ type: "mystery" }))).toBeNull();
  });

  it("parses SSE events, taking the cursor from id: when data has none", () => {
    expect(parseSSE("", JSON.stringify({ cursor: "c1", points: [{ s: "a/x", t: 1, v: 1 }] }), "c1")).toMatchObject({ type: "points", cursor: "c1" });
    expect(parseSSE("heartbeat", "1700000015000", "c2")).toEqual({ type: "heartbeat", cursor: "c2", t: 1700000015000 });
    expect(parseSSE("gap", JSON.stringify({ from: 1, to: 2 }), "c3")).toEqual({ type: "gap", from: 1, to: 2, cursor: "c3" });
    expect(parseSSE("reset", JSON.stringify({ cursor: "c4" }), "c4")).toEqual({ type: "reset", cursor: "c4" });
    expect(parseSSE("subscribed", JSON.stringify({ series: [], cursor: "c0" }), "c0")).toEqual({ type: "subscribed", cursor: "c0" });
  });

  it("orders a poll answer: reset, gap, points, then the cursor", () => {
    const a = parsePoll({ cursor: "c9", points: [{ s: "a/x", t: 1, v: 1 }], gap: { from: 1, to: 2, cursor: "c9" }, reset: true });
    expect(a?.events.map((e) => e.type)).toEqual(["reset", "gap", "points", "heartbeat"]);
    expect(parsePoll({ cursor: "c1", points: [], gap: null, reset: false })?.events.map((e) => e.type)).toEqual(["heartbeat"]);
    expect(parsePoll({})).toBeNull();
  });
});
