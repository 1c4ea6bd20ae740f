// Fakes of the browser for the tests: WebSocket, EventSource, fetch,
// BroadcastChannel, Web Locks, localStorage, page visibility and
// connectivity, over the (fake) global timers. One World is one browser;
// world.tab() is one of its tabs. Not part of the library's API.

import type {
  ChannelCtor,
  ChannelLike,
  EventSourceCtor,
  FetchInit,
  FetchLike,
  FetchResponseLike,
  LiveEnv,
  LockManagerLike,
  PageEvent,
  PageLike,
  SSEMessage,
  StorageLike,
  TimerApi,
  WebSocketCtor,
  WebSocketLike,
} from "./env";

const abortError = () => Object.assign(new Error("aborted"), { name: "AbortError" });

function parse(url: string): { path: string; params: URLSearchParams } {
  const u = new URL(url);
  return { path: u.pathname, params: u.searchParams };
}

export class FakeWS implements WebSocketLike {
  readyState = 0;
  onopen: ((ev: unknown) => void) | null = null;
  onmessage: ((ev: { data: unknown }) => void) | null = null;
  onerror: ((ev: unknown) => void) | null = null;
  onclose: ((ev: { code: number; reason: string }) => void) | null = null;
  sent: Record<string, unknown>[] = [];
  closedByClient = false;
  readonly path: string;
  readonly params: URLSearchParams;

  constructor(
    readonly url: string,
    readonly tab: string,
  ) {
    ({ path: this.path, params: this.params } = parse(url));
  }

  send(data: string): void {
    if (this.readyState !== 1) throw new Error("not open");
    this.sent.push(JSON.parse(data) as Record<string, unknown>);
  }

  close(): void {
    if (this.readyState === 3) return;
    this.readyState = 3;
    this.closedByClient = true;
  }

  get open(): boolean {
    return this.readyState === 1;
  }

  // Server side.
  accept(): void {
    this.readyState = 1;
    this.onopen?.({});
  }
  receive(msg: object): void {
    this.onmessage?.({ data: JSON.stringify(msg) });
  }
  /** Accepts and sends the subscription acknowledgement. */
  subscribed(cursor: string): void {
    this.accept();
    this.receive({ type: "subscribed", series: this.params.getAll("series"), cursor });
  }
  points(cursor: string, points: { s: string; t: number; v: number }[]): void {
    this.receive({ type: "points", cursor, points });
  }
  /** The connection fails (refused upgrade, dropped link). */
  drop(code = 1006): void {
    if (this.readyState === 3) return;
    this.readyState = 3;
    this.onerror?.({});
    this.onclose?.({ code, reason: "" });
  }
}

export class FakeES {
  readyState = 0;
  onopen: ((ev: unknown) => void) | null = null;
  onmessage: ((ev: SSEMessage) => void) | null = null;
  onerror: ((ev: unknown) => void) | null = null;
  listeners = new Map<string, ((ev: SSEMessage) => void)[]>();
  closedByClient = false;
  readonly path: string;
  readonly params: URLSearchParams;

  constructor(
    readonly url: string,
    readonly tab: string,
  ) {
    ({ path: this.path, params: this.params } = parse(url));
  }

  addEventListener(type: string, fn: (ev: SSEMessage) => void): void {
    this.listeners.set(type, [...(this.listeners.get(type) ?? []), fn]);
  }

  close(): void {
    this.readyState = 2;
    this.closedByClient = true;
  }

  get open(): boolean {
    return this.readyState === 1;
  }

