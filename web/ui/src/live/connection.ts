// One live connection to the server, kept up: transport negotiation with
// fallback, the heartbeat watchdog, reconnection with backoff, resumption
// from the last cursor, the hidden-tab frame rate, and the browser's
// online/offline signals. Only the leader tab runs one (see tabs.ts).
//
// Negotiation. Transports are tried in order (WebSocket, SSE, long poll,
// short poll), starting from the one remembered for this origin. An attempt
// proves its transport with the first event it receives (WebSocket:
// "subscribed"; SSE: the named "subscribed" event the stream starts with;
// polls: the first answer, which is immediate). An attempt that fails or
// times out before that (an upgrade refused, a proxy that buffers the
// stream) moves on to the next transport at once; when every transport has
// failed, the next round waits a backoff delay. A connection lost after it
// was proven is retried on the same transport after a backoff delay, unless
// it keeps dying young (maxStrikes times before healthyMs), which moves it
// down too. The transport that worked is remembered per origin for
// memoryTtlMs; when it is not the first choice, the first choices are
// probed again after that long, resuming by cursor so nothing is lost.

import { Backoff } from "./backoff";
import type { LiveEnv } from "./env";
import { compact } from "./patterns";
import { TransportMemory, memoryKey } from "./memory";
import type { ServerEvent } from "./protocol";
import { available, openTransport, type TransportHandle, type TransportSink } from "./transports";
import type { Status, Transport } from "./types";
import { Watchdog } from "./watchdog";

export interface ConnectionConfig {
  base: string;
  transports: Transport[];
  heartbeatMs: number;
  hiddenRate: number;
  /** Handshake (WebSocket open, SSE response) deadline, ms. */
  connectTimeoutMs: number;
  /** After the handshake, the first event's deadline, ms: a stream that
   *  opens but stays silent is buffered by a proxy. */
  probeMs: number;
  backoffBaseMs: number;
  backoffCapMs: number;
  /** A connection up this long resets the backoff and the strikes, ms. */
  healthyMs: number;
  /** Connections lost before healthyMs in a row before falling back. */
  maxStrikes: number;
  memoryTtlMs: number;
  /** A tab hidden this long gets the hidden rate (quick switches do not
   *  reconnect), ms. Visible again takes effect at once. */
  hiddenDelayMs: number;
  longPollWaitMs: number;
  pollIntervalMs: number;
  requestGraceMs: number;
}

export function connectionDefaults(heartbeatMs: number): Omit<ConnectionConfig, "base" | "transports" | "heartbeatMs" | "hiddenRate"> {
  return {
    connectTimeoutMs: 10_000,
    probeMs: 5_000,
    backoffBaseMs: 1_000,
    backoffCapMs: 30_000,
    healthyMs: 30_000,
    maxStrikes: 3,
    memoryTtlMs: 10 * 60_000,
    hiddenDelayMs: 2_000,
    // The server caps wait at two heartbeat intervals (and 60 s).
    longPollWaitMs: Math.min(25_000, 2 * heartbeatMs),
    pollIntervalMs: 1_000,
    requestGraceMs: 10_000,
  };
}

export interface ConnState {
  status: Status;
  transport: Transport | null;
  lastHeartbeat: number | null;
  reconnects: number;
  stale: boolean;
}

export interface ConnectionListener {
  /** since: when the previous message arrived (before this one), or null. */
  event(ev: ServerEvent, since: number | null): void;
  state(s: ConnState): void;
}

export interface ConnectionInit {
  cursor?: string | null;
  hidden?: boolean;
  reconnects?: number;
  patterns?: string[];
  lastMessageAt?: number | null;
}

interface Attempt {
  token: number;
  idx: number;
  handle: TransportHandle | null;
  proven: boolean;
  provenAt: number;
  /** A switch we chose (rate, patterns, upgrade probe): the status stays. */
  planned: boolean;
}

