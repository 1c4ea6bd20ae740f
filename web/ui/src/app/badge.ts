// The connection badge (header, every view) and the stale banner.

import type { ConnectionState, Live, Transport } from "../live";
import { h, setAttr, setText } from "./dom";
import * as fmt from "./format";

const TRANSPORT: Record<Transport, string> = { ws: "WebSocket", sse: "SSE", longpoll: "Long poll", poll: "Short poll" };
const STATUS: Record<ConnectionState["status"], string> = {
  connecting: "Connecting",
  live: "Live",
  reconnecting: "Reconnecting",
  offline: "Offline",
};

/** A <details> badge: status, transport and latency at a glance; heartbeat
 *  age, reconnects and leader/follower when opened. */
export function connectionBadge(live: Live): { el: HTMLElement; destroy(): void } {
  const dot = h("span", { class: "badge-dot", "aria-hidden": "true" });
  const summaryText = h("span", { class: "badge-text" });
  const latency = h("span", { class: "badge-latency" });
  const dd = {
    status: h("dd", { "data-testid": "conn-status" }),
    transport: h("dd", { "data-testid": "conn-transport" }),
    latency: h("dd", { "data-testid": "conn-latency" }),
    heartbeat: h("dd", { "data-testid": "conn-heartbeat" }),
    reconnects: h("dd", { "data-testid": "conn-reconnects" }),
    role: h("dd", { "data-testid": "conn-role" }),
  };
  const summary = h("summary", { class: "badge-summary", "aria-label": "Connection" }, dot, summaryText, latency);
  const el = h(
    "details",
    { class: "badge", "data-testid": "conn-badge" },
    summary,
    h(
      "dl",
      { class: "badge-details" },
      h("dt", null, "Status"),
      dd.status,
      h("dt", null, "Transport"),
      dd.transport,
      h("dt", null, "Latency"),
      dd.latency,
      h("dt", null, "Last heartbeat"),
      dd.heartbeat,
      h("dt", null, "Reconnects"),
      dd.reconnects,
      h("dt", null, "This tab"),
      dd.role,
    ),
  );
  // Close when focus or a click goes elsewhere.
  document.addEventListener("click", (e) => {
    if (el.open && !el.contains(e.target as Node)) el.open = false;
  });
  el.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && el.open) {
      el.open = false;
      summary.focus();
    }
  });

  const render = () => {
    const s = live.state();
    const tr = s.transport ? TRANSPORT[s.transport] : "—";
    el.dataset.status = s.status;
    el.dataset.transport = s.transport ?? "";
    el.dataset.stale = String(s.stale);
    el.dataset.leader = String(s.leader);
    setText(summaryText, s.status === "live" && !s.stale ? tr : `${STATUS[s.status]}${s.transport ? ` · ${tr}` : ""}`);
    setText(latency, s.latencyMs != null && s.status === "live" ? fmt.duration(s.latencyMs) : "");
    setText(dd.status, `${STATUS[s.status]}${s.stale ? " (stale)" : ""}`);
    setText(dd.transport, tr);
    setText(dd.latency, s.latencyMs != null ? fmt.duration(s.latencyMs) : "—");
    setText(dd.heartbeat, s.lastHeartbeat ? fmt.ago(s.lastHeartbeat) : "—");
    setText(dd.reconnects, String(s.reconnects));
    setText(dd.role, s.leader ? "Leader (holds the connection)" : "Follower (shares another tab's connection)");
    setAttr(
      summary,
      "aria-label",
      `Connection: ${STATUS[s.status]}${s.stale ? ", data stale" : ""}, ${tr}${s.latencyMs != null ? `, latency ${fmt.duration(s.latencyMs)}` : ""}. Show details.`,
    );
  };
  const off = live.onState(render);
  const timer = window.setInterval(render, 1000);
  render();
  return {
    el,
    destroy() {
      off();
      clearInterval(timer);
    },
  };
}

/** How long the very first connection attempt may take before the page
 *  shows it as stale. */
export const CONNECT_GRACE_MS = 1500;

/** The "stale — reconnecting" banner, shown while state.stale is true; it
 *  also sets data-stale on root so that CSS dims the charts. */
export function staleBanner(live: Live, root: HTMLElement): { el: HTMLElement; destroy(): void } {
  const text = h("span");
  const el = h("div", { class: "stale-banner", role: "status", "aria-live": "polite", "data-testid": "stale-banner", hidden: true }, text);
  const loadedAt = Date.now();
  const render = () => {
    const s = live.state();
    // The first connection gets a moment before it counts as stale, so a
    // normal page load does not flash the banner.
    const stale = s.stale && !(s.status === "connecting" && s.reconnects === 0 && Date.now() - loadedAt < CONNECT_GRACE_MS);
    el.hidden = !stale;
    root.dataset.stale = String(stale);
    if (!stale) return;
    const what = s.status === "offline" ? "Stale — offline, waiting for the network" : s.status === "connecting" ? "Stale — connecting" : "Stale — reconnecting";
    const age = s.lastHeartbeat ? ` (last heard from the server ${fmt.ago(s.lastHeartbeat)})` : "";
    setText(text, `${what}…${age} Charts may be missing recent readings.`);
  };
  const off = live.onState(render);
  const timer = window.setInterval(render, 1000);
  render();
  return {
    el,
    destroy() {
      off();
      clearInterval(timer);
    },
  };
}
