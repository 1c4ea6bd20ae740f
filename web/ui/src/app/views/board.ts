// One dashboard: panels of charts of every series matching their patterns;
// an editor for the panels; shareable at #/dashboards/{id}.

import { deleteDashboard, getDashboard, updateDashboard, type Dashboard, type Device, type Panel } from "../api";
import { rangeControls, type RangeControls } from "../controls";
import { announce, h, setText } from "../dom";
import { ChartGroup } from "../group";
import { expand, patternError, splitPatterns } from "../patterns";
import { isPreset, PRESET_KEYS, PRESET_LABELS, type PresetKey } from "../ranges";
import { go, href, replaceParams, type Route } from "../router";
import { apiMessage, updatedLabel } from "./dashboards";
import type { Ctx, View } from "./view";

/** The most series one panel charts (the rest are listed as left out). */
export const MAX_SERIES_PER_PANEL = 20;

let panelSeq = 0;

/** Legend labels without what every series shares: the device when all
 *  are one device's, the metric when all are one metric's. */
export function shortLabels(ids: string[]): (id: string) => string {
  const split = (s: string) => [s.slice(0, s.indexOf("/")), s.slice(s.indexOf("/") + 1)];
  if (ids.length < 2) return (id) => id;
  const devs = new Set(ids.map((s) => split(s)[0]));
  const mets = new Set(ids.map((s) => split(s)[1]));
  if (devs.size === 1) return (id) => split(id)[1];
  if (mets.size === 1) return (id) => split(id)[0];
  return (id) => id;
}

class PanelView {
  readonly el: HTMLElement;
  private body: HTMLElement;
  private note: HTMLElement;
  private controls: RangeControls;
  private group: ChartGroup | null = null;
  private expanded: string[] = [];
  private key = `panel-${++panelSeq}`;
  private lastRefresh = 0;

  constructor(
    private ctx: Ctx,
    private panel: Panel,
    private index: number,
    private range: PresetKey,
  ) {
    this.controls = rangeControls(() => this.group, { compact: true, label: `Range of ${panel.title || `panel ${index + 1}`}` });
    this.note = h("p", { class: "panel-note muted", "data-testid": "panel-note" });
    this.body = h("div", { class: "panel-body" });
    this.el = h(
      "section",
      { class: "panel", "data-testid": "panel", "data-panel": String(index), "aria-label": panel.title || `Panel ${index + 1}` },
      h("header", { class: "panel-head" }, h("h2", { class: "panel-title" }, panel.title || `Panel ${index + 1}`), this.controls.el),
      this.body,
      this.note,
    );
  }

  /** Re-expands the patterns against the fleet; rebuilds the chart when
   *  the set of series changed. */
  refresh(devices: Device[]): void {
    const all = expand(this.panel.series, devices);
    const shown = all.slice(0, MAX_SERIES_PER_PANEL);
    const valid = this.panel.series.filter((p) => !patternError(p));
    if (!valid.length) setText(this.note, "No valid series pattern: edit this panel.");
    else if (!all.length) setText(this.note, `No series matches ${valid.join(", ")} yet.`);
    else if (all.length > shown.length) setText(this.note, `${shown.length} of ${all.length} matching series shown (limit ${MAX_SERIES_PER_PANEL}).`);
    else setText(this.note, `${all.length} series: ${valid.join(", ")}`);
    if (shown.join("\n") === this.expanded.join("\n") && this.group) return;
    this.expanded = shown;
    const range = this.group?.range ?? { preset: this.range };
    this.group?.destroy();
    this.group = null;
    if (!shown.length) return;
    this.group = new ChartGroup({
      live: this.ctx.live,
      patterns: valid,
      specs: [{ key: this.key, title: this.panel.title || `Panel ${this.index + 1}`, series: shown, label: shortLabels(shown), hideTitle: true }],
      range,
      container: this.body,
      syncKey: this.key,
      onChange: (g) => this.controls.update(g),
      onPresence: (p) => this.ctx.fleet.applyPresence(p),
      onUnknownSeries: () => {
        // A new matching series: look at the fleet again (at most every 10 s).
        if (this.expanded.length < MAX_SERIES_PER_PANEL && Date.now() - this.lastRefresh > 10_000) {
          this.lastRefresh = Date.now();
          void this.ctx.fleet.refresh();
        }
      },
      defaultPreset: this.range,
    });
    this.controls.update(this.group);
  }

