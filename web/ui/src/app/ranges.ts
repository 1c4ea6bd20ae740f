// Time ranges: a live preset ("last 1 h", following) or a fixed window.

export const PRESETS = {
  "5m": 5 * 60_000,
  "1h": 3_600_000,
  "24h": 86_400_000,
  "7d": 7 * 86_400_000,
} as const;

export type PresetKey = keyof typeof PRESETS;
export const PRESET_KEYS = Object.keys(PRESETS) as PresetKey[];

export const PRESET_LABELS: Record<PresetKey, string> = {
  "5m": "5 min",
  "1h": "1 h",
  "24h": "24 h",
  "7d": "7 d",
};

/** A preset follows "now"; an absolute window is fixed. */
export type Range = { preset: PresetKey } | { from: number; to: number };

export function isPreset(k: string | null | undefined): k is PresetKey {
  return !!k && Object.prototype.hasOwnProperty.call(PRESETS, k);
}

/** Reads ?range=1h or ?from=MS&to=MS; fallback when neither is valid. */
export function rangeFromParams(q: URLSearchParams, fallback: Range): Range {
  const r = q.get("range");
  if (isPreset(r)) return { preset: r };
  const from = Number(q.get("from"));
  const to = Number(q.get("to"));
  if (q.has("from") && q.has("to") && Number.isFinite(from) && Number.isFinite(to) && to > from) {
    return { from: Math.round(from), to: Math.round(to) };
  }
  return fallback;
}

/** Writes a range into hash parameters. */
export function rangeToParams(r: Range, q = new URLSearchParams()): URLSearchParams {
  q.delete("range");
  q.delete("from");
  q.delete("to");
  if ("preset" in r) q.set("range", r.preset);
  else {
    q.set("from", String(r.from));
    q.set("to", String(r.to));
  }
  return q;
}

export function rangeSpan(r: Range): number {
  return "preset" in r ? PRESETS[r.preset] : r.to - r.from;
}

export function sameRange(a: Range, b: Range): boolean {
  if ("preset" in a) return "preset" in b && a.preset === b.preset;
  return !("preset" in b) && a.from === b.from && a.to === b.to;
}

/** The relative "from" parameter of a preset for /api/v1/query. */
export function presetFrom(k: PresetKey): string {
  return k === "7d" ? "-7d" : k === "24h" ? "-24h" : `-${k}`;
}
