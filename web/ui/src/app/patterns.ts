// MQTT-style series patterns over "{device}/{metric}" (web/PROTOCOL.md):
// "dev1/temperature", "dev1/#", "dev1/+", "+/temperature", "#", "+/+".

import { matches, patternError } from "../live";

// The rules themselves live in the live library, so that what the editor
// accepts and what a subscription carries never disagree.
export { matches, patternError };

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
