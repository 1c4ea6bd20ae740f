// Fleet view: every device with status, last seen, rate, rejected count and
// a sparkline of its first metric over the last 5 minutes; search and sort;
// a table on wide screens, cards on phones.

import { query, type Device } from "../api";
import { h, setAttr, setText } from "../dom";
import * as fmt from "../format";
import { href, replaceParams, type Route } from "../router";
import { drawSparkline, type SparkData } from "../sparkline";
import { onThemeChange } from "../theme";
import type { Ctx, View } from "./view";

type SortKey = "id" | "status" | "lastSeen" | "rate" | "rejected";
const SORTS: { key: SortKey; label: string; desc: boolean }[] = [
  { key: "id", label: "Device", desc: false },
  { key: "status", label: "Status", desc: false },
  { key: "lastSeen", label: "Last seen", desc: true },
  { key: "rate", label: "Readings/s", desc: true },
  { key: "rejected", label: "Rejected", desc: true },
];

/** The sparkline window and how often visible sparklines are refreshed. */
const SPARK_SPAN_MS = 5 * 60_000;
const SPARK_REFRESH_MS = 10_000;
const SPARK_POINTS = 60;

interface Row {
  tr: HTMLTableRowElement;
  dot: HTMLElement;
  status: HTMLElement;
  seen: HTMLElement;
  rate: HTMLElement;
  rejected: HTMLElement;
  metrics: HTMLElement;
  canvas: HTMLCanvasElement;
  device: Device;
  visible: boolean;
  spark: SparkData | null;
  sparkSeries: string | null;
  sparkAt: number;
}