  // Server side.
  accept(): void {
    this.readyState = 1;
    this.onopen?.({});
  }
  emit(name: string, data: string, id?: string): void {
    if (this.readyState === 2) return;
    const ev = { data, lastEventId: id ?? "" };
    if (name === "") this.onmessage?.(ev);
    else for (const fn of this.listeners.get(name) ?? []) fn(ev);
  }
  subscribed(cursor: string): void {
    this.accept();
    this.emit("subscribed", JSON.stringify({ series: this.params.getAll("series"), cursor }), cursor);
  }
  points(cursor: string, points: { s: string; t: number; v: number }[]): void {
    this.emit("", JSON.stringify({ cursor, points }), cursor);
  }
  error(): void {
    if (this.readyState === 2) return;
    this.readyState = 0; // EventSource would reconnect by itself
    this.onerror?.({});
  }
}

export class FakeRequest {
  readonly path: string;
  readonly params: URLSearchParams;
  done = false;
  aborted = false;
  private resolve!: (r: FetchResponseLike) => void;
  private reject!: (e: unknown) => void;
  readonly promise: Promise<FetchResponseLike>;

  constructor(
    readonly url: string,
    readonly init: FetchInit | undefined,
    readonly tab: string,
  ) {
    ({ path: this.path, params: this.params } = parse(url));
    this.promise = new Promise((res, rej) => {
      this.resolve = res;
      this.reject = rej;
    });
    const signal = init?.signal;
    signal?.addEventListener("abort", () => {
      if (this.done) return;
      this.done = true;
      this.aborted = true;
      this.reject(abortError());
    });
  }

  respond(status: number, body: unknown): void {
    if (this.done) return;
    this.done = true;
    this.resolve({ ok: status >= 200 && status < 300, status, json: async () => structuredClone(body) });
  }

  fail(err: unknown = new TypeError("Failed to fetch")): void {
    if (this.done) return;
    this.done = true;
    this.reject(err);
  }
}

/** The server side of the fake network, shared by a world's tabs. */
export class FakeNet {
  ws: FakeWS[] = [];
  es: FakeES[] = [];
  requests: FakeRequest[] = [];
  /** Answers requests as they come, when set (return false to leave one
   *  pending). */
  auto: ((r: FakeRequest) => boolean | void) | null = null;

  /** Open (not closed by the client or failed) WebSockets. */
  openWS(): FakeWS[] {
    return this.ws.filter((w) => w.readyState !== 3);
  }
  lastWS(): FakeWS {
    const w = this.ws[this.ws.length - 1];
    if (!w) throw new Error("no WebSocket");
    return w;
  }
  lastES(): FakeES {
    const e = this.es[this.es.length - 1];
    if (!e) throw new Error("no EventSource");
    return e;
  }
  pending(path?: string): FakeRequest[] {
    return this.requests.filter((r) => !r.done && (!path || r.path.endsWith(path)));
  }
  /** The one pending request to path. */
  next(path: string): FakeRequest {
    const p = this.pending(path);
    if (p.length !== 1) throw new Error(`${p.length} pending requests to ${path}: ${this.requests.map((r) => r.url).join(", ")}`);
    return p[0];
  }

  forTab(tab: string, killed: () => boolean): { WebSocket: WebSocketCtor; EventSource: EventSourceCtor; fetch: FetchLike } {
    const net = this;
    class WS extends FakeWS {
      constructor(url: string) {
        super(url, tab);
        net.ws.push(this);
      }
    }
    class ES extends FakeES {
      constructor(url: string) {
        super(url, tab);
        net.es.push(this);
      }
    }
    const fetch: FetchLike = (url, init) => {
      const r = new FakeRequest(url, init, tab);
      if (killed()) return new Promise(() => {});
      net.requests.push(r);
      if (net.auto && net.auto(r) !== false) {
        // Answered (or failed) by auto.
      }
      return r.promise;
    };
    return { WebSocket: WS, EventSource: ES as unknown as EventSourceCtor, fetch };
  }
}

class FakeChannel implements ChannelLike {
  onmessage: ((ev: { data: unknown }) => void) | null = null;
  closed = false;

  constructor(
    private readonly bus: FakeBus,
    readonly name: string,
    readonly tab: string,
  ) {
    bus.join(this);
  }

