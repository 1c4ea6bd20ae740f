// Hash routes: #/ (fleet), #/device/{id}, #/dashboards, #/dashboards/{id},
// #/admin/devices and #/admin/users (#/admin is the first), each
// optionally followed by ?params (e.g. #/device/dev1?range=24h).

export type Route =
  | { view: "fleet"; params: URLSearchParams }
  | { view: "device"; id: string; params: URLSearchParams }
  | { view: "dashboards"; params: URLSearchParams }
  | { view: "board"; id: string; params: URLSearchParams }
  | { view: "admin"; tab: AdminTab; params: URLSearchParams }
  | { view: "notfound"; path: string; params: URLSearchParams };

/** The admin view's tabs. */
export type AdminTab = "devices" | "users";

export function parseHash(hash: string): Route {
  let s = hash.replace(/^#/, "");
  if (!s.startsWith("/")) s = "/" + s;
  const qi = s.indexOf("?");
  const path = qi >= 0 ? s.slice(0, qi) : s;
  const params = new URLSearchParams(qi >= 0 ? s.slice(qi + 1) : "");
  const parts = path.split("/").filter(Boolean).map(safeDecode);
  if (parts.length === 0) return { view: "fleet", params };
  if (parts[0] === "device" && parts.length === 2 && parts[1]) return { view: "device", id: parts[1], params };
  if (parts[0] === "dashboards" && parts.length === 1) return { view: "dashboards", params };
  if (parts[0] === "dashboards" && parts.length === 2 && parts[1]) return { view: "board", id: parts[1], params };
  if (parts[0] === "admin" && parts.length === 1) return { view: "admin", tab: "devices", params };
  if (parts[0] === "admin" && parts.length === 2 && (parts[1] === "devices" || parts[1] === "users")) return { view: "admin", tab: parts[1], params };
  return { view: "notfound", path, params };
}

function safeDecode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

function withParams(path: string, params?: URLSearchParams | string): string {
  const q = params ? String(params) : "";
  return q ? `${path}?${q}` : path;
}

export const href = {
  fleet: () => "#/",
  device: (id: string, params?: URLSearchParams | string) => withParams(`#/device/${encodeURIComponent(id)}`, params),
  dashboards: () => "#/dashboards",
  board: (id: string, params?: URLSearchParams | string) => withParams(`#/dashboards/${encodeURIComponent(id)}`, params),
  admin: (tab: AdminTab = "devices") => `#/admin/${tab}`,
};

/** Rewrites the hash's parameters without a navigation (no hashchange),
 *  so that the URL stays shareable as the operator changes the range. */
export function replaceParams(params: URLSearchParams): void {
  const s = location.hash.replace(/^#/, "");
  const qi = s.indexOf("?");
  const path = qi >= 0 ? s.slice(0, qi) : s || "/";
  const next = withParams(`#${path}`, params);
  if (next !== location.hash) history.replaceState(history.state, "", next);
}

/** Navigates to a hash. */
export function go(hash: string): void {
  if (location.hash !== hash) location.hash = hash;
}