export function fleetView(ctx: Ctx, route: Extract<Route, { view: "fleet" }>): View {
  let params = new URLSearchParams(route.params);
  let sortKey: SortKey = (SORTS.find((s) => s.key === params.get("sort"))?.key ?? "id") as SortKey;
  let desc = params.has("dir") ? params.get("dir") === "desc" : SORTS.find((s) => s.key === sortKey)!.desc;
  let filter = params.get("q") ?? "";

  const rows = new Map<string, Row>();
  const search = h("input", {
    type: "search",
    class: "search",
    placeholder: "Search devices and metrics",
    "aria-label": "Search devices and metrics",
    "data-testid": "fleet-search",
    value: filter,
  });
  const sortSel = h(
    "select",
    { "aria-label": "Sort by", "data-testid": "fleet-sort" },
    ...SORTS.map((s) => h("option", { value: s.key }, s.label)),
  );
  sortSel.value = sortKey;
  const dirBtn = h("button", { type: "button", class: "btn", "data-testid": "fleet-sort-dir" });
  const count = h("span", { class: "muted", "data-testid": "fleet-count", "aria-live": "polite" });
  const headButtons = new Map<SortKey, HTMLButtonElement>();
  const ths = SORTS.map((s) => {
    const b = h("button", { type: "button", class: "th-sort", onclick: () => setSort(s.key, sortKey === s.key ? !desc : s.desc) }, s.label);
    headButtons.set(s.key, b);
    return h("th", { scope: "col", "data-key": s.key }, b);
  });
  const tbody = h("tbody");
  const empty = h("p", { class: "notice", hidden: true, "data-testid": "fleet-empty" });
  const table = h(
    "table",
    { class: "fleet-table", "data-testid": "fleet-table" },
    h("caption", { class: "sr-only" }, "Devices"),
    h("thead", null, h("tr", null, ...ths, h("th", { scope: "col" }, "Last 5 min"))),
    tbody,
  );
  const el = h(
    "section",
    { class: "view fleet-view", "aria-labelledby": "view-h" },
    h("div", { class: "view-head" }, h("h1", { id: "view-h", tabindex: -1 }, "Fleet"), count),
    h("div", { class: "toolbar" }, search, h("div", { class: "sort-group" }, h("label", { class: "muted" }, "Sort", sortSel), dirBtn)),
    h("div", { class: "table-wrap" }, table),
    empty,
  );

  const saveParams = () => {
    const q = new URLSearchParams();
    if (filter) q.set("q", filter);
    if (sortKey !== "id") q.set("sort", sortKey);
    if (desc !== SORTS.find((s) => s.key === sortKey)!.desc) q.set("dir", desc ? "desc" : "asc");
    params = q;
    replaceParams(q);
  };

  function setSort(k: SortKey, d: boolean): void {
    sortKey = k;
    desc = d;
    sortSel.value = k;
    saveParams();
    render();
  }
  sortSel.addEventListener("change", () => setSort(sortSel.value as SortKey, SORTS.find((s) => s.key === sortSel.value)!.desc));
  dirBtn.addEventListener("click", () => setSort(sortKey, !desc));
  search.addEventListener("input", () => {
    filter = search.value;
    saveParams();
    render();
  });

  // Sparklines are fetched for rows on screen only.
  const io = new IntersectionObserver(
    (entries) => {
      let any = false;
      for (const e of entries) {
        const id = (e.target as HTMLElement).dataset.device!;
        const r = rows.get(id);
        if (!r) continue;
        r.visible = e.isIntersecting;
        if (r.visible) {
          any = true;
          paintSpark(r);
        }
      }
      if (any) scheduleSpark(150);
    },
    { rootMargin: "200px 0px" },
  );

  const makeRow = (d: Device): Row => {
    const dot = h("span", { class: "dot", "aria-hidden": "true" });
    const link = h("a", { href: href.device(d.id), class: "row-link", "data-testid": "device-link" }, d.id);
    const status = h("span", { class: "status-text" });
    const seen = h("span");
    const rate = h("span");
    const rejected = h("span");
    const metrics = h("span", { class: "metrics muted" });
    const canvas = h("canvas", { class: "spark", "aria-hidden": "true" });
    const tr = h(
      "tr",
      { "data-testid": "device-row", "data-device": d.id },
      h("td", { class: "c-id" }, dot, h("span", { class: "id-wrap" }, link, metrics)),
      h("td", { class: "c-status", "data-label": "Status" }, status),
      h("td", { class: "c-seen", "data-label": "Last seen" }, seen),
      h("td", { class: "c-rate num", "data-label": "Readings/s" }, rate),
      h("td", { class: "c-rej num", "data-label": "Rejected" }, rejected),
      h("td", { class: "c-spark" }, canvas),
    );
    const r: Row = { tr, dot, status, seen, rate, rejected, metrics, canvas, device: d, visible: false, spark: null, sparkSeries: null, sparkAt: 0 };
    io.observe(tr);
    return r;
  };

  const fillRow = (r: Row, now: number) => {
    const d = r.device;
    r.tr.dataset.online = String(d.online);
    r.dot.className = d.online ? "dot on" : "dot";
    setText(r.status, d.online ? "online" : "offline");
    setText(r.seen, fmt.ago(d.lastSeen, now));
    setText(r.rate, fmt.rate(d.rate));
    setText(r.rejected, String(d.rejected));
    const reasons = Object.entries(d.rejectedByReason ?? {})
      .filter(([, n]) => n > 0)
      .map(([k, n]) => `${k}: ${n}`)
      .join(", ");
    setAttr(r.rejected, "title", reasons || null);
    r.tr.classList.toggle("has-rejects", d.rejected > 0);
    setText(r.metrics, d.metrics.length ? d.metrics.join(", ") : "no metrics yet");
  };

  const matchesFilter = (d: Device, f: string) => !f || d.id.toLowerCase().includes(f) || d.metrics.some((m) => m.toLowerCase().includes(f));

  const compare = (a: Device, b: Device): number => {
    let c = 0;
    switch (sortKey) {
      case "id":
        c = a.id.localeCompare(b.id, undefined, { numeric: true });
        break;
      case "status":
        c = Number(b.online) - Number(a.online);
        break;
      case "lastSeen":
        c = a.lastSeen - b.lastSeen;
        break;
      case "rate":
        c = a.rate - b.rate;
        break;
      case "rejected":
        c = a.rejected - b.rejected;
        break;
    }
    if (desc) c = -c;
    return c || a.id.localeCompare(b.id, undefined, { numeric: true });
  };

  function render(): void {
    const devices = ctx.fleet.devices;
    const now = Date.now();
    const seen = new Set<string>();
    for (const d of devices) {
      seen.add(d.id);
      let r = rows.get(d.id);
      if (!r) {
        r = makeRow(d);
        rows.set(d.id, r);
      }
      r.device = d;
      fillRow(r, now);
    }
    for (const [id, r] of rows) {
      if (!seen.has(id)) {
        io.unobserve(r.tr);
        r.tr.remove();
        rows.delete(id);
      }
    }
    const f = filter.trim().toLowerCase();
    const shown = devices.filter((d) => matchesFilter(d, f)).sort(compare);
    const order = shown.map((d) => rows.get(d.id)!.tr);
    const current = [...tbody.children];
    if (current.length !== order.length || current.some((c, i) => c !== order[i])) {
      const active = document.activeElement as HTMLElement | null;
      tbody.replaceChildren(...order);
      if (active && active !== document.activeElement && active.isConnected) active.focus({ preventScroll: true });
    }
    for (const s of SORTS) {
      const th = headButtons.get(s.key)!.parentElement!;
      setAttr(th, "aria-sort", s.key === sortKey ? (desc ? "descending" : "ascending") : null);
    }
    setText(dirBtn, desc ? "↓ Desc" : "↑ Asc");
    setAttr(dirBtn, "aria-label", `Sort direction: ${desc ? "descending" : "ascending"}. Reverse.`);
    const online = devices.filter((d) => d.online).length;
    setText(count, `${devices.length} device${devices.length === 1 ? "" : "s"}, ${online} online${f ? ` · ${shown.length} shown` : ""}`);
    empty.hidden = devices.length > 0 && shown.length > 0;
    table.hidden = devices.length === 0;
    if (!ctx.fleet.loaded) setText(empty, ctx.fleet.error ? `Cannot load devices: ${ctx.fleet.error}` : "Loading devices…");
    else if (!devices.length) setText(empty, "No devices yet: publish to telemetry/{device} over MQTT.");
    else if (!shown.length) setText(empty, `No device or metric matches “${filter.trim()}”.`);
    scheduleSpark(300);
  }

  // --- sparklines -------------------------------------------------------
  let sparkTimer = 0;
  let sparkBusy = false;
  function scheduleSpark(delay: number): void {
    if (sparkTimer) return;
    sparkTimer = window.setTimeout(() => {
      sparkTimer = 0;
      void refreshSparks();
    }, delay);
  }

  async function refreshSparks(): Promise<void> {
    if (sparkBusy || destroyed) return;
    const now = Date.now();
    const due = [...rows.values()].filter(
      (r) => r.visible && r.tr.isConnected && r.device.metrics.length && (now - r.sparkAt > SPARK_REFRESH_MS || r.sparkSeries !== `${r.device.id}/${r.device.metrics[0]}`),
    );
    if (!due.length) return;
    sparkBusy = true;
    const series = due.map((r) => `${r.device.id}/${r.device.metrics[0]}`);
    for (const r of due) r.sparkAt = now;
    try {
      const data = await query({ series, from: `-${SPARK_SPAN_MS / 1000}s`, maxPoints: SPARK_POINTS });
      const byId = new Map(data.map((d) => [d.id, d]));
      for (const r of due) {
        const id = `${r.device.id}/${r.device.metrics[0]}`;
        const d = byId.get(id);
        r.sparkSeries = id;
        r.spark = d ? { t: d.t, v: d.avg, min: d.min, max: d.max } : null;
        paintSpark(r);
      }
    } catch {
      // Unknown series (404) or server trouble: keep the old lines; retried on the next round.
    } finally {
      sparkBusy = false;
    }
  }

  function paintSpark(r: Row): void {
    const now = Date.now();
    drawSparkline(r.canvas, r.spark, now - SPARK_SPAN_MS, now, !r.device.online);
  }

  let destroyed = false;
  const offFleet = ctx.fleet.subscribe(() => render());
  const tick = window.setInterval(() => {
    const now = Date.now();
    for (const r of rows.values()) setText(r.seen, fmt.ago(r.device.lastSeen, now));
  }, 1000);
  const sparkTick = window.setInterval(() => !document.hidden && void refreshSparks(), SPARK_REFRESH_MS);
  const offTheme = onThemeChange(() => rows.forEach((r) => r.visible && paintSpark(r)));
  render();

  return {
    el,
    title: "Fleet · Telegauge",
    update(r) {
      if (r.view !== "fleet") return false;
      const q = r.params.get("q") ?? "";
      if (q !== filter) {
        filter = q;
        search.value = q;
      }
      const k = SORTS.find((s) => s.key === r.params.get("sort"))?.key ?? "id";
      sortKey = k;
      sortSel.value = k;
      desc = r.params.has("dir") ? r.params.get("dir") === "desc" : SORTS.find((s) => s.key === k)!.desc;
      render();
      return true;
    },
    info: () => ({ view: "fleet", filter, sort: sortKey, desc, shown: tbody.children.length, sparklines: [...rows.values()].filter((r) => r.spark).length, params: String(params) }),
    destroy() {
      destroyed = true;
      offFleet();
      io.disconnect();
      clearInterval(tick);
      clearInterval(sparkTick);
      clearTimeout(sparkTimer);
      offTheme();
    },
  };
}