export class Connection {
  private readonly order: Transport[];
  private readonly memory: TransportMemory;
  private readonly backoff: Backoff;
  private readonly watchdog: Watchdog;
  private readonly staleDog: Watchdog;
  private preferred = 0;
  private attempt: Attempt | null = null;
  private seq = 0;
  private retryTimer: unknown = null;
  private attemptTimer: unknown = null;
  private healthyTimer: unknown = null;
  private upgradeTimer: unknown = null;
  private hiddenTimer: unknown = null;
  private strikes = 0;
  private everLive = false;
  private patterns: string[] = [];
  private serverPatterns: string[] = [];
  private hidden: boolean;
  private started = false;
  private stopped = false;
  private unlisten: (() => void)[] = [];
  private lastMessageAt: number | null;
  private st: ConnState;
  cursor: string | null;

  constructor(
    private readonly env: LiveEnv,
    private readonly cfg: ConnectionConfig,
    private readonly listener: ConnectionListener,
    init: ConnectionInit = {},
  ) {
    this.order = cfg.transports.filter((t, i, a) => a.indexOf(t) === i && available(t, env));
    this.memory = new TransportMemory(env.storage, memoryKey(cfg.base), env.timers, cfg.memoryTtlMs);
    this.backoff = new Backoff(env.random, cfg.backoffBaseMs, cfg.backoffCapMs);
    this.watchdog = new Watchdog(env.timers, 2 * cfg.heartbeatMs, () => this.lost("no heartbeat (watchdog)"));
    this.staleDog = new Watchdog(env.timers, cfg.heartbeatMs, () => this.setState({ stale: true }));
    this.cursor = init.cursor ?? null;
    this.hidden = init.hidden ?? false;
    this.patterns = compact(init.patterns ?? []);
    this.lastMessageAt = init.lastMessageAt ?? null;
    this.st = { status: "connecting", transport: null, lastHeartbeat: this.lastMessageAt, reconnects: init.reconnects ?? 0, stale: true };
  }

  state(): ConnState {
    return this.st;
  }

  /** The transports this browser can use, in the order they are tried. */
  get transports(): readonly Transport[] {
    return this.order;
  }

