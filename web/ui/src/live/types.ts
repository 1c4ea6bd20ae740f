// Public types of the live-client library (src/live). The app imports only
// from "src/live" (index.ts), never from the library's internals.
//
// Contract with the server: web/PROTOCOL.md (DESIGN.md §4).

/** A live transport, in the order the library tries them. */
export type Transport = "ws" | "sse" | "longpoll" | "poll";

/** A reading: series "{device}/{metric}", reading time (Unix ms), value. */
export interface Point {
  s: string;
  t: number;
  v: number;
}

/** A device going online or offline. */
export interface Presence {
  device: string;
  online: boolean;
  t: number;
}

/** Connection status, for the connection badge. */
export type Status =
  | "connecting" // first connection attempt in progress
  | "live" // connected, data and heartbeats arriving
  | "reconnecting" // lost; retrying with backoff (data is stale)
  | "offline"; // the browser says it is offline (data is stale)

export interface ConnectionState {
  status: Status;
  /** Transport in use (or being tried), null before the first attempt. */
  transport: Transport | null;
  /** When the last heartbeat (or any message) arrived, Unix ms, or null. */
  lastHeartbeat: number | null;
  /** Latest publish-to-receive latency seen, ms (receive time minus the
   *  newest point's reading time), or null. */
  latencyMs: number | null;
  /** Reconnections since the page loaded. */
  reconnects: number;
  /** True when this tab holds the browser's shared connection. */
  leader: boolean;
  /** True while shown data may be missing recent readings: status is not
   *  "live", or the watchdog has not heard from the server in time. */
  stale: boolean;
}

/** What a subscriber is told. Every reading after the subscription began is
 *  delivered to points() exactly once, including readings the library
 *  backfilled from /api/v1/query after a gap. */
export interface Handlers {
  points(points: Point[]): void;
  /** History for this subscription must be reloaded (the server could not
   *  resume): clear and query it again; points() continues after. */
  reset?(): void;
  presence?(p: Presence): void;
}

export interface Subscription {
  /** Stop receiving; the connection drops the patterns nobody else uses. */
  close(): void;
}

export interface LiveOptions {
  /** Server base URL; default: the page's origin. */
  baseUrl?: string;
  /** Transports to try, in order; default ["ws", "sse", "longpoll", "poll"]. */
  transports?: Transport[];
  /** The server's heartbeat interval (serve --heartbeat), ms; default
   *  15000. The watchdog declares a connection dead after about twice that
   *  without any message. */
  heartbeatMs?: number;
  /** Frames per second asked for while every tab of this browser is
   *  hidden; default 1. Visible tabs get every frame. */
  hiddenRate?: number;
  /** Share one connection between this origin's tabs; default true. */
  shareAcrossTabs?: boolean;
}

/** The library's entry point: one per page. */
export interface Live {
  subscribe(patterns: string[], handlers: Handlers): Subscription;
  /** Current connection state. */
  state(): ConnectionState;
  /** Be told of every state change; returns an unsubscribe function. */
  onState(listener: (s: ConnectionState) => void): () => void;
  /** Close the connection (this tab's share of it). */
  close(): void;
}
