// The four transports. Each opens one connection and reports what it
// receives as ServerEvents to a sink; negotiation, the watchdog, backoff
// and resumption are the Connection's (connection.ts), so they are the same
// for all of them. A handle reports fail() at most once, and nothing at all
// after close().

import type { LiveEnv } from "./env";
import { apiUrl, parsePoll, parseSSE, parseWS, SSE_EVENTS, wsUrl, type ServerEvent } from "./protocol";
import type { Transport } from "./types";

export interface OpenParams {
  base: string;
  /** Server-side patterns (already compacted). */
  patterns: readonly string[];
  /** Resume after this cursor; null: start from now. */
  cursor: string | null;
  /** Frames per second to ask for; null: every frame. */
  rate: number | null;
  /** Long poll: how long the server may hold a poll, ms. */
  longPollWaitMs: number;
  /** Short poll: time between polls, ms (at least 1/rate s when hidden). */
  pollIntervalMs: number;
  /** Polls: how much longer than wait a request may take before it is
   *  abandoned, ms. */
  requestGraceMs: number;
}

export interface TransportSink {
  /** The transport's handshake completed (WebSocket open, SSE response
   *  headers): the stream should now flow. */
  opened(): void;
  event(ev: ServerEvent): void;
  /** The connection is over; status is the HTTP status when the server
   *  answered with an error the transport could see. */
  fail(reason: string, status?: number): void;
}

export interface TransportHandle {
  close(): void;
  /** Changes the subscription in place; false when the transport has to
   *  be reopened for it. */
  updatePatterns?(added: readonly string[], removed: readonly string[], cursor: string | null): boolean;
  /** Changes the frame rate in place; false when it has to be reopened. */
  setRate?(rate: number | null): boolean;
}

/** Whether this browser can use t at all. */
export function available(t: Transport, env: LiveEnv): boolean {
  if (t === "ws") return typeof env.WebSocket === "function";
  if (t === "sse") return typeof env.EventSource === "function";
  return typeof env.fetch === "function";
}

export function openTransport(t: Transport, env: LiveEnv, p: OpenParams, sink: TransportSink): TransportHandle {
  switch (t) {
    case "ws":
      return openWS(env, p, sink);
    case "sse":
      return openSSE(env, p, sink);
    case "longpoll":
      return openPoll(env, p, sink, true);
    case "poll":
      return openPoll(env, p, sink, false);
  }
}

function streamParams(p: OpenParams): Record<string, string | string[] | null> {
  return {
    series: [...p.patterns],
    cursor: p.cursor,
    rate: p.rate === null ? null : String(p.rate),
  };
}

// Reports fail() once, later (never from inside the open call).
function failLater(sink: TransportSink, reason: string): TransportHandle {
  let closed = false;
  queueMicrotask(() => {
    if (!closed) sink.fail(reason);
  });
  return { close: () => void (closed = true) };
}

function openWS(env: LiveEnv, p: OpenParams, sink: TransportSink): TransportHandle {
  const Ctor = env.WebSocket;
  if (!Ctor) return failLater(sink, "WebSocket unavailable");
  let ws: ReturnType<typeof construct>;
  const construct = () => new Ctor(wsUrl(apiUrl(p.base, "/ws", streamParams(p))));
  try {
    ws = construct();
  } catch (err) {
    return failLater(sink, `WebSocket: ${String(err)}`);
  }
  let done = false;
  const finish = () => {
    done = true;
    ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null;
  };
  ws.onopen = () => {
    if (!done) sink.opened();
  };
  ws.onmessage = (ev) => {
    if (done) return;
    const e = parseWS(ev.data);
    if (e) sink.event(e);
  };
  ws.onerror = () => {
    // A close event follows; browsers give no details here.
  };
  ws.onclose = (ev) => {
    if (done) return;
    finish();
    sink.fail(`WebSocket closed (${ev.code}${ev.reason ? ` ${ev.reason}` : ""})`);
  };
  return {
    close() {
      if (done) return;
      finish();
      try {
        ws.close(1000);
      } catch {
        // Already closing.
      }
    },
    updatePatterns(added, removed, cursor) {
      if (done || ws.readyState !== 1) return false;
      try {
        if (removed.length > 0) ws.send(JSON.stringify({ type: "unsubscribe", series: removed }));
        if (added.length > 0) {
          ws.send(JSON.stringify(cursor ? { type: "subscribe", series: added, cursor } : { type: "subscribe", series: added }));
        }
      } catch {
        return false;
      }
      return true;
    },
    setRate: () => false,
  };
}

