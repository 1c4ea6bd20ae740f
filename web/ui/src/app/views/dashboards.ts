// Dashboards list: create, rename, delete; each links to its board.

import { ApiError, createDashboard, deleteDashboard, getDashboard, listDashboards, updateDashboard, type DashboardSummary } from "../api";
import { announce, h } from "../dom";
import * as fmt from "../format";
import { go, href } from "../router";
import type { View } from "./view";

export function updatedLabel(u: string | number | undefined): string {
  if (u === undefined || u === null || u === "") return "";
  const ms = typeof u === "number" ? u : Date.parse(u);
  return Number.isFinite(ms) ? `updated ${fmt.ago(ms)}` : "";
}

export function apiMessage(e: unknown): string {
  if (e instanceof ApiError && e.status === 404) return "not found";
  if (e instanceof ApiError && e.status === 405) return "the server has no dashboards API";
  return e instanceof Error ? e.message : String(e);
}

export function dashboardsView(): View {
  const nameIn = h("input", { type: "text", id: "new-board-name", required: true, maxlength: 200, placeholder: "e.g. Boiler room", "data-testid": "dashboard-name" });
  const createErr = h("p", { class: "form-error", role: "alert" });
  const form = h(
    "form",
    { class: "inline-form admin-only", "data-testid": "dashboard-create" },
    h("label", { for: "new-board-name" }, "New dashboard"),
    nameIn,
    h("button", { type: "submit", class: "btn btn-primary" }, "Create"),
  );
  const list = h("ul", { class: "board-list", "data-testid": "dashboard-list", "aria-busy": "true" });
  const status = h("p", { class: "notice", role: "status" }, "Loading dashboards…");
  const el = h(
    "section",
    { class: "view dashboards-view", "aria-labelledby": "view-h" },
    h("div", { class: "view-head" }, h("h1", { id: "view-h", tabindex: -1 }, "Dashboards")),
    h("p", { class: "muted" }, "Panels of series chosen by pattern (", h("code", null, "dev1/#"), ", ", h("code", null, "+/temperature"), "), saved on the server and shareable by URL."),
    form,
    createErr,
    status,
    list,
  );
  let destroyed = false;

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const name = nameIn.value.trim();
    if (!name) return;
    createErr.textContent = "";
    try {
      const b = await createDashboard({ name, panels: [] });
      announce(`Dashboard ${b.name} created`);
      go(href.board(b.id, "edit=1"));
    } catch (err) {
      createErr.textContent = `Could not create: ${apiMessage(err)}`;
    }
  });

  const item = (d: DashboardSummary): HTMLLIElement => {
    const link = h("a", { href: href.board(d.id), class: "board-link" }, d.name || "(untitled)");
    const li = h("li", { class: "board-item", "data-testid": "dashboard-item", "data-id": d.id });
    const err = h("span", { class: "form-error", role: "alert" });
    const renameBtn = h("button", { type: "button", class: "btn btn-small", "aria-label": `Rename ${d.name}` }, "Rename");
    const delBtn = h("button", { type: "button", class: "btn btn-small btn-danger", "aria-label": `Delete ${d.name}` }, "Delete");
    const show = () => li.replaceChildren(link, h("span", { class: "muted" }, updatedLabel(d.updated)), h("span", { class: "actions admin-only" }, renameBtn, delBtn), err);
    renameBtn.addEventListener("click", () => {
      const input = h("input", { type: "text", value: d.name, required: true, "aria-label": `New name for ${d.name}` });
      const f = h(
        "form",
        { class: "inline-form" },
        input,
        h("button", { type: "submit", class: "btn btn-small btn-primary" }, "Save"),
        h("button", { type: "button", class: "btn btn-small", onclick: () => (show(), renameBtn.focus()) }, "Cancel"),
      );
      f.addEventListener("submit", async (e) => {
        e.preventDefault();
        const name = input.value.trim();
        if (!name) return;
        try {
          const full = await getDashboard(d.id);
          const saved = await updateDashboard(d.id, { name, panels: full.panels ?? [] });
          d.name = saved.name;
          d.updated = saved.updated;
          link.textContent = saved.name;
          show();
          renameBtn.focus();
          announce(`Renamed to ${saved.name}`);
        } catch (e2) {
          err.textContent = `Could not rename: ${apiMessage(e2)}`;
        }
      });
      input.addEventListener("keydown", (e) => e.key === "Escape" && (show(), renameBtn.focus()));
      li.replaceChildren(f, err);
      input.focus();
      input.select();
    });
    delBtn.addEventListener("click", async () => {
      if (!confirm(`Delete dashboard “${d.name}”?`)) return;
      try {
        await deleteDashboard(d.id);
        li.remove();
        announce(`Dashboard ${d.name} deleted`);
        if (!list.children.length) status.textContent = "No dashboards yet.";
        status.hidden = list.children.length > 0;
      } catch (e) {
        err.textContent = `Could not delete: ${apiMessage(e)}`;
      }
    });
    show();
    return li;
  };

  const load = async () => {
    try {
      const boards = await listDashboards();
      if (destroyed) return;
      boards.sort((a, b) => a.name.localeCompare(b.name));
      list.replaceChildren(...boards.map(item));
      status.hidden = boards.length > 0;
      status.textContent = boards.length ? "" : "No dashboards yet: create one above.";
    } catch (e) {
      status.textContent = `Cannot load dashboards: ${apiMessage(e)}`;
    } finally {
      list.setAttribute("aria-busy", "false");
    }
  };
  void load();

  return {
    el,
    title: "Dashboards · Telegauge",
    update: (r) => r.view === "dashboards",
    info: () => ({ view: "dashboards", count: list.children.length }),
    destroy() {
      destroyed = true;
    },
  };
}
