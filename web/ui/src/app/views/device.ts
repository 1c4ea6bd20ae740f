// Device view: one chart per metric, live by default.

import type { Device } from "../api";
import { rangeControls } from "../controls";
import { h, setText } from "../dom";
import * as fmt from "../format";
import { ChartGroup, type ChartSpec } from "../group";
import { rangeFromParams, rangeToParams, sameRange } from "../ranges";
import { href, replaceParams, type Route } from "../router";
import type { Ctx, View } from "./view";

export const PAINT_MARK = "tg:device-view-painted";

export function deviceView(ctx: Ctx, route: Extract<Route, { view: "device" }>): View {
  const id = route.id;
  let params = route.params;
  let group: ChartGroup | null = null;
  const initialRange = rangeFromParams(params, { preset: "1h" });

  const status = h("span", { class: "pill", "data-testid": "device-status" }, "…");
  const meta = h("span", { class: "device-meta muted" });
  const note = h("p", { class: "notice", hidden: true });
  const charts = h("div", { class: "chart-grid", "data-testid": "device-charts" });
  const controls = rangeControls(() => group);
  const el = h(
    "section",
    { class: "view device-view", "aria-labelledby": "view-h" },
    h("nav", { class: "crumbs", "aria-label": "Breadcrumb" }, h("a", { href: href.fleet() }, "Fleet"), h("span", { "aria-hidden": "true" }, " / ")),
    h("div", { class: "view-head" }, h("h1", { id: "view-h", tabindex: -1 }, id), status, meta),
    controls.el,
    h("p", { class: "hint muted" }, "Drag across a chart to zoom; double-click or Follow to go back to live. Arrow keys move the cursor on a focused chart."),
    note,
    charts,
  );

  const spec = (series: string): ChartSpec => {
    const metric = series.slice(id.length + 1);
    return { key: series, title: metric, series: [series], label: () => metric };
  };

  const renderHead = (d: Device | undefined) => {
    if (!d) {
      setText(status, ctx.fleet.loaded ? "unknown" : "…");
      status.dataset.online = "unknown";
      setText(meta, "");
      return;
    }
    setText(status, d.online ? "online" : "offline");
    status.dataset.online = String(d.online);
    const rej = d.rejected ? ` · ${d.rejected} rejected` : "";
    setText(meta, `last seen ${fmt.ago(d.lastSeen)} · ${fmt.rate(d.rate)} readings/s${rej}`);
  };

  const start = (d: Device) => {
    note.hidden = true;
    group = new ChartGroup({
      live: ctx.live,
      patterns: [`${id}/#`],
      specs: d.metrics.map((m) => spec(`${id}/${m}`)),
      range: initialRange,
      container: charts,
      syncKey: `device:${id}`,
      onChange: (g) => {
        controls.update(g);
        params = rangeToParams(g.range, new URLSearchParams(params));
        replaceParams(params);
      },
      onUnknownSeries: (ids) => {
        for (const s of ids) if (s.startsWith(id + "/") && group && !group.charts.some((c) => c.key === s)) group.addChart(spec(s));
      },
      onPresence: (p) => ctx.fleet.applyPresence(p),
      onPainted: () => performance.mark(PAINT_MARK, { detail: { device: id } }),
    });
    controls.update(group);
  };

  const onFleet = () => {
    const d = ctx.fleet.get(id);
    renderHead(d);
    if (group) return;
    if (d && d.metrics.length) start(d);
    else if (ctx.fleet.loaded) {
      note.hidden = false;
      note.textContent = d
        ? "This device has sent no readings yet. Charts appear when it does."
        : ctx.fleet.error
          ? `Cannot load the device list: ${ctx.fleet.error}`
          : `No device called “${id}” has been seen. Charts appear if it starts publishing.`;
    }
  };
  const offFleet = ctx.fleet.subscribe(onFleet);
  onFleet();
  const tick = window.setInterval(() => renderHead(ctx.fleet.get(id)), 1000);

  return {
    el,
    title: `${id} · Telegauge`,
    update(r) {
      if (r.view !== "device" || r.id !== id) return false;
      params = r.params;
      const next = rangeFromParams(r.params, group?.range ?? initialRange);
      if (group && !sameRange(next, group.range)) group.setRange(next);
      return true;
    },
    info: () =>
      group
        ? { view: "device", device: id, range: group.range, following: group.following, state: group.state, step: group.step, pointsReceived: group.pointsReceived, window: group.window() }
        : { view: "device", device: id, state: "waiting" },
    destroy() {
      offFleet();
      clearInterval(tick);
      group?.destroy();
      group = null;
    },
  };
}