  start(): void {
    if (this.started || this.stopped) return;
    this.started = true;
    const page = this.env.page;
    this.unlisten.push(page.on("online", () => this.online()), page.on("offline", () => this.offline()));
    const m = this.memory.get();
    const i = m ? this.order.indexOf(m.transport) : -1;
    this.preferred = i >= 0 ? i : 0;
    if (!page.online()) this.offline();
    else this.connect(this.preferred, false);
  }

  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.closeAttempt();
    this.clear("retryTimer");
    this.clear("hiddenTimer");
    for (const u of this.unlisten) u();
    this.unlisten = [];
  }

  /** The subscription: every tab's patterns. */
  setPatterns(list: Iterable<string>): void {
    const next = compact(list);
    if (same(next, this.patterns)) return;
    this.patterns = next;
    if (!this.started || this.stopped) return;
    if (next.length === 0) {
      this.closeAttempt();
      this.clear("retryTimer");
      return;
    }
    const a = this.attempt;
    if (a?.proven && a.handle?.updatePatterns) {
      const added = next.filter((p) => !this.serverPatterns.includes(p));
      const removed = this.serverPatterns.filter((p) => !next.includes(p));
      if (a.handle.updatePatterns(added, removed, this.cursor)) {
        this.serverPatterns = next;
        return;
      }
    }
    if (a) this.restart(a.idx);
    else if (this.retryTimer === null && this.st.status !== "offline") this.connect(this.preferred, false);
  }

  /** Whether every tab is hidden: ask for hiddenRate frames per second. */
  setHidden(h: boolean): void {
    if (h && this.hiddenTimer !== null) return; // already on its way
    this.clear("hiddenTimer");
    if (h === this.hidden) return;
    if (h) this.hiddenTimer = this.env.timers.setTimeout(() => {
      this.hiddenTimer = null;
      this.applyHidden(true);
    }, this.cfg.hiddenDelayMs);
    else this.applyHidden(false);
  }

  /** The frame rate asked for now (null: every frame). */
  get rate(): number | null {
    return this.hidden ? this.cfg.hiddenRate : null;
  }

  private applyHidden(h: boolean): void {
    this.hidden = h;
    const a = this.attempt;
    if (!a || this.stopped) return;
    if (a.proven && a.handle?.setRate?.(this.rate)) {
      this.armWatchdogs(this.order[a.idx]);
      return;
    }
    this.restart(a.idx);
  }

  private connect(idx: number, planned: boolean): void {
    this.clear("retryTimer");
    if (this.stopped || this.patterns.length === 0) return;
    if (!this.env.page.online()) {
      this.offline();
      return;
    }
    if (this.order.length === 0) {
      this.env.warn("no usable transport in this browser");
      this.setState({ status: "reconnecting", stale: true });
      return;
    }
    this.open(Math.min(idx, this.order.length - 1), planned);
  }

  // A switch we chose: reopen from idx, resuming from the cursor.
  private restart(idx: number): void {
    const a = this.attempt;
    const planned = a ? a.proven || a.planned : false;
    this.closeAttempt();
    this.connect(idx, planned);
  }

  private open(idx: number, planned: boolean): void {
    const token = ++this.seq;
    const t = this.order[idx];
    const a: Attempt = { token, idx, handle: null, proven: false, provenAt: 0, planned };
    this.attempt = a;
    this.serverPatterns = this.patterns;
    if (planned) this.setState({ transport: t });
    else this.setState({ transport: t, status: this.everLive || this.st.reconnects > 0 ? "reconnecting" : "connecting", stale: true });
    this.attemptTimer = this.env.timers.setTimeout(() => this.failed(token, `${t}: no connection in time`), this.cfg.connectTimeoutMs);
    const sink: TransportSink = {
      opened: () => {
        if (this.attempt?.token !== token || a.proven) return;
        // Open but silent: buffered by a proxy, or not our server.
        this.clear("attemptTimer");
        this.attemptTimer = this.env.timers.setTimeout(() => this.failed(token, `${t}: opened, but no event in time (buffered?)`), this.cfg.probeMs);
      },
      event: (ev) => {
        if (this.attempt?.token === token) this.onEvent(ev);
      },
      fail: (reason, status) => this.failed(token, reason, status),
    };
    a.handle = openTransport(t, this.env, {
      base: this.cfg.base,
      patterns: this.patterns,
      cursor: this.cursor,
      rate: this.rate,
      longPollWaitMs: this.cfg.longPollWaitMs,
      pollIntervalMs: this.cfg.pollIntervalMs,
      requestGraceMs: this.cfg.requestGraceMs,
    }, sink);
  }

  private onEvent(ev: ServerEvent): void {
    const a = this.attempt!;
    const now = this.env.timers.now();
    const since = this.lastMessageAt;
    this.lastMessageAt = now;
    if (!a.proven) this.proven(a);
    this.watchdog.kick();
    this.staleDog.kick();
    if ("cursor" in ev && ev.cursor) this.cursor = ev.cursor;
    this.setState({ lastHeartbeat: now, stale: false });
    if (ev.type === "error") this.env.warn(`server: ${ev.message}`);
    this.listener.event(ev, since);
  }

  private proven(a: Attempt): void {
    this.clear("attemptTimer");
    a.proven = true;
    a.provenAt = this.env.timers.now();
    this.everLive = true;
    const t = this.order[a.idx];
    this.preferred = a.idx;
    this.clear("upgradeTimer");
    if (a.idx === 0) this.memory.clear();
    else {
      // A transport found by falling back is remembered for memoryTtlMs;
      // one started from memory keeps the expiry it has, so that reloads
      // do not keep a stale finding alive.
      const old = this.memory.get();
      const m = old?.transport === t ? old : this.memory.set(t);
      this.upgradeTimer = this.env.timers.setTimeout(() => this.upgrade(), m.until - this.env.timers.now());
    }
    this.clear("healthyTimer");
    this.healthyTimer = this.env.timers.setTimeout(() => {
      this.healthyTimer = null;
      this.backoff.reset();
      this.strikes = 0;
    }, this.cfg.healthyMs);
    this.armWatchdogs(t);
    this.setState({ status: "live", transport: t, stale: false });
  }

  private armWatchdogs(t: Transport): void {
    const c = this.cfg;
    const paced = this.rate ? 1000 / this.rate : 0;
    let dead: number;
    let stale: number;
    switch (t) {
      case "ws":
      case "sse":
        // The server sends a heartbeat when nothing else was sent for one
        // interval: two intervals of silence is a dead connection (or a
        // proxy that started buffering).
        dead = 2 * c.heartbeatMs;
        stale = 1.5 * c.heartbeatMs;
        break;
      case "longpoll":
        dead = c.longPollWaitMs + c.requestGraceMs + paced + 1000;
        stale = c.longPollWaitMs + 5000 + paced;
        break;
      case "poll":
        dead = Math.max(c.pollIntervalMs, paced) + c.requestGraceMs + 1000;
        stale = Math.max(c.pollIntervalMs, paced) + 5000;
        break;
    }
    this.watchdog.kick(dead);
    this.staleDog.kick(stale);
  }

  private upgrade(): void {
    this.upgradeTimer = null;
    const a = this.attempt;
    if (!a?.proven || a.idx === 0 || this.stopped) return;
    const m = this.memory.get();
    if (m && this.order.indexOf(m.transport) === a.idx) {
      // Another page of this origin renewed the memory: wait for it.
      this.upgradeTimer = this.env.timers.setTimeout(() => this.upgrade(), m.until - this.env.timers.now());
      return;
    }
    this.restart(0);
  }

  private failed(token: number, reason: string, status?: number): void {
    const a = this.attempt;
    if (!a || a.token !== token || this.stopped) return;
    this.closeAttempt();
    if (status === 400 && this.cursor) {
      // The server does not take our cursor (another server version?):
      // start over from now, and have the history reloaded.
      this.env.warn(`${reason}: dropping the cursor`);
      this.cursor = null;
      this.listener.event({ type: "reset", cursor: null }, this.lastMessageAt);
    }
    if (!a.proven) {
      if (a.idx + 1 < this.order.length) {
        this.open(a.idx + 1, a.planned);
        return;
      }
      // A switch we chose found nothing that works: the connection we
      // closed for it is lost after all.
      if (a.planned) this.setState({ reconnects: this.st.reconnects + 1 });
      this.retry(reason);
      return;
    }
    this.setState({ reconnects: this.st.reconnects + 1 });
    if (this.env.timers.now() - a.provenAt < this.cfg.healthyMs) {
      this.strikes++;
      if (this.strikes >= this.cfg.maxStrikes && a.idx + 1 < this.order.length) {
        this.strikes = 0;
        this.preferred = a.idx + 1;
        this.memory.set(this.order[this.preferred]);
      }
    } else {
      this.strikes = 0;
    }
    this.retry(reason);
  }

  private lost(reason: string): void {
    const a = this.attempt;
    if (a) this.failed(a.token, reason);
  }

  private retry(_reason: string): void {
    this.setState({ status: "reconnecting", stale: true });
    if (!this.env.page.online()) {
      this.offline();
      return;
    }
    this.clear("retryTimer");
    this.retryTimer = this.env.timers.setTimeout(() => {
      this.retryTimer = null;
      this.connect(this.preferred, false);
    }, this.backoff.next());
  }

  private offline(): void {
    if (this.stopped) return;
    const a = this.attempt;
    if (a?.proven) this.setState({ reconnects: this.st.reconnects + 1 });
    this.closeAttempt();
    this.clear("retryTimer");
    this.setState({ status: "offline", stale: true });
  }

  private online(): void {
    if (this.stopped) return;
    if (this.attempt) return; // connecting or connected already
    this.backoff.reset();
    this.connect(this.preferred, false);
  }

  private closeAttempt(): void {
    const a = this.attempt;
    this.attempt = null;
    this.clear("attemptTimer");
    this.clear("healthyTimer");
    this.clear("upgradeTimer");
    this.watchdog.stop();
    this.staleDog.stop();
    a?.handle?.close();
  }

  private clear(k: "retryTimer" | "attemptTimer" | "healthyTimer" | "upgradeTimer" | "hiddenTimer"): void {
    if (this[k] !== null) this.env.timers.clearTimeout(this[k]);
    this[k] = null;
  }

  private setState(p: Partial<ConnState>): void {
    const next = { ...this.st, ...p };
    if (
      next.status === this.st.status &&
      next.transport === this.st.transport &&
      next.lastHeartbeat === this.st.lastHeartbeat &&
      next.reconnects === this.st.reconnects &&
      next.stale === this.st.stale
    ) return;
    this.st = next;
    this.listener.state(next);
  }
}

function same(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}
