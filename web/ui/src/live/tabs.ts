// One live connection per browser, not per tab. Tabs of one origin elect a
// leader with the Web Locks API (the lock is released by the browser when
// the leader's tab closes or crashes, and the next tab in the queue gets
// it) and talk over a BroadcastChannel:
//
// - every tab announces its needs (patterns, patterns without a reset
//   handler, hidden) when they change and every announceMs; tabs not heard
//   from for expireMs are forgotten;
// - the leader runs the connection for the union of every tab's patterns,
//   with the hidden rate only while every tab is hidden, and posts every
//   delivery (with the newest cursor) and its state;
// - every tab keeps the newest cursor and the pending backfills it has
//   seen, so the tab that takes over resumes from the cursor with nothing
//   lost and finishes the backfills the old leader had not finished;
// - a follower that hears nothing from the leader for leaderTimeoutMs (a
//   frozen tab still holding the lock) marks the state stale and, when it is
//   visible, steals the lock.
//
// Without Web Locks (insecure contexts: plain HTTP), the lock is
// leaselock.ts's, over BroadcastChannel with leases. Without
// BroadcastChannel (or with shareAcrossTabs false) each tab runs its own
// connection (Solo).

import type { ChannelLike, LiveEnv, LockManagerLike } from "./env";
import { Engine, type Delivery, type EngineConfig, type PendingFill } from "./engine";
import type { ConnectionState } from "./types";
import { Watchdog } from "./watchdog";

export interface Needs {
  patterns: string[];
  plain: string[];
  hidden: boolean;
}

export interface TabSink {
  deliver(d: Delivery): void;
  state(s: ConnectionState): void;
}

export interface Coordinator {
  start(n: Needs): void;
  update(n: Needs): void;
  /** The page is going away (maybe into the back/forward cache). */
  pagehide(): void;
  close(): void;
}

export interface TabsConfig {
  /** Lock and channel name suffix: one per server. */
  key: string;
  announceMs: number;
  expireMs: number;
  /** The leader posts its state at least this often, ms. */
  aliveMs: number;
  leaderTimeoutMs: number;
}

