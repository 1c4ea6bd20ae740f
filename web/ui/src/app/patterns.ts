// MQTT-style series patterns over "{device}/{metric}" (web/PROTOCOL.md):
// "dev1/temperature", "dev1/#", "dev1/+", "+/temperature", "#", "+/+".

const NAME = /^[A-Za-z0-9._-]{1,64}$/;

/** Why a pattern is invalid, or null when it is valid. */
export function patternError(p: string): string | null {
  const s = p.trim();
  if (!s) return "empty pattern";
  if (s === "#") return null;
  const parts = s.split("/");
  if (parts.length !== 2) return `"${s}": want {device}/{metric}, with + or # wildcards`;
  const [d, m] = parts;
  if (d === "#") return `"${s}": # must be the last level`;
  if (d !== "+" && !NAME.test(d)) return `"${s}": bad device name`;
  if (m !== "+" && m !== "#" && !NAME.test(m)) return `"${s}": bad metric name`;
  return null;
}

/** Whether series "device/metric" matches pattern p. */
export function matches(p: string, series: string): boolean {
  const s = p.trim();
  if (s === "#") return true;
  const i = series.indexOf("/");
  if (i < 0) return false;
  const [pd, pm] = s.split("/");
  if (pm === undefined) return false;
  const d = series.slice(0, i);
  const m = series.slice(i + 1);
  return (pd === "+" || pd === d) && (pm === "+" || pm === "#" || pm === m);
}

/** Every series of the fleet that one of the patterns matches, sorted. */
export function expand(patterns: string[], fleet: { id: string; metrics: string[] }[]): string[] {
  const ps = patterns.map((p) => p.trim()).filter((p) => p && patternError(p) === null);
  const out: string[] = [];
  for (const d of fleet) {
    for (const m of d.metrics) {
      const s = `${d.id}/${m}`;
      if (ps.some((p) => matches(p, s))) out.push(s);
    }
  }
  return out.sort();
}

/** Splits a textarea of patterns (newlines, commas or spaces). */
export function splitPatterns(text: string): string[] {
  return text
    .split(/[\s,]+/)
    .map((s) => s.trim())
    .filter(Boolean);
}
