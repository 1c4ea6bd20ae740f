// createLive: subscriptions, and delivery to them exactly once.

import { connectionDefaults, type ConnectionConfig } from "./connection";
import { Deduper, type DedupeOptions } from "./dedupe";
import type { Delivery } from "./engine";
import { engineDefaults, type EngineConfig } from "./engine";
import { browserEnv, type LiveEnv, type LockManagerLike } from "./env";
import { LeaseLocks, leaseLockDefaults, type LeaseLockOptions } from "./leaselock";
import { Matcher, patternError } from "./patterns";
import { Shared, Solo, tabsDefaults, type Coordinator, type Needs, type TabsConfig } from "./tabs";
import type { ConnectionState, Handlers, Live, LiveOptions, Point, Subscription, Transport } from "./types";

const ALL: Transport[] = ["ws", "sse", "longpoll", "poll"];

/** Internal knobs (tests, experiments); the defaults are documented where
 *  each is used. */
export interface Tuning {
  conn?: Partial<ConnectionConfig>;
  engine?: Partial<Omit<EngineConfig, "conn">>;
  tabs?: Partial<TabsConfig>;
  leaseLocks?: Partial<LeaseLockOptions>;
  dedupe?: DedupeOptions;
}

interface Sub {
  id: number;
  matcher: Matcher;
  handlers: Handlers;
  dedupe: Deduper;
  closed: boolean;
}

const INITIAL: ConnectionState = {
  status: "connecting",
  transport: null,
  lastHeartbeat: null,
  latencyMs: null,
  reconnects: 0,
  leader: false,
  stale: true,
};

function sameState(a: ConnectionState, b: ConnectionState): boolean {
  return (
    a.status === b.status &&
    a.transport === b.transport &&
    a.lastHeartbeat === b.lastHeartbeat &&
    a.latencyMs === b.latencyMs &&
    a.reconnects === b.reconnects &&
    a.leader === b.leader &&
    a.stale === b.stale
  );
}

class Client implements Live {
  private subs = new Map<number, Sub>();
  private seq = 0;
  /** Backfill id -> the subscriptions it is for (those present when the
   *  gap or reset was announced). */
  private fills = new Map<string, Set<number>>();
  private st: ConnectionState = INITIAL;
  private listeners = new Set<(s: ConnectionState) => void>();
  private readonly coord: Coordinator;
  private syncQueued = false;
  private closed = false;
  private unlisten: (() => void)[] = [];

  constructor(
    private readonly env: LiveEnv,
    engineCfg: EngineConfig,
    tabs: { cfg: TabsConfig; locks: LockManagerLike & { close?(): void } } | null,
    private readonly dedupeOpts: DedupeOptions | undefined,
  ) {
    const sink = { deliver: (d: Delivery) => this.deliver(d), state: (s: ConnectionState) => this.setState(s) };
    this.coord = tabs ? new Shared(env, engineCfg, tabs.cfg, sink, tabs.locks) : new Solo(env, engineCfg, sink);
    this.unlisten.push(
      env.page.on("visibility", () => this.sync()),
      env.page.on("pagehide", () => this.coord.pagehide()),
      env.page.on("pageshow", () => this.sync()), // back from the bfcache
    );
    this.coord.start(this.needs());
  }

  /** The coordinator (tests). */
  get coordinator(): Coordinator {
    return this.coord;
  }

  subscribe(patterns: string[], handlers: Handlers): Subscription {
    if (this.closed) throw new Error("telegauge live: subscribe after close()");
    if (!Array.isArray(patterns)) throw new TypeError("telegauge live: patterns must be an array");
    for (const p of patterns) {
      const e = patternError(p);
      if (e) throw new TypeError(`telegauge live: ${e}`);
    }
    if (!handlers || typeof handlers.points !== "function") throw new TypeError("telegauge live: handlers.points is required");
    const sub: Sub = { id: ++this.seq, matcher: new Matcher(patterns), handlers, dedupe: new Deduper(this.dedupeOpts), closed: false };
    this.subs.set(sub.id, sub);
    this.queueSync();
    return {
      close: () => {
        if (sub.closed) return;
        sub.closed = true;
        this.subs.delete(sub.id);
        this.queueSync();
      },
    };
  }

  state(): ConnectionState {
    return this.st;
  }