export function tabsDefaults(key: string, heartbeatMs: number): TabsConfig {
  return { key, announceMs: 30_000, expireMs: 150_000, aliveMs: heartbeatMs, leaderTimeoutMs: 3 * heartbeatMs };
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

/** This tab runs its own connection. */
export class Solo implements Coordinator {
  private engine: Engine | null = null;

  constructor(
    private readonly env: LiveEnv,
    private readonly cfg: EngineConfig,
    private readonly sink: TabSink,
  ) {}

  start(n: Needs): void {
    this.engine = new Engine(this.env, this.cfg, this.sink, {
      cursor: null,
      pending: [],
      patterns: n.patterns,
      plain: n.plain,
      hidden: n.hidden,
      reconnects: 0,
      lastMessageAt: null,
    });
    this.engine.start();
  }

  update(n: Needs): void {
    this.engine?.setPatterns(n.patterns, n.plain);
    this.engine?.setHidden(n.hidden);
  }

  pagehide(): void {}

  close(): void {
    this.engine?.stop();
    this.engine = null;
  }
}

type Msg =
  | { t: "hello"; from: string; needs: Needs }
  | { t: "bye"; from: string }
  | { t: "leader"; from: string }
  | { t: "sync"; from: string; to: string; cursor: string | null; pending: PendingFill[]; state: ConnectionState | null }
  | { t: "d"; from: string; d: Delivery }
  | { t: "state"; from: string; s: ConnectionState };

/** Tabs share one connection; this tab leads or follows. */
export class Shared implements Coordinator {
  private readonly channel: ChannelLike;
  private readonly lockName: string;
  private readonly id: string;
  private tabs = new Map<string, { needs: Needs; seen: number }>();
  private own: Needs = { patterns: [], plain: [], hidden: false };
  private engine: Engine | null = null;
  private leaderTab: string | null = null;
  private leaderSilent = false;
  private cursor: string | null = null;
  private pending = new Map<string, PendingFill>();
  private lastState: ConnectionState | null = null;
  private lockSeq = 0;
  private lockReq = 0;
  private lockAbort: AbortController | null = null;
  private releaseLock: (() => void) | null = null;
  private announceTimer: unknown = null;
  private aliveTimer: unknown = null;
  private readonly leaderWatch: Watchdog;
  private closed = false;

  constructor(
    private readonly env: LiveEnv,
    private readonly cfg: EngineConfig,
    private readonly tcfg: TabsConfig,
    private readonly sink: TabSink,
    private readonly locks: LockManagerLike & { close?(): void },
  ) {
    this.id = env.tabId;
    this.lockName = `telegauge-live:${tcfg.key}`;
    this.channel = new env.BroadcastChannel!(`telegauge-live:${tcfg.key}`);
    this.channel.onmessage = (ev) => this.onMessage(ev.data as Msg);
    this.leaderWatch = new Watchdog(env.timers, tcfg.leaderTimeoutMs, () => this.onLeaderSilent());
  }

  get isLeader(): boolean {
    return this.engine !== null;
  }

  start(n: Needs): void {
    this.own = n;
    this.post({ t: "hello", from: this.id, needs: n });
    this.scheduleAnnounce();
    this.leaderWatch.kick();
    this.requestLock(false);
  }

  update(n: Needs): void {
    const hiddenChanged = n.hidden !== this.own.hidden;
    this.own = n;
    this.post({ t: "hello", from: this.id, needs: n });
    if (this.engine) this.refresh();
    else if (hiddenChanged && !n.hidden && this.leaderSilent) this.steal();
  }

  pagehide(): void {
    this.post({ t: "bye", from: this.id });
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.post({ t: "bye", from: this.id });
    this.demote();
    this.lockAbort?.abort();
    this.leaderWatch.stop();
    this.clearTimer("announceTimer");
    this.channel.onmessage = null;
    this.channel.close();
    this.locks.close?.();
  }

  private post(m: Msg): void {
    if (this.closed && m.t !== "bye") return;
    try {
      this.channel.postMessage(m);
    } catch (err) {
      this.env.warn("BroadcastChannel post failed", err);
    }
  }

  private union(): { patterns: string[]; plain: string[]; hidden: boolean } {
    const patterns = new Set(this.own.patterns);
    const plain = new Set(this.own.plain);
    let hidden = this.own.hidden;
    for (const t of this.tabs.values()) {
      for (const p of t.needs.patterns) patterns.add(p);
      for (const p of t.needs.plain) plain.add(p);
      hidden &&= t.needs.hidden;
    }
    return { patterns: [...patterns].sort(), plain: [...plain].sort(), hidden };
  }

  private refresh(): void {
    if (!this.engine) return;
    const u = this.union();
    this.engine.setPatterns(u.patterns, u.plain);
    this.engine.setHidden(u.hidden);
  }

  private onMessage(m: Msg): void {
    if (this.closed || !m || typeof m !== "object" || m.from === this.id) return;
    const now = this.env.timers.now();
    switch (m.t) {
      case "hello": {
        const known = this.tabs.has(m.from);
        this.tabs.set(m.from, { needs: m.needs, seen: now });
        if (this.engine) {
          if (!known) {
            this.post({ t: "sync", from: this.id, to: m.from, cursor: this.cursor, pending: [...this.pending.values()], state: this.lastState });
          }
          this.refresh();
        }
        return;
      }
      case "bye":
        if (this.tabs.delete(m.from)) this.refresh();
        return;
      case "leader":
        this.leaderTab = m.from;
        this.heard();
        // Make sure the new leader has our needs.
        this.post({ t: "hello", from: this.id, needs: this.own });
        return;
      case "sync":
        if (m.to !== this.id || this.engine) return;
        this.leaderTab = m.from;
        if (m.cursor) this.cursor = m.cursor;
        for (const f of m.pending) this.pending.set(f.id, f);
        if (m.state) this.follow(m.state);
        this.heard();
        return;
      case "d":
        if (this.engine || !this.fromLeader(m.from)) return;
        this.track(m.d);
        this.heard();
        this.sink.deliver(m.d);
        return;
      case "state":
        if (this.engine || !this.fromLeader(m.from)) return;
        this.heard();
        this.follow(m.s);
        return;
    }
  }

  private fromLeader(from: string): boolean {
    if (this.leaderTab === null) this.leaderTab = from;
    return this.leaderTab === from;
  }

  private heard(): void {
    this.leaderWatch.kick();
    if (this.leaderSilent) {
      this.leaderSilent = false;
      if (this.lastState) this.follow(this.lastState);
    }
  }

  private follow(s: ConnectionState): void {
    this.lastState = s;
    this.sink.state({ ...s, leader: false, stale: s.stale || this.leaderSilent });
  }

  private onLeaderSilent(): void {
    if (this.engine || this.closed) return;
    this.leaderSilent = true;
    this.sink.state({ ...(this.lastState ?? INITIAL), leader: false, stale: true });
    if (!this.own.hidden) this.steal();
  }

  // Keeps what a successor needs: the newest cursor, pending backfills.
  private track(d: Delivery): void {
    switch (d.k) {
      case "points":
      case "reset":
        if (d.cursor) this.cursor = d.cursor;
        break;
      case "cursor":
        this.cursor = d.cursor;
        break;
      case "fill":
        if (d.cursor) this.cursor = d.cursor;
        this.pending.set(d.fill.id, d.fill);
        break;
      case "filled":
        this.pending.delete(d.id);
        break;
      case "presence":
        break;
    }
  }

  private requestLock(steal: boolean): void {
    const locks = this.locks;
    const id = ++this.lockSeq;
    this.lockReq = id;
    const old = this.lockAbort;
    const ctrl = !steal && typeof AbortController === "function" ? new AbortController() : null;
    this.lockAbort = ctrl;
    old?.abort();
    const opts = steal ? { steal: true } : ctrl ? { signal: ctrl.signal } : {};
    locks
      .request(this.lockName, opts, () => {
        if (this.closed || this.lockReq !== id) return Promise.resolve();
        return new Promise<void>((release) => {
          this.releaseLock = release;
          this.lead();
        });
      })
      .then(
        () => {
          // Released by us (close, or demoted).
        },
        () => {
          // Aborted (superseded by a steal of ours) or stolen from us.
          if (this.lockReq !== id) return;
          this.demote();
          if (!this.closed) this.requestLock(false);
        },
      );
  }

  private steal(): void {
    if (this.closed || this.engine) return;
    this.env.warn("the leader tab is silent: taking over the live connection");
    this.requestLock(true);
  }

  private lead(): void {
    this.leaderTab = this.id;
    this.leaderSilent = false;
    this.leaderWatch.stop();
    const u = this.union();
    const out = {
      deliver: (d: Delivery) => {
        this.track(d);
        this.sink.deliver(d);
        this.post({ t: "d", from: this.id, d });
      },
      state: (s: ConnectionState) => {
        this.lastState = s;
        this.sink.state(s);
        this.post({ t: "state", from: this.id, s });
      },
    };
    this.post({ t: "leader", from: this.id });
    this.engine = new Engine(this.env, this.cfg, out, {
      cursor: this.cursor,
      pending: [...this.pending.values()],
      patterns: u.patterns,
      plain: u.plain,
      hidden: u.hidden,
      reconnects: this.lastState?.reconnects ?? 0,
      lastMessageAt: this.lastState?.lastHeartbeat ?? null,
    });
    this.engine.start();
    this.scheduleAlive();
  }

  private demote(): void {
    const e = this.engine;
    this.engine = null;
    this.clearTimer("aliveTimer");
    e?.stop();
    const r = this.releaseLock;
    this.releaseLock = null;
    r?.();
    if (e && !this.closed) {
      this.leaderTab = null;
      this.leaderWatch.kick();
      if (this.lastState) this.follow(this.lastState);
    }
  }

  private scheduleAnnounce(): void {
    this.announceTimer = this.env.timers.setTimeout(() => {
      this.announceTimer = null;
      if (this.closed) return;
      this.post({ t: "hello", from: this.id, needs: this.own });
      const floor = this.env.timers.now() - this.tcfg.expireMs;
      let changed = false;
      for (const [k, t] of this.tabs) {
        if (t.seen < floor) {
          this.tabs.delete(k);
          changed = true;
        }
      }
      if (changed) this.refresh();
      this.scheduleAnnounce();
    }, this.tcfg.announceMs);
  }

  private scheduleAlive(): void {
    this.aliveTimer = this.env.timers.setTimeout(() => {
      this.aliveTimer = null;
      if (!this.engine) return;
      this.post({ t: "state", from: this.id, s: this.engine.state() });
      this.scheduleAlive();
    }, this.tcfg.aliveMs);
  }

  private clearTimer(k: "announceTimer" | "aliveTimer"): void {
    if (this[k] !== null) this.env.timers.clearTimeout(this[k]);
    this[k] = null;
  }
}
