// Series patterns (PROTOCOL.md "Subscriptions"): MQTT-style wildcards over
// "{device}/{metric}": '+' is one level, '#' the rest.

const NAME = /^[A-Za-z0-9._-]{1,64}$/;

/** Most patterns one subscription may carry (server limit). */
export const MAX_PATTERNS = 256;

/** Why a pattern is invalid, or null when it is valid. */
export function patternError(p: string): string | null {
  if (typeof p !== "string" || p === "") return "empty pattern";
  const parts = p.split("/");
  if (parts.length > 2) return `series pattern ${JSON.stringify(p)}: want {device}/{metric}, with + or # wildcards`;
  for (let i = 0; i < parts.length; i++) {
    const x = parts[i];
    if (x === "#") {
      if (i !== parts.length - 1) return `series pattern ${JSON.stringify(p)}: # must be last`;
      continue;
    }
    if (x === "+") continue;
    if (!NAME.test(x)) return `series pattern ${JSON.stringify(p)}: names are 1-64 of A-Z a-z 0-9 . _ -`;
  }
  if (parts.length === 1 && parts[0] !== "#") return `series pattern ${JSON.stringify(p)}: want {device}/{metric}`;
  return null;
}

export function isExact(p: string): boolean {
  return !p.includes("+") && !p.includes("#");
}

/** Whether series id "{device}/{metric}" matches pattern p. */
export function matches(p: string, id: string): boolean {
  if (p === "#") return true;
  const slash = id.indexOf("/");
  if (slash < 0) return false;
  const pslash = p.indexOf("/");
  if (pslash < 0) return false;
  const pd = p.slice(0, pslash);
  const pm = p.slice(pslash + 1);
  if (pd !== "+" && pd !== id.slice(0, slash)) return false;
  return pm === "+" || pm === "#" || pm === id.slice(slash + 1);
}

/** Whether p covers some series of device (presence goes to it). */
export function coversDevice(p: string, device: string): boolean {
  if (p === "#") return true;
  const d = p.slice(0, p.indexOf("/"));
  return d === "+" || d === device;
}

/** A compiled set of patterns. */
export class Matcher {
  private exact = new Set<string>();
  private wild: string[] = [];
  readonly patterns: readonly string[];

  constructor(patterns: readonly string[]) {
    this.patterns = [...patterns];
    for (const p of patterns) {
      if (isExact(p)) this.exact.add(p);
      else this.wild.push(p);
    }
  }

  has(id: string): boolean {
    if (this.exact.has(id)) return true;
    for (const p of this.wild) if (matches(p, id)) return true;
    return false;
  }

  coversDevice(device: string): boolean {
    for (const p of this.patterns) if (coversDevice(p, device)) return true;
    return false;
  }
}

// One spelling per set of series: the metric wildcard as "#" ("d/+" and
// "d/#" match the same series, as series have exactly two levels), and
// "#" for everything.
function canonical(p: string): string {
  if (p === "#") return p;
  const [d, m] = p.split("/");
  if (d === "+" && (m === "+" || m === "#")) return "#";
  return m === "+" ? `${d}/#` : p;
}

// Whether w matches every series a matches (w and a canonical, distinct).
function covers(w: string, a: string): boolean {
  if (w === "#") return true;
  if (a === "#") return false;
  const [wd, wm] = w.split("/");
  const [ad, am] = a.split("/");
  return (wd === "+" || wd === ad) && (wm === "#" || wm === am);
}

/** Sorted, in one spelling, without patterns that another one covers. */
export function normalize(patterns: Iterable<string>): string[] {
  const all = [...new Set([...patterns].map(canonical))];
  const wild = all.filter((p) => !isExact(p));
  return all.filter((p) => !wild.some((w) => w !== p && covers(w, p))).sort();
}

/**
 * The patterns to ask the server for: normalized and, when there are more
 * than the server takes, widened (series of one device to "device/#", then
 * everything to "#"). Widening is safe: each tab filters what it delivers
 * by its own subscriptions' patterns.
 */
export function compact(patterns: Iterable<string>, max = MAX_PATTERNS): string[] {
  let out = normalize(patterns);
  if (out.length <= max) return out;
  out = normalize(out.map((p) => (p === "#" || p.startsWith("+/") ? p : `${p.slice(0, p.indexOf("/"))}/#`)));
  if (out.length <= max) return out;
  return ["#"];
}
