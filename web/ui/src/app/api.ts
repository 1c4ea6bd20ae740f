// The server's JSON API (DESIGN.md §4). Live updates never come from here:
// they come from the live-client library (src/live).

export interface Device {
  id: string;
  online: boolean;
  lastSeen: number;
  metrics: string[];
  rate: number;
  rejected: number;
  rejectedByReason: Record<string, number> | null;
}

export interface SeriesData {
  id: string;
  /** Bucket width in ms; 0 for raw readings. */
  step: number;
  t: number[];
  min: number[];
  max: number[];
  avg: number[];
  count: number[];
  last: number[];
}

export interface Panel {
  title: string;
  series: string[];
  range: string;
}

export interface DashboardSummary {
  id: string;
  name: string;
  updated: string | number;
}

export interface Dashboard extends DashboardSummary {
  panels: Panel[];
}

export interface DashboardBody {
  name: string;
  panels: Panel[];
}

/** A non-2xx answer: status and the server's {"error"} message. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
    this.name = "ApiError";
  }
}

/** The server's base URL ("" = this page's origin). */
let base = "";
export function setBaseUrl(url: string): void {
  base = url.replace(/\/$/, "");
}

/** Who the page acts for (GET /api/v1/me): a session from the login
 *  page, or anonymous on a server that needs no login. */
export interface Me {
  /** "" when anonymous. */
  user: string;
  role: "admin" | "viewer";
  auth: "session" | "token" | "anonymous";
}

/** Told when the server answers 401 to anything but a login: the session
 *  expired, was logged out elsewhere, or its user was removed. */
let unauthorized: (() => void) | null = null;
export function onUnauthorized(f: (() => void) | null): void {
  unauthorized = f;
}

/** Counts requests per path, for tests (window.__telegauge.requests). */
export const requestCounts: Record<string, number> = {};