function openSSE(env: LiveEnv, p: OpenParams, sink: TransportSink): TransportHandle {
  const Ctor = env.EventSource;
  if (!Ctor) return failLater(sink, "EventSource unavailable");
  let es: InstanceType<typeof Ctor>;
  try {
    es = new Ctor(apiUrl(p.base, "/stream", streamParams(p)), { withCredentials: false });
  } catch (err) {
    return failLater(sink, `EventSource: ${String(err)}`);
  }
  let done = false;
  const finish = () => {
    done = true;
    es.onopen = es.onmessage = es.onerror = null;
    // addEventListener handlers check done.
    try {
      es.close();
    } catch {
      // Ignore.
    }
  };
  const handle = (name: string) => (ev: { data: string; lastEventId?: string }) => {
    if (done) return;
    const e = parseSSE(name, String(ev.data ?? ""), ev.lastEventId);
    if (e) sink.event(e);
  };
  es.onopen = () => {
    if (!done) sink.opened();
  };
  es.onmessage = handle("");
  for (const name of SSE_EVENTS) es.addEventListener(name, handle(name));
  es.onerror = () => {
    if (done) return;
    // EventSource would reconnect by itself (with Last-Event-ID), but the
    // Connection reconnects instead, with backoff, the watchdog and
    // fallback; it resumes with the cursor parameter.
    finish();
    sink.fail("EventSource error");
  };
  return {
    close() {
      if (!done) finish();
    },
    setRate: () => false,
  };
}

function openPoll(env: LiveEnv, p: OpenParams, sink: TransportSink, long: boolean): TransportHandle {
  let cursor = p.cursor;
  let rate = p.rate;
  let done = false;
  let ctrl: AbortController | null = null;
  let sleeping: unknown = null;
  let wake: (() => void) | null = null;

  const sleep = (ms: number) =>
    new Promise<void>((resolve) => {
      wake = resolve;
      sleeping = env.timers.setTimeout(() => {
        sleeping = null;
        wake = null;
        resolve();
      }, ms);
    });

  const fail = (reason: string, status?: number) => {
    if (done) return;
    done = true;
    sink.fail(reason, status);
  };

  const pollOnce = async (wait: number): Promise<boolean> => {
    const url = apiUrl(p.base, "/poll", {
      series: [...p.patterns],
      cursor,
      wait: cursor ? `${Math.round(wait / 1000)}s` : null,
    });
    ctrl = typeof AbortController === "function" ? new AbortController() : null;
    const c = ctrl;
    const timer = env.timers.setTimeout(() => c?.abort(), wait + p.requestGraceMs);
    let body: unknown;
    try {
      const res = await env.fetch(url, {
        signal: c?.signal,
        headers: { Accept: "application/json" },
        credentials: "same-origin",
        cache: "no-store",
      });
      if (done) return false;
      if (!res.ok) {
        fail(`poll: HTTP ${res.status}`, res.status);
        return false;
      }
      body = await res.json();
    } catch (err) {
      fail(`poll: ${c?.signal.aborted ? "timed out" : String(err)}`);
      return false;
    } finally {
      env.timers.clearTimeout(timer);
    }
    if (done) return false;
    const ans = parsePoll(body);
    if (!ans) {
      fail("poll: malformed answer");
      return false;
    }
    cursor = ans.cursor;
    for (const e of ans.events) {
      if (done) return false;
      sink.event(e);
    }
    return !done;
  };

  const loop = async () => {
    // The first poll answers at once (no cursor yet, or wait=0): it proves
    // the transport without waiting for readings.
    if (!(await pollOnce(0))) return;
    for (;;) {
      const wait = long ? p.longPollWaitMs : 0;
      const paced = rate ? 1000 / rate : 0;
      const delay = long ? paced : Math.max(p.pollIntervalMs, paced);
      if (delay > 0) {
        await sleep(delay);
        if (done) return;
      }
      if (!(await pollOnce(wait))) return;
    }
  };

  queueMicrotask(() => {
    if (!done) void loop();
  });

  return {
    close() {
      if (done) return;
      done = true;
      ctrl?.abort();
      if (sleeping !== null) env.timers.clearTimeout(sleeping);
      wake?.();
    },
    setRate(r) {
      rate = r;
      return true;
    },
  };
}