  postMessage(msg: unknown): void {
    if (this.closed) throw new Error("channel closed");
    this.bus.post(this, structuredClone(msg));
  }

  close(): void {
    this.closed = true;
  }
}

/** BroadcastChannel: delivers to the other open channels of the same name,
 *  in order, asynchronously (microtasks). */
export class FakeBus {
  private chans: FakeChannel[] = [];
  log: { from: string; data: unknown }[] = [];

  join(c: FakeChannel): void {
    this.chans.push(c);
  }

  post(from: FakeChannel, data: unknown): void {
    this.log.push({ from: from.tab, data });
    for (const c of this.chans) {
      if (c === from || c.closed || c.name !== from.name) continue;
      queueMicrotask(() => {
        if (!c.closed) c.onmessage?.({ data: structuredClone(data) });
      });
    }
  }

  forTab(tab: string): ChannelCtor {
    const bus = this;
    return class extends FakeChannel {
      constructor(name: string) {
        super(bus, name, tab);
      }
    };
  }

  crash(tab: string): void {
    for (const c of this.chans) if (c.tab === tab) c.closed = true;
  }
}

interface Holder {
  tab: string;
  cb: (lock: unknown) => Promise<unknown>;
  resolve: (v: unknown) => void;
  reject: (e: unknown) => void;
  state: "queued" | "held" | "done";
}

/** navigator.locks, exclusive mode, with steal and signal. */
export class FakeLocks {
  private held = new Map<string, Holder>();
  private queues = new Map<string, Holder[]>();

  holder(name: string): string | null {
    return this.held.get(name)?.tab ?? null;
  }

  forTab(tab: string): LockManagerLike {
    return { request: (name, opts, cb) => this.request(tab, name, opts, cb) };
  }

  private request(tab: string, name: string, opts: { steal?: boolean; signal?: AbortSignal }, cb: (lock: unknown) => Promise<unknown>): Promise<unknown> {
    return new Promise((resolve, reject) => {
      const h: Holder = { tab, cb, resolve, reject, state: "queued" };
      if (opts.signal?.aborted) {
        reject(abortError());
        return;
      }
      opts.signal?.addEventListener("abort", () => {
        if (h.state !== "queued") return;
        h.state = "done";
        const q = this.queues.get(name) ?? [];
        this.queues.set(name, q.filter((x) => x !== h));
        reject(abortError());
      });
      const cur = this.held.get(name);
      if (opts.steal && cur) {
        cur.state = "done";
        this.held.delete(name);
        cur.reject(abortError());
      }
      if (!this.held.has(name)) this.grant(name, h);
      else this.queues.set(name, [...(this.queues.get(name) ?? []), h]);
    });
  }

  private grant(name: string, h: Holder): void {
    h.state = "held";
    this.held.set(name, h);
    Promise.resolve()
      .then(() => h.cb({ name }))
      .then(
        (v) => this.finish(name, h, () => h.resolve(v)),
        (e) => this.finish(name, h, () => h.reject(e)),
      );
  }

  private finish(name: string, h: Holder, settle: () => void): void {
    if (h.state !== "held") return;
    h.state = "done";
    this.release(name, h);
    settle();
  }

  private release(name: string, h: Holder): void {
    if (this.held.get(name) !== h) return;
    this.held.delete(name);
    const q = this.queues.get(name) ?? [];
    const next = q.shift();
    this.queues.set(name, q);
    if (next) this.grant(name, next);
  }

  /** The tab is gone: the browser releases its locks and drops its
   *  requests. */
  crash(tab: string): void {
    for (const [name, q] of this.queues) this.queues.set(name, q.filter((h) => h.tab !== tab));
    for (const [name, h] of [...this.held]) {
      if (h.tab === tab) {
        h.state = "done";
        this.release(name, h);
      }
    }
  }
}