async function call<T>(method: string, path: string, body?: unknown, signal?: AbortSignal): Promise<T> {
  const key = path.split("?")[0];
  requestCounts[key] = (requestCounts[key] ?? 0) + 1;
  let res: Response;
  try {
    res = await fetch(base + path, {
      method,
      signal,
      credentials: "same-origin",
      headers: body === undefined ? { Accept: "application/json" } : { Accept: "application/json", "Content-Type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (e) {
    if ((e as Error).name === "AbortError") throw e;
    throw new ApiError(0, "the server cannot be reached");
  }
  if (res.status === 204) return undefined as T;
  let data: unknown = null;
  const text = await res.text();
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (res.status === 401 && key !== "/api/v1/login") unauthorized?.();
  if (!res.ok) {
    const msg = data && typeof data === "object" && "error" in data ? String((data as { error: unknown }).error) : `HTTP ${res.status}`;
    throw new ApiError(res.status, msg);
  }
  return data as T;
}

export async function getDevices(signal?: AbortSignal): Promise<Device[]> {
  const r = await call<{ devices: Device[] | null }>("GET", "/api/v1/devices", undefined, signal);
  return r.devices ?? [];
}

export interface QueryParams {
  series: string[];
  /** Unix ms or relative ("-1h"). */
  from: number | string;
  to?: number | string;
  /** "auto" (default), "raw", "1s", "5m"... */
  step?: string;
  maxPoints?: number;
}

/** The most series the server takes in one query. */
export const MAX_QUERY_SERIES = 100;

/** One history query; more than MAX_QUERY_SERIES series are split into
 *  several requests, run in parallel, answers concatenated in order. */
export async function query(p: QueryParams, signal?: AbortSignal): Promise<SeriesData[]> {
  if (p.series.length === 0) return [];
  const chunks: string[][] = [];
  for (let i = 0; i < p.series.length; i += MAX_QUERY_SERIES) chunks.push(p.series.slice(i, i + MAX_QUERY_SERIES));
  const answers = await Promise.all(
    chunks.map((chunk) => {
      const q = new URLSearchParams();
      for (const s of chunk) q.append("series", s);
      q.set("from", String(p.from));
      if (p.to !== undefined) q.set("to", String(p.to));
      if (p.step) q.set("step", p.step);
      if (p.maxPoints) q.set("maxPoints", String(Math.round(p.maxPoints)));
      return call<{ series: SeriesData[] }>("GET", `/api/v1/query?${q}`, undefined, signal);
    }),
  );
  return answers.flatMap((a) => a.series ?? []);
}

export async function listDashboards(signal?: AbortSignal): Promise<DashboardSummary[]> {
  const r = await call<{ dashboards: DashboardSummary[] | null }>("GET", "/api/v1/dashboards", undefined, signal);
  return r.dashboards ?? [];
}

export function getDashboard(id: string, signal?: AbortSignal): Promise<Dashboard> {
  return call<Dashboard>("GET", `/api/v1/dashboards/${encodeURIComponent(id)}`, undefined, signal);
}

export function createDashboard(body: DashboardBody): Promise<Dashboard> {
  return call<Dashboard>("POST", "/api/v1/dashboards", body);
}

export function updateDashboard(id: string, body: DashboardBody): Promise<Dashboard> {
  return call<Dashboard>("PUT", `/api/v1/dashboards/${encodeURIComponent(id)}`, body);
}

export function deleteDashboard(id: string): Promise<void> {
  return call<void>("DELETE", `/api/v1/dashboards/${encodeURIComponent(id)}`);
}

export function getMe(signal?: AbortSignal): Promise<Me> {
  return call<Me>("GET", "/api/v1/me", undefined, signal);
}

/** Logs in; the password is the API token `telegauge users add` printed.
 *  The session cookie is HttpOnly: the page never sees it. */
export function login(name: string, password: string): Promise<Me> {
  return call<Me>("POST", "/api/v1/login", { name, password });
}

export function logout(): Promise<void> {
  return call<void>("POST", "/api/v1/logout");
}

// --- admin API (admins only; 501 on a server without a database) --------

/** A device's credential state: a live token, revoked, or never given one. */
export type Credential = "token" | "revoked" | "none";

export interface AdminDevice {
  id: string;
  credential: Credential;
  /** Unix ms; 0 = never. */
  firstSeen: number;
  lastSeen: number;
}

/** A device's new token, shown once, and how the device connects. */
export interface IssuedDevice {
  id: string;
  token: string;
  /** The device held a live token, which no longer works. */
  replaced: boolean;
  /** Where it publishes: telemetry/{id}. */
  topic: string;
  /** MQTT listeners: mqtt://host:port, mqtts://..., ws://.../mqtt. */
  brokers: string[];
}

export interface Operator {
  name: string;
  role: "admin" | "viewer";
  /** Unix ms. */
  created: number;
}

/** A user's new API token (also the login password), shown once. */
export interface IssuedUser {
  name: string;
  role: "admin" | "viewer";
  token: string;
  replaced: boolean;
}

export async function adminDevices(signal?: AbortSignal): Promise<AdminDevice[]> {
  const r = await call<{ devices: AdminDevice[] | null }>("GET", "/api/v1/admin/devices", undefined, signal);
  return r.devices ?? [];
}

export function issueDevice(id: string): Promise<IssuedDevice> {
  return call<IssuedDevice>("POST", "/api/v1/admin/devices", { id });
}

export function revokeDevice(id: string): Promise<void> {
  return call<void>("DELETE", `/api/v1/admin/devices/${encodeURIComponent(id)}`);
}

export async function adminUsers(signal?: AbortSignal): Promise<Operator[]> {
  const r = await call<{ users: Operator[] | null }>("GET", "/api/v1/admin/users", undefined, signal);
  return r.users ?? [];
}

export function issueUser(name: string, role: "admin" | "viewer"): Promise<IssuedUser> {
  return call<IssuedUser>("POST", "/api/v1/admin/users", { name, role });
}

export function removeUser(name: string): Promise<void> {
  return call<void>("DELETE", `/api/v1/admin/users/${encodeURIComponent(name)}`);
}
