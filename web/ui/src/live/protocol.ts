// The wire protocol (web/PROTOCOL.md), normalized: every transport turns
// what it receives into ServerEvents, so that everything above the
// transports is the same for all four.

import type { Point, Presence } from "./types";

export type ServerEvent =
  | { type: "subscribed"; cursor: string | null }
  | { type: "points"; cursor: string | null; points: Point[] }
  /** A heartbeat, or (polling) an answer without readings: the server is
   *  alive up to cursor. */
  | { type: "heartbeat"; cursor: string | null; t: number | null }
  | { type: "presence"; presence: Presence }
  | { type: "gap"; cursor: string | null; from: number; to: number }
  | { type: "reset"; cursor: string | null }
  | { type: "error"; message: string };

export const API = "/api/v1";

/** base + path + query; repeated keys for arrays. */
export function apiUrl(base: string, path: string, params: Record<string, string | number | string[] | null | undefined>): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v === null || v === undefined) continue;
    if (Array.isArray(v)) for (const x of v) q.append(k, x);
    else q.append(k, String(v));
  }
  const s = q.toString();
  return `${base.replace(/\/+$/, "")}${API}${path}${s ? `?${s}` : ""}`;
}

/** The same URL with the ws: or wss: scheme. */
export function wsUrl(httpUrl: string): string {
  return httpUrl.replace(/^http(s?):/i, (_m, s: string) => `ws${s}:`);
}

const isObj = (x: unknown): x is Record<string, unknown> => typeof x === "object" && x !== null && !Array.isArray(x);
const str = (x: unknown): string | null => (typeof x === "string" && x !== "" ? x : null);
const num = (x: unknown): number | null => (typeof x === "number" && Number.isFinite(x) ? x : null);

export function parsePoints(x: unknown): Point[] {
  if (!Array.isArray(x)) return [];
  const out: Point[] = [];
  for (const p of x) {
    if (isObj(p) && typeof p.s === "string" && num(p.t) !== null && num(p.v) !== null) {
      out.push({ s: p.s, t: p.t as number, v: p.v as number });
    }
  }
  return out;
}

export function parsePresence(x: unknown): Presence | null {
  if (!isObj(x) || typeof x.device !== "string" || typeof x.online !== "boolean") return null;
  return { device: x.device, online: x.online, t: num(x.t) ?? 0 };
}

function parseGap(x: unknown, cursor: string | null): ServerEvent | null {
  if (!isObj(x)) return null;
  const from = num(x.from);
  const to = num(x.to);
  if (from === null || to === null) return null;
  return { type: "gap", from, to, cursor: str(x.cursor) ?? cursor };
}

function json(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** A WebSocket message, or null when it is not one we know. */
export function parseWS(data: unknown): ServerEvent | null {
  const m = json(typeof data === "string" ? data : String(data));
  if (!isObj(m)) return null;
  const cursor = str(m.cursor);
  switch (m.type) {
    case "subscribed":
      return { type: "subscribed", cursor };
    case "points":
      return { type: "points", cursor, points: parsePoints(m.points) };
    case "heartbeat":
      return { type: "heartbeat", cursor, t: num(m.t) };
    case "presence": {
      const p = parsePresence(m);
      return p && { type: "presence", presence: p };
    }
    case "gap":
      return parseGap(m, cursor);
    case "reset":
      return { type: "reset", cursor };
    case "error":
      return { type: "error", message: typeof m.message === "string" ? m.message : "error" };
  }
  return null;
}

/** An SSE event (name "" or "message" for data frames), or null. */
export function parseSSE(name: string, data: string, lastEventId: string | undefined): ServerEvent | null {
  const id = str(lastEventId);
  switch (name) {
    case "":
    case "message": {
      const m = json(data);
      if (!isObj(m)) return null;
      return { type: "points", cursor: str(m.cursor) ?? id, points: parsePoints(m.points) };
    }
    case "subscribed": {
      const m = json(data);
      return { type: "subscribed", cursor: (isObj(m) ? str(m.cursor) : null) ?? id };
    }
    case "heartbeat": {
      const t = Number(data);
      return { type: "heartbeat", cursor: id, t: data !== "" && Number.isFinite(t) ? t : null };
    }
    case "presence": {
      const p = parsePresence(json(data));
      return p && { type: "presence", presence: p };
    }
    case "gap":
      return parseGap(json(data), id);
    case "reset": {
      const m = json(data);
      return { type: "reset", cursor: (isObj(m) ? str(m.cursor) : null) ?? id };
    }
  }
  return null;
}

/** The SSE event names the library listens to (besides data frames). */
export const SSE_EVENTS = ["subscribed", "heartbeat", "presence", "gap", "reset"] as const;

/** A poll answer as events, in the order they apply: reset (reload what
 *  came before), gap (backfill a range), the readings that follow, and the
 *  cursor to poll from next. Null when the answer is malformed. */
export function parsePoll(body: unknown): { cursor: string; events: ServerEvent[] } | null {
  if (!isObj(body)) return null;
  const cursor = str(body.cursor);
  if (!cursor) return null;
  const events: ServerEvent[] = [];
  if (body.reset === true) events.push({ type: "reset", cursor });
  if (body.gap) {
    const g = parseGap(body.gap, cursor);
    if (g) events.push(g);
  }
  const points = parsePoints(body.points);
  if (points.length > 0) events.push({ type: "points", cursor, points });
  events.push({ type: "heartbeat", cursor, t: null });
  return { cursor, events };
}