export class FakeStorage implements StorageLike {
  map = new Map<string, string>();
  getItem(k: string): string | null {
    return this.map.get(k) ?? null;
  }
  setItem(k: string, v: string): void {
    this.map.set(k, v);
  }
  removeItem(k: string): void {
    this.map.delete(k);
  }
}

export class FakePage implements PageLike {
  private listeners = new Map<PageEvent, Set<() => void>>();
  isHidden = false;
  isOnline = true;

  hidden(): boolean {
    return this.isHidden;
  }
  online(): boolean {
    return this.isOnline;
  }
  on(event: PageEvent, fn: () => void): () => void {
    const s = this.listeners.get(event) ?? new Set();
    s.add(fn);
    this.listeners.set(event, s);
    return () => void s.delete(fn);
  }
  fire(event: PageEvent): void {
    for (const fn of [...(this.listeners.get(event) ?? [])]) fn();
  }
  setHidden(h: boolean): void {
    this.isHidden = h;
    this.fire("visibility");
  }
  setOnline(o: boolean): void {
    this.isOnline = o;
    this.fire(o ? "online" : "offline");
  }
  listenerCount(): number {
    let n = 0;
    for (const s of this.listeners.values()) n += s.size;
    return n;
  }
}

export interface FakeTab {
  id: string;
  env: LiveEnv;
  page: FakePage;
  warnings: string[];
  /** The tab crashes or is closed without running any code. */
  kill(): void;
  /** The tab stops running (timers, messages) but keeps its locks: a
   *  frozen background tab. */
  freeze(): void;
}

export interface TabOptions {
  /** Leave these out of the tab's env. */
  without?: ("WebSocket" | "EventSource" | "BroadcastChannel" | "locks" | "storage")[];
  hidden?: boolean;
}

/** One browser: a network, a BroadcastChannel bus, Web Locks, storage. */
export class World {
  readonly net = new FakeNet();
  readonly bus = new FakeBus();
  readonly locks = new FakeLocks();
  readonly storage = new FakeStorage();
  /** The jitter source of every tab: 0.5 unless a test sets it. */
  random: () => number = () => 0.5;
  origin = "https://tg.example";
  private n = 0;

  tab(opts: TabOptions = {}): FakeTab {
    const id = `tab${++this.n}`;
    let killed = false;
    const timers: TimerApi = {
      now: () => Date.now(),
      setTimeout: (fn, ms) => globalThis.setTimeout(() => {
        if (!killed) fn();
      }, ms),
      clearTimeout: (h) => globalThis.clearTimeout(h as ReturnType<typeof setTimeout>),
    };
    const page = new FakePage();
    page.isHidden = !!opts.hidden;
    const net = this.net.forTab(id, () => killed);
    const without = new Set(opts.without ?? []);
    const warnings: string[] = [];
    const env: LiveEnv = {
      timers,
      random: () => this.random(),
      fetch: net.fetch,
      WebSocket: without.has("WebSocket") ? undefined : net.WebSocket,
      EventSource: without.has("EventSource") ? undefined : net.EventSource,
      BroadcastChannel: without.has("BroadcastChannel") ? undefined : this.bus.forTab(id),
      locks: without.has("locks") ? undefined : this.locks.forTab(id),
      storage: without.has("storage") ? undefined : this.storage,
      page,
      origin: this.origin,
      tabId: id,
      warn: (msg) => void warnings.push(msg),
    };
    return {
      id,
      env,
      page,
      warnings,
      freeze: () => {
        killed = true;
        this.bus.crash(id);
      },
      kill: () => {
        killed = true;
        this.bus.crash(id);
        this.locks.crash(id);
        for (const w of this.net.ws) if (w.tab === id && w.readyState !== 3) w.readyState = 3;
        for (const e of this.net.es) if (e.tab === id) e.readyState = 2;
        for (const r of this.net.requests) if (r.tab === id) r.done = true;
      },
    };
  }
}