  setRange(k: PresetKey): void {
    this.range = k;
    this.group?.setRange({ preset: k });
  }

  info(): Record<string, unknown> {
    return { title: this.panel.title, series: this.expanded, range: this.group?.range ?? null, following: this.group?.following ?? null, state: this.group?.state ?? "empty" };
  }

  destroy(): void {
    this.group?.destroy();
    this.group = null;
  }
}

export function boardView(ctx: Ctx, route: Extract<Route, { view: "board" }>): View {
  const id = route.id;
  let params = route.params;
  let board: Dashboard | null = null;
  let panels: PanelView[] = [];
  let editing = params.get("edit") === "1";
  let destroyed = false;
  const boardRange = (): PresetKey | null => {
    const r = params.get("range");
    return isPreset(r) ? r : null;
  };

  const title = h("h1", { id: "view-h", tabindex: -1 }, "Dashboard");
  const updated = h("span", { class: "muted" });
  const editBtn = h("button", { type: "button", class: "btn admin-only", "data-testid": "board-edit" }, "Edit");
  const shareBtn = h("button", { type: "button", class: "btn", "data-testid": "board-share" }, "Share");
  const delBtn = h("button", { type: "button", class: "btn btn-danger admin-only", "data-testid": "board-delete" }, "Delete");
  const shareOut = h("span", { class: "muted", role: "status" });
  const rangeSel = h(
    "select",
    { "aria-label": "Range of every panel", "data-testid": "board-range" },
    h("option", { value: "" }, "Each panel’s own"),
    ...PRESET_KEYS.map((k) => h("option", { value: k }, PRESET_LABELS[k])),
  );
  const status = h("p", { class: "notice", role: "status" }, "Loading dashboard…");
  const grid = h("div", { class: "panel-grid", "data-testid": "board-panels" });
  const head = h(
    "div",
    { class: "view-head" },
    title,
    updated,
    h("div", { class: "actions" }, editBtn, shareBtn, delBtn, shareOut),
  );
  const toolbar = h("div", { class: "toolbar", hidden: true }, h("label", { class: "muted" }, "Range ", rangeSel));
  const el = h(
    "section",
    { class: "view board-view", "aria-labelledby": "view-h" },
    h("nav", { class: "crumbs", "aria-label": "Breadcrumb" }, h("a", { href: href.dashboards() }, "Dashboards"), h("span", { "aria-hidden": "true" }, " / ")),
    head,
    toolbar,
    status,
    grid,
  );

  rangeSel.addEventListener("change", () => {
    params = new URLSearchParams(params);
    if (rangeSel.value) params.set("range", rangeSel.value);
    else params.delete("range");
    replaceParams(params);
    renderPanels();
  });
  shareBtn.addEventListener("click", async () => {
    const q = new URLSearchParams(params);
    q.delete("edit");
    const url = location.origin + location.pathname + location.search + href.board(id, q);
    try {
      await navigator.clipboard.writeText(url);
      shareOut.textContent = "Link copied";
    } catch {
      shareOut.textContent = url;
    }
    setTimeout(() => (shareOut.textContent = ""), 4000);
  });
  delBtn.addEventListener("click", async () => {
    if (!board || !confirm(`Delete dashboard “${board.name}”?`)) return;
    try {
      await deleteDashboard(id);
      announce("Dashboard deleted");
      go(href.dashboards());
    } catch (e) {
      shareOut.textContent = `Could not delete: ${apiMessage(e)}`;
    }
  });
  editBtn.addEventListener("click", () => setEditing(!editing));

  function setEditing(on: boolean): void {
    editing = on;
    params = new URLSearchParams(params);
    if (on) params.set("edit", "1");
    else params.delete("edit");
    replaceParams(params);
    render();
  }

  function renderPanels(): void {
    for (const p of panels) p.destroy();
    panels = [];
    if (!board) return;
    const override = boardRange();
    rangeSel.value = override ?? "";
    panels = board.panels.map((p, i) => new PanelView(ctx, p, i, override ?? (isPreset(p.range) ? p.range : "1h")));
    grid.replaceChildren(...panels.map((p) => p.el));
    if (ctx.fleet.loaded) for (const p of panels) p.refresh(ctx.fleet.devices);
    if (!board.panels.length) {
      grid.append(
        h("p", { class: "notice" }, "This dashboard has no panels yet. ", h("button", { type: "button", class: "btn btn-primary admin-only", onclick: () => setEditing(true) }, "Add a panel")),
      );
    }
  }

  function render(): void {
    if (!board) return;
    setText(title, board.name || "(untitled)");
    setText(updated, updatedLabel(board.updated));
    document.title = `${board.name} · Telegauge`;
    editBtn.textContent = editing ? "Close editor" : "Edit";
    editBtn.setAttribute("aria-expanded", String(editing));
    status.hidden = true;
    toolbar.hidden = editing;
    if (editing) {
      for (const p of panels) p.destroy();
      panels = [];
      grid.replaceChildren(editor(board));
    } else {
      renderPanels();
    }
  }

  function editor(b: Dashboard): HTMLElement {
    const draft: Panel[] = b.panels.map((p) => ({ ...p, series: [...p.series] }));
    const nameIn = h("input", { type: "text", id: "board-name", value: b.name, required: true, "data-testid": "board-name" });
    const list = h("div", { class: "panel-editors" });
    const err = h("p", { class: "form-error", role: "alert" });
    const form = h(
      "form",
      { class: "board-editor", "data-testid": "board-editor" },
      h("div", { class: "field" }, h("label", { for: "board-name" }, "Name"), nameIn),
      list,
      h(
        "div",
        { class: "actions" },
        h("button", { type: "button", class: "btn", "data-testid": "panel-add", onclick: () => (draft.push({ title: "", series: [], range: "1h" }), drawList(draft.length - 1)) }, "+ Add panel"),
        h("span", { class: "spacer" }),
        h("button", { type: "button", class: "btn", onclick: () => setEditing(false) }, "Cancel"),
        h("button", { type: "submit", class: "btn btn-primary", "data-testid": "board-save" }, "Save"),
      ),
      err,
    );
    let seq = 0;
    const drawList = (focusIndex?: number) => {
      const items = draft.map((p, i) => {
        const n = ++seq;
        const titleIn = h("input", { type: "text", id: `pt-${n}`, value: p.title, "data-testid": "panel-title" });
        const seriesIn = h("textarea", { id: `ps-${n}`, rows: 3, spellcheck: "false", "data-testid": "panel-series", "aria-describedby": `pm-${n}` });
        seriesIn.value = p.series.join("\n");
        const preview = h("p", { id: `pm-${n}`, class: "muted small" });
        const rangeIn = h("select", { id: `pr-${n}`, "data-testid": "panel-range" }, ...PRESET_KEYS.map((k) => h("option", { value: k }, PRESET_LABELS[k])));
        rangeIn.value = isPreset(p.range) ? p.range : "1h";
        const updatePreview = () => {
          const pats = splitPatterns(seriesIn.value);
          const bad = pats.map(patternError).filter(Boolean);
          const m = expand(pats, ctx.fleet.devices);
          preview.textContent = bad.length
            ? bad.join("; ")
            : pats.length
              ? `Matches ${m.length} series now${m.length > MAX_SERIES_PER_PANEL ? ` (the first ${MAX_SERIES_PER_PANEL} are charted)` : ""}${m.length ? `: ${m.slice(0, 6).join(", ")}${m.length > 6 ? ", …" : ""}` : ""}.`
              : "One pattern per line: dev1/temperature, dev1/#, +/temperature, #.";
          preview.classList.toggle("form-error", bad.length > 0);
        };
        titleIn.addEventListener("input", () => (p.title = titleIn.value));
        seriesIn.addEventListener("input", () => {
          p.series = splitPatterns(seriesIn.value);
          updatePreview();
        });
        rangeIn.addEventListener("change", () => (p.range = rangeIn.value));
        updatePreview();
        const move = (d: number) => {
          const j = i + d;
          if (j < 0 || j >= draft.length) return;
          [draft[i], draft[j]] = [draft[j], draft[i]];
          drawList(j);
        };
        return h(
          "fieldset",
          { class: "panel-editor", "data-testid": "panel-editor" },
          h("legend", null, `Panel ${i + 1}`),
          h("div", { class: "field" }, h("label", { for: `pt-${n}` }, "Title"), titleIn),
          h("div", { class: "field" }, h("label", { for: `ps-${n}` }, "Series patterns"), seriesIn, preview),
          h("div", { class: "field" }, h("label", { for: `pr-${n}` }, "Range"), rangeIn),
          h(
            "div",
            { class: "actions" },
            h("button", { type: "button", class: "btn btn-small", disabled: i === 0, "aria-label": `Move panel ${i + 1} up`, onclick: () => move(-1) }, "↑ Up"),
            h("button", { type: "button", class: "btn btn-small", disabled: i === draft.length - 1, "aria-label": `Move panel ${i + 1} down`, onclick: () => move(1) }, "↓ Down"),
            h(
              "button",
              {
                type: "button",
                class: "btn btn-small btn-danger",
                "data-testid": "panel-remove",
                "aria-label": `Remove panel ${i + 1}`,
                onclick: () => {
                  draft.splice(i, 1);
                  drawList(Math.min(i, draft.length - 1));
                },
              },
              "Remove",
            ),
          ),
        );
      });
      list.replaceChildren(...items, ...(draft.length ? [] : [h("p", { class: "muted" }, "No panels. Add one.")]));
      if (focusIndex !== undefined && focusIndex >= 0) (list.querySelectorAll("fieldset")[focusIndex]?.querySelector("input") as HTMLInputElement | null)?.focus();
    };
    drawList();
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const name = nameIn.value.trim();
      if (!name) {
        err.textContent = "A dashboard needs a name.";
        return;
      }
      const bad = draft.flatMap((p, i) => p.series.map(patternError).filter(Boolean).map((m) => `Panel ${i + 1}: ${m}`));
      if (bad.length) {
        err.textContent = bad.join("; ");
        return;
      }
      err.textContent = "";
      try {
        board = await updateDashboard(id, { name, panels: draft.map((p) => ({ title: p.title.trim(), series: p.series, range: p.range || "1h" })) });
        board.panels ??= [];
        announce("Dashboard saved");
        setEditing(false);
        title.focus();
      } catch (e2) {
        err.textContent = `Could not save: ${apiMessage(e2)}`;
      }
    });
    return form;
  }

  const offFleet = ctx.fleet.subscribe((devs) => {
    if (!editing) for (const p of panels) p.refresh(devs);
  });

  void (async () => {
    try {
      const b = await getDashboard(id);
      if (destroyed) return;
      board = b;
      board.panels ??= [];
      render();
    } catch (e) {
      status.textContent = `Cannot load this dashboard: ${apiMessage(e)}.`;
      status.append(" ", h("a", { href: href.dashboards() }, "All dashboards"));
      editBtn.disabled = shareBtn.disabled = delBtn.disabled = true;
    }
  })();

  return {
    el,
    title: "Dashboard · Telegauge",
    update(r) {
      if (r.view !== "board" || r.id !== id) return false;
      const prevRange = boardRange();
      const prevEdit = editing;
      params = r.params;
      editing = params.get("edit") === "1";
      if (editing !== prevEdit) render();
      else if (boardRange() !== prevRange && !editing) renderPanels();
      return true;
    },
    info: () => ({ view: "board", id, editing, name: board?.name ?? null, panels: panels.map((p) => p.info()) }),
    destroy() {
      destroyed = true;
      offFleet();
      for (const p of panels) p.destroy();
      panels = [];
    },
  };
}
