// TEMPORARY SHIM — DELETE when src/live/index.ts exists, and import
// createLive from "../live" in app.ts instead.
//
// A minimal stand-in for the live-client library so that the app can be
// developed and looked at before the library lands: one EventSource per
// subscription, no resume, no fallback, no tab sharing. It follows the
// types of src/live/types.ts and nothing else in the app depends on it.

import type { ConnectionState, Handlers, Live, LiveOptions, Subscription } from "../live/types";

export function createLive(opts: LiveOptions = {}): Live {
  const base = (opts.baseUrl ?? "").replace(/\/$/, "");
  const heartbeatMs = opts.heartbeatMs ?? 15_000;
  const listeners = new Set<(s: ConnectionState) => void>();
  let st: ConnectionState = { status: "connecting", transport: "sse", lastHeartbeat: null, latencyMs: null, reconnects: 0, leader: true, stale: true };
  const sources = new Set<EventSource>();
  const set = (p: Partial<ConnectionState>) => {
    st = { ...st, ...p };
    st.stale = st.status !== "live";
    for (const l of listeners) l(st);
  };
  const watchdog = window.setInterval(() => {
    if (st.status === "live" && st.lastHeartbeat && Date.now() - st.lastHeartbeat > 2 * heartbeatMs) set({ status: "reconnecting" });
  }, 1000);
  return {
    subscribe(patterns: string[], h: Handlers): Subscription {
      const q = new URLSearchParams();
      for (const p of patterns) q.append("series", p);
      const es = new EventSource(`${base}/api/v1/stream?${q}`);
      sources.add(es);
      let opened = false;
      es.onopen = () => {
        if (opened) set({ reconnects: st.reconnects + 1 });
        opened = true;
        set({ status: "live", lastHeartbeat: Date.now() });
      };
      es.onerror = () => set({ status: navigator.onLine ? "reconnecting" : "offline" });
      es.onmessage = (e) => {
        const m = JSON.parse(e.data) as { points: { s: string; t: number; v: number }[] };
        const now = Date.now();
        let newest = 0;
        for (const p of m.points) newest = Math.max(newest, p.t);
        set({ status: "live", lastHeartbeat: now, latencyMs: newest ? Math.max(0, now - newest) : st.latencyMs });
        h.points(m.points);
      };
      es.addEventListener("heartbeat", () => set({ status: "live", lastHeartbeat: Date.now() }));
      es.addEventListener("presence", (e) => h.presence?.(JSON.parse((e as MessageEvent).data)));
      es.addEventListener("reset", () => h.reset?.());
      return {
        close() {
          es.close();
          sources.delete(es);
        },
      };
    },
    state: () => st,
    onState(l) {
      listeners.add(l);
      return () => listeners.delete(l);
    },
    close() {
      clearInterval(watchdog);
      for (const es of sources) es.close();
      sources.clear();
    },
  };
}