  onState(listener: (s: ConnectionState) => void): () => void {
    this.listeners.add(listener);
    return () => void this.listeners.delete(listener);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const u of this.unlisten) u();
    this.unlisten = [];
    this.coord.close();
    for (const s of this.subs.values()) s.closed = true;
    this.subs.clear();
    this.fills.clear();
    this.listeners.clear();
  }

  private needs(): Needs {
    const patterns = new Set<string>();
    const plain = new Set<string>();
    for (const s of this.subs.values()) {
      for (const p of s.matcher.patterns) {
        patterns.add(p);
        if (!s.handlers.reset) plain.add(p);
      }
    }
    return { patterns: [...patterns].sort(), plain: [...plain].sort(), hidden: this.env.page.hidden() };
  }

  // Subscribing several times in a row makes one change.
  private queueSync(): void {
    if (this.syncQueued) return;
    this.syncQueued = true;
    queueMicrotask(() => {
      this.syncQueued = false;
      this.sync();
    });
  }

  private sync(): void {
    if (!this.closed) this.coord.update(this.needs());
  }

  private deliver(d: Delivery): void {
    if (this.closed) return;
    switch (d.k) {
      case "points": {
        const targets = d.fill === undefined ? this.subs.values() : this.fillTargets(d.fill);
        for (const s of targets) this.deliverPoints(s, d.points);
        return;
      }
      case "presence":
        for (const s of [...this.subs.values()]) {
          if (!s.closed && s.handlers.presence && s.matcher.coversDevice(d.p.device)) this.call(() => s.handlers.presence!(d.p));
        }
        return;
      case "reset":
        for (const s of [...this.subs.values()]) if (!s.closed && s.handlers.reset) this.call(() => s.handlers.reset!());
        return;
      case "fill": {
        if (this.fills.has(d.fill.id)) return; // re-run by a new leader
        const ids = new Set<number>();
        for (const s of this.subs.values()) if (d.fill.kind === "gap" || !s.handlers.reset) ids.add(s.id);
        this.fills.set(d.fill.id, ids);
        return;
      }
      case "filled":
        this.fills.delete(d.id);
        return;
      case "cursor":
        return;
    }
  }

  private *fillTargets(id: string): Iterable<Sub> {
    const ids = this.fills.get(id);
    if (!ids) return;
    for (const i of ids) {
      const s = this.subs.get(i);
      if (s) yield s;
    }
  }

  private deliverPoints(s: Sub, points: readonly Point[]): void {
    if (s.closed) return;
    const mine = points.filter((p) => s.matcher.has(p.s));
    if (mine.length === 0) return;
    const fresh = s.dedupe.filter(mine);
    if (fresh.length > 0) this.call(() => s.handlers.points(fresh));
  }

  private call(fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.env.warn("a live handler threw", err);
    }
  }

  private setState(s: ConnectionState): void {
    if (sameState(s, this.st)) return;
    this.st = s;
    for (const l of [...this.listeners]) {
      try {
        l(s);
      } catch (err) {
        this.env.warn("a state listener threw", err);
      }
    }
  }
}

/** createLive with an explicit environment (tests) and tuning. */
export function createLiveWith(env: LiveEnv, opts: LiveOptions = {}, tuning: Tuning = {}): Live & { readonly coordinator: Coordinator } {
  const base = (opts.baseUrl ?? env.origin).replace(/\/+$/, "");
  const heartbeatMs = opts.heartbeatMs && opts.heartbeatMs > 0 ? opts.heartbeatMs : 15_000;
  const hiddenRate = opts.hiddenRate && opts.hiddenRate > 0 ? opts.hiddenRate : 1;
  const transports = (opts.transports && opts.transports.length > 0 ? opts.transports : ALL).filter((t) => ALL.includes(t));
  const conn: ConnectionConfig = { base, transports, heartbeatMs, hiddenRate, ...connectionDefaults(heartbeatMs), ...tuning.conn };
  const engine: EngineConfig = { ...engineDefaults(base, conn), ...tuning.engine, conn };
  const share = opts.shareAcrossTabs !== false && typeof env.BroadcastChannel === "function";
  const tabs = share
    ? {
        cfg: { ...tabsDefaults(base, heartbeatMs), ...tuning.tabs },
        locks: env.locks ?? new LeaseLocks(env, { ...leaseLockDefaults, ...tuning.leaseLocks }),
      }
    : null;
  return new Client(env, engine, tabs, tuning.dedupe);
}

/** The live client for this page: one per page. */
export function createLive(opts: LiveOptions = {}): Live {
  return createLiveWith(browserEnv(), opts);
}
