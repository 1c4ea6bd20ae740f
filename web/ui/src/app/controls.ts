// The range toolbar: presets, custom from/to, pause/follow, and what is
// shown (step, state, errors).

import { h, setAttr, setText } from "./dom";
import * as fmt from "./format";
import type { ChartGroup } from "./group";
import { PRESET_KEYS, PRESET_LABELS, type PresetKey, type Range } from "./ranges";

let uid = 0;

export interface RangeControls {
  el: HTMLElement;
  update(g: ChartGroup): void;
}

/** compact: a <select> instead of buttons (dashboard panels). */
export function rangeControls(g: () => ChartGroup | null, opts: { compact?: boolean; label?: string } = {}): RangeControls {
  const id = ++uid;
  const set = (r: Range) => g()?.setRange(r);
  const presetButtons = PRESET_KEYS.map((k) =>
    h("button", { type: "button", class: "seg-btn", "data-testid": `range-${k}`, "aria-pressed": "false", onclick: () => set({ preset: k }) }, PRESET_LABELS[k]),
  );
  const fromIn = h("input", { type: "datetime-local", id: `rf-${id}`, "data-testid": "range-from", required: true });
  const toIn = h("input", { type: "datetime-local", id: `rt-${id}`, "data-testid": "range-to", required: true });
  const formErr = h("span", { class: "form-error", role: "alert" });
  const customForm = h(
    "form",
    { class: "custom-range", id: `rc-${id}`, hidden: true, "data-testid": "custom-range" },
    h("label", { for: `rf-${id}` }, "From"),
    fromIn,
    h("label", { for: `rt-${id}` }, "To"),
    toIn,
    h("button", { type: "submit", class: "btn", "data-testid": "range-apply" }, "Apply"),
    formErr,
  );
  customForm.addEventListener("submit", (e) => {
    e.preventDefault();
    const from = fmt.fromLocalInput(fromIn.value);
    const to = fmt.fromLocalInput(toIn.value);
    if (from === null || to === null || to <= from) {
      formErr.textContent = "“To” must be after “From”.";
      return;
    }
    formErr.textContent = "";
    set({ from, to });
  });
  const customBtn = h("button", {
    type: "button",
    class: "seg-btn",
    "data-testid": "range-custom",
    "aria-pressed": "false",
    "aria-expanded": "false",
    "aria-controls": `rc-${id}`,
    onclick: () => {
      const open = customForm.hidden;
      customForm.hidden = !open;
      customBtn.setAttribute("aria-expanded", String(open));
      const grp = g();
      if (open && grp) {
        const w = grp.window();
        fromIn.value = fmt.toLocalInput(w.from);
        toIn.value = fmt.toLocalInput(w.to);
        fromIn.focus();
      }
    },
  }, "Custom");
  const select = h(
    "select",
    { class: "range-select", "aria-label": opts.label ?? "Time range", "data-testid": "range-select" },
    ...PRESET_KEYS.map((k) => h("option", { value: k }, PRESET_LABELS[k])),
    h("option", { value: "fixed", disabled: true }, "Zoomed"),
  );
  select.addEventListener("change", () => {
    const v = select.value;
    if (v !== "fixed") set({ preset: v as PresetKey });
  });
  const followBtn = h("button", {
    type: "button",
    class: "btn follow-btn",
    "data-testid": "follow-toggle",
    onclick: () => {
      const grp = g();
      if (!grp) return;
      if (grp.following) grp.pause();
      else grp.follow();
    },
  });
  const info = h("span", { class: "range-info", "data-testid": "range-info" });
  const retry = h("button", { type: "button", class: "btn btn-small", hidden: true, onclick: () => g()?.reload() }, "Retry");
  const el = opts.compact
    ? h("div", { class: "range-controls compact" }, select, followBtn, info, retry)
    : h(
        "div",
        { class: "range-controls" },
        h("div", { class: "seg", role: "group", "aria-label": opts.label ?? "Time range" }, ...presetButtons, customBtn),
        followBtn,
        info,
        retry,
        customForm,
      );

  const update = (grp: ChartGroup) => {
    const r = grp.range;
    const preset = "preset" in r ? r.preset : null;
    presetButtons.forEach((b, i) => setAttr(b, "aria-pressed", String(PRESET_KEYS[i] === preset)));
    setAttr(customBtn, "aria-pressed", String(!preset));
    select.value = preset ?? "fixed";
    setText(followBtn, grp.following ? "❚❚ Pause" : "▶ Follow");
    setAttr(followBtn, "aria-label", grp.following ? "Pause: stop following live data" : `Follow live data (last ${PRESET_LABELS[grp.lastPreset]})`);
    followBtn.dataset.following = String(grp.following);
    const w = grp.window();
    const what = grp.following ? `Live · last ${PRESET_LABELS[grp.lastPreset]}` : `${fmt.dateTime(w.from, false)} → ${fmt.dateTime(w.to, false)}`;
    const step = grp.step === null ? "" : ` · ${grp.step === 0 ? "raw readings" : `${fmt.stepLabel(grp.step)} buckets`}`;
    const state = grp.state === "loading" ? " · loading…" : grp.state === "error" ? ` · ${grp.error}` : "";
    setText(info, what + step + state);
    info.dataset.state = grp.state;
    retry.hidden = grp.state !== "error";
  };
  return { el, update };
}
