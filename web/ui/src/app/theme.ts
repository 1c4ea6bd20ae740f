// Dark and light themes: the system's preference unless the operator chose
// one with the toggle (remembered in localStorage).

import { h } from "./dom";

export type ThemeChoice = "auto" | "light" | "dark";
const KEY = "telegauge.theme";
const listeners = new Set<() => void>();
const media = window.matchMedia("(prefers-color-scheme: dark)");

export function themeChoice(): ThemeChoice {
  try {
    const v = localStorage.getItem(KEY);
    if (v === "light" || v === "dark") return v;
  } catch {
    /* storage unavailable */
  }
  return "auto";
}

export function effectiveTheme(): "light" | "dark" {
  const c = themeChoice();
  return c === "auto" ? (media.matches ? "dark" : "light") : c;
}

function apply(): void {
  document.documentElement.dataset.theme = effectiveTheme();
  colorsCache = null;
  for (const l of listeners) l();
}

export function setTheme(c: ThemeChoice): void {
  try {
    if (c === "auto") localStorage.removeItem(KEY);
    else localStorage.setItem(KEY, c);
  } catch {
    /* storage unavailable: the choice lasts for this page only */
  }
  apply();
}

/** Be told when the effective theme changes; returns an unsubscribe function. */
export function onThemeChange(fn: () => void): () => void {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

export function initTheme(): void {
  apply();
  media.addEventListener("change", () => {
    if (themeChoice() === "auto") apply();
  });
  // Another tab changed the choice.
  window.addEventListener("storage", (e) => {
    if (e.key === KEY) apply();
  });
}

export interface ThemeColors {
  fg: string;
  muted: string;
  grid: string;
  palette: string[];
  /** The root font size in px (larger on wall screens): charts scale their text by it. */
  remPx: number;
}

let colorsCache: ThemeColors | null = null;

/** Chart colors from the CSS custom properties of the current theme. */
export function themeColors(): ThemeColors {
  if (colorsCache) return colorsCache;
  const cs = getComputedStyle(document.documentElement);
  const v = (n: string, d: string) => cs.getPropertyValue(n).trim() || d;
  const palette: string[] = [];
  for (let i = 0; i < 8; i++) palette.push(v(`--series-${i}`, "#2563eb"));
  const remPx = parseFloat(cs.fontSize) || 15;
  colorsCache = { fg: v("--fg", "#111"), muted: v("--muted", "#666"), grid: v("--grid", "rgba(128,128,128,.2)"), palette, remPx };
  return colorsCache;
}

/** A CSS color with an alpha, for #rrggbb colors (others pass through). */
export function withAlpha(color: string, alpha: number): string {
  const m = /^#([0-9a-f]{6})$/i.exec(color);
  if (!m) return color;
  const n = parseInt(m[1], 16);
  return `rgba(${(n >> 16) & 255},${(n >> 8) & 255},${n & 255},${alpha})`;
}

const NEXT: Record<ThemeChoice, ThemeChoice> = { auto: "dark", dark: "light", light: "auto" };
const LABEL: Record<ThemeChoice, string> = { auto: "Auto", dark: "Dark", light: "Light" };

/** The header's theme button: cycles auto -> dark -> light -> auto. */
export function themeToggle(): HTMLButtonElement {
  const btn = h("button", { type: "button", class: "btn btn-ghost theme-toggle", "data-testid": "theme-toggle" });
  const render = () => {
    const c = themeChoice();
    btn.replaceChildren(
      h("span", { "aria-hidden": "true" }, c === "auto" ? "◐" : c === "dark" ? "☾" : "☀"),
      h("span", { class: "theme-label", "aria-hidden": "true" }, LABEL[c]),
    );
    btn.setAttribute("aria-label", `Theme: ${LABEL[c].toLowerCase()}${c === "auto" ? ` (${effectiveTheme()})` : ""}. Switch to ${LABEL[NEXT[c]].toLowerCase()}.`);
    btn.dataset.theme = effectiveTheme();
  };
  btn.addEventListener("click", () => setTheme(NEXT[themeChoice()]));
  onThemeChange(render);
  render();
  return btn;
}
