// The browser as the library sees it. Every dependency of the live client
// (timers, randomness, fetch, WebSocket, EventSource, BroadcastChannel, Web
// Locks, localStorage, page visibility and connectivity) goes through a
// LiveEnv, so that the tests drive each rule deterministically with fakes.

/** Timers and the clock. */
export interface TimerApi {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export interface WebSocketLike {
  readonly readyState: number;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}
export type WebSocketCtor = new (url: string) => WebSocketLike;

/** The parts of an SSE MessageEvent the library reads. */
export interface SSEMessage {
  data: string;
  lastEventId?: string;
}

export interface EventSourceLike {
  readonly readyState: number;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: SSEMessage) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  addEventListener(type: string, fn: (ev: SSEMessage) => void): void;
  close(): void;
}
export type EventSourceCtor = new (url: string, init?: { withCredentials?: boolean }) => EventSourceLike;

export interface FetchResponseLike {
  ok: boolean;
  status: number;
  json(): Promise<unknown>;
}
export interface FetchInit {
  signal?: AbortSignal;
  headers?: Record<string, string>;
  credentials?: "same-origin" | "include" | "omit";
  cache?: "no-store";
}
export type FetchLike = (url: string, init?: FetchInit) => Promise<FetchResponseLike>;

export interface ChannelLike {
  postMessage(msg: unknown): void;
  onmessage: ((ev: { data: unknown }) => void) | null;
  close(): void;
}
export type ChannelCtor = new (name: string) => ChannelLike;

/** navigator.locks, the part used for leader election. */
export interface LockManagerLike {
  request(
    name: string,
    options: { mode?: "exclusive"; steal?: boolean; signal?: AbortSignal },
    cb: (lock: unknown) => Promise<unknown>,
  ): Promise<unknown>;
}

export interface StorageLike {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

export type PageEvent = "visibility" | "online" | "offline" | "pagehide" | "pageshow";

/** The page: visibility, connectivity, and its lifecycle. */
export interface PageLike {
  hidden(): boolean;
  online(): boolean;
  on(event: PageEvent, fn: () => void): () => void;
}

export interface LiveEnv {
  timers: TimerApi;
  /** Uniform in [0, 1): the jitter source. */
  random(): number;
  fetch: FetchLike;
  WebSocket?: WebSocketCtor;
  EventSource?: EventSourceCtor;
  BroadcastChannel?: ChannelCtor;
  locks?: LockManagerLike;
  storage?: StorageLike;
  page: PageLike;
  /** The page's origin, the default server base URL. */
  origin: string;
  /** This tab's id, unique among the browser's tabs. */
  tabId: string;
  /** Where problems the library cannot report otherwise go. */
  warn(msg: string, err?: unknown): void;
}

const realTimers: TimerApi = {
  // Looked up at call time, so that fake timers installed later apply.
  now: () => Date.now(),
  setTimeout: (fn, ms) => globalThis.setTimeout(fn, ms),
  clearTimeout: (h) => globalThis.clearTimeout(h as ReturnType<typeof setTimeout>),
};

function randomId(): string {
  const c = (globalThis as { crypto?: Crypto }).crypto;
  if (c && typeof c.randomUUID === "function") return c.randomUUID();
  return Math.random().toString(36).slice(2) + Date.now().toString(36);
}

function safeStorage(): StorageLike | undefined {
  try {
    const s = globalThis.localStorage;
    if (!s) return undefined;
    // Private modes may throw on use rather than on access.
    const k = "telegauge.live.probe";
    s.setItem(k, "1");
    s.removeItem(k);
    return s;
  } catch {
    return undefined;
  }
}

function browserPage(): PageLike {
  const doc = (globalThis as { document?: Document }).document;
  const win = globalThis as unknown as Partial<Window>;
  const nav = (globalThis as { navigator?: Navigator }).navigator;
  return {
    hidden: () => doc?.visibilityState === "hidden",
    online: () => nav?.onLine !== false,
    on(event, fn) {
      const target: EventTarget | undefined = event === "visibility" ? doc : (win as EventTarget | undefined);
      const name = event === "visibility" ? "visibilitychange" : event;
      if (!target?.addEventListener) return () => {};
      target.addEventListener(name, fn);
      return () => target.removeEventListener(name, fn);
    },
  };
}

/** The real browser, with whatever it lacks left undefined. */
export function browserEnv(): LiveEnv {
  const g = globalThis as unknown as Record<string, unknown>;
  const nav = g.navigator as { locks?: LockManagerLike } | undefined;
  const loc = g.location as Location | undefined;
  return {
    timers: realTimers,
    random: Math.random,
    fetch: (url, init) => globalThis.fetch(url, init as RequestInit),
    WebSocket: g.WebSocket as WebSocketCtor | undefined,
    EventSource: g.EventSource as EventSourceCtor | undefined,
    BroadcastChannel: g.BroadcastChannel as ChannelCtor | undefined,
    locks: nav?.locks && typeof nav.locks.request === "function" ? nav.locks : undefined,
    storage: safeStorage(),
    page: browserPage(),
    origin: loc?.origin ?? "http://localhost",
    tabId: randomId(),
    warn: (msg, err) => console.warn(`telegauge live: ${msg}`, err ?? ""),
  };
}
