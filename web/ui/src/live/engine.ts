// The leader's side: the one live connection of this browser, what it
// receives turned into deliveries for every tab, and the backfills that
// gaps and resets call for.

import { Backfiller, backfillDefaults, HttpError, type BackfillConfig } from "./backfill";
import { Backoff } from "./backoff";
import { Connection, type ConnectionConfig, type ConnState } from "./connection";
import type { LiveEnv } from "./env";
import type { ServerEvent } from "./protocol";
import type { ConnectionState, Point, Presence } from "./types";

/** A pending backfill: a gap's range, or after a reset the time since the
 *  last message (for subscriptions that have no reset handler). */
export interface PendingFill {
  id: string;
  kind: "gap" | "reset";
  from: number;
  to: number;
  patterns: string[];
}

/** What the leader tells every tab (the same objects go over the
 *  BroadcastChannel). cursor, where present, is the newest cursor after
 *  this delivery: a tab that takes over resumes from it. */
export type Delivery =
  | { k: "points"; points: Point[]; cursor: string | null; fill?: string }
  | { k: "presence"; p: Presence }
  | { k: "cursor"; cursor: string }
  | { k: "reset"; cursor: string | null }
  | { k: "fill"; fill: PendingFill; cursor: string | null }
  | { k: "filled"; id: string };

export interface EngineConfig {
  conn: ConnectionConfig;
  fill: BackfillConfig;
  /** A reset backfill starts this long before the last message, ms (late
   *  readings, clock differences). */
  resetMarginMs: number;
  /** ... and looks back at most this far, ms. */
  resetMaxLookbackMs: number;
  /** Points per delivery of a backfill. */
  fillBatch: number;
  /** lastHeartbeat / latency-only state changes are told at most this
   *  often, ms. */
  stateEveryMs: number;
}

export function engineDefaults(base: string, conn: ConnectionConfig): EngineConfig {
  return {
    conn,
    fill: { base, ...backfillDefaults },
    resetMarginMs: 30_000,
    resetMaxLookbackMs: 24 * 3_600_000,
    fillBatch: 5000,
    stateEveryMs: 1000,
  };
}

export interface EngineInit {
  cursor: string | null;
  pending: PendingFill[];
  /** Every tab's patterns. */
  patterns: string[];
  /** Patterns of subscriptions without a reset handler (reset backfills). */
  plain: string[];
  hidden: boolean;
  reconnects: number;
  lastMessageAt: number | null;
}

export interface EngineOut {
  deliver(d: Delivery): void;
  state(s: ConnectionState): void;
}

export class Engine {
  private readonly conn: Connection;
  private readonly backfiller: Backfiller;
  private readonly fillBackoff: Backoff;
  private queue: PendingFill[];
  private filling = false;
  private fillTimer: unknown = null;
  private wake: (() => void) | null = null;
  private abort: AbortController | null = null;
  private latencyMs: number | null = null;
  private patterns: string[];
  private plain: string[];
  private seq = 0;
  private stopped = false;
  private st: ConnectionState;
  private lastEmit = -Infinity;
  private emitTimer: unknown = null;
  private unlisten: () => void = () => {};

  constructor(
    private readonly env: LiveEnv,
    private readonly cfg: EngineConfig,
    private readonly out: EngineOut,
    init: EngineInit,
  ) {
    this.queue = [...init.pending];
    this.patterns = [...init.patterns];
    this.plain = [...init.plain];
    this.backfiller = new Backfiller(env, cfg.fill);
    this.fillBackoff = new Backoff(env.random, cfg.conn.backoffBaseMs, cfg.conn.backoffCapMs);
    this.conn = new Connection(env, cfg.conn, {
      event: (ev, since) => this.onEvent(ev, since),
      state: () => this.pushState(),
    }, { cursor: init.cursor, hidden: init.hidden, reconnects: init.reconnects, patterns: init.patterns, lastMessageAt: init.lastMessageAt });
    this.st = this.compose();
  }

  start(): void {
    this.unlisten = this.env.page.on("online", () => this.kickFills());
    this.conn.start();
    this.pushState(true);
    void this.pump();
  }

  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.unlisten();
    this.conn.stop();
    this.abort?.abort();
    this.kickFills();
    if (this.emitTimer !== null) this.env.timers.clearTimeout(this.emitTimer);
  }

  setPatterns(patterns: string[], plain: string[]): void {
    this.patterns = [...patterns];
    this.plain = [...plain];
    this.conn.setPatterns(patterns);
  }

  setHidden(h: boolean): void {
    this.conn.setHidden(h);
  }

  get cursor(): string | null {
    return this.conn.cursor;
  }

  state(): ConnectionState {
    return this.st;
  }

  private onEvent(ev: ServerEvent, since: number | null): void {
    const cursor = this.conn.cursor;
    const now = this.env.timers.now();
    switch (ev.type) {
      case "points":
        if (ev.points.length > 0) {
          let newest = -Infinity;
          for (const p of ev.points) if (p.t > newest) newest = p.t;
          this.latencyMs = Math.max(0, now - newest);
          this.out.deliver({ k: "points", points: ev.points, cursor });
          this.pushState();
        } else if (cursor) this.out.deliver({ k: "cursor", cursor });
        break;
      case "subscribed":
      case "heartbeat":
        if (cursor) this.out.deliver({ k: "cursor", cursor });
        break;
      case "presence":
        this.out.deliver({ k: "presence", p: ev.presence });
        break;
      case "gap":
        this.enqueue({ id: this.nextId(), kind: "gap", from: ev.from, to: ev.to, patterns: [...this.patterns] }, cursor);
        break;
      case "reset":
        this.out.deliver({ k: "reset", cursor });
        if (this.plain.length > 0) {
          const from = Math.max((since ?? now) - this.cfg.resetMarginMs, now - this.cfg.resetMaxLookbackMs);
          this.enqueue({ id: this.nextId(), kind: "reset", from, to: now + this.cfg.resetMarginMs, patterns: [...this.plain] }, cursor);
        }
        break;
      case "error":
        break;
    }
  }

  private nextId(): string {
    return `${this.env.tabId}:${this.env.timers.now()}:${++this.seq}`;
  }

  private enqueue(f: PendingFill, cursor: string | null): void {
    this.out.deliver({ k: "fill", fill: f, cursor });
    this.queue.push(f);
    this.pushState(true);
    void this.pump();
  }

  private kickFills(): void {
    if (this.fillTimer !== null) this.env.timers.clearTimeout(this.fillTimer);
    this.fillTimer = null;
    const w = this.wake;
    this.wake = null;
    w?.();
  }

  // Runs the pending backfills one at a time, retrying with backoff.
  private async pump(): Promise<void> {
    if (this.filling) return;
    this.filling = true;
    try {
      while (!this.stopped && this.queue.length > 0) {
        const f = this.queue[0];
        this.abort = typeof AbortController === "function" ? new AbortController() : null;
        try {
          const pts = await this.backfiller.run(f, this.abort?.signal);
          if (this.stopped) return;
          for (let i = 0; i < pts.length; i += this.cfg.fillBatch) {
            this.out.deliver({ k: "points", points: pts.slice(i, i + this.cfg.fillBatch), cursor: null, fill: f.id });
          }
          this.done(f);
          this.fillBackoff.reset();
        } catch (err) {
          if (this.stopped) return;
          if (err instanceof HttpError && err.permanent) {
            // Asking again will not help: say so rather than drop it silently.
            this.env.warn(`backfill of ${new Date(f.from).toISOString()}..${new Date(f.to).toISOString()} failed for good`, err);
            this.done(f);
            continue;
          }
          await new Promise<void>((resolve) => {
            this.wake = resolve;
            this.fillTimer = this.env.timers.setTimeout(() => {
              this.fillTimer = null;
              this.wake = null;
              resolve();
            }, this.fillBackoff.next());
          });
        }
      }
    } finally {
      this.filling = false;
      this.abort = null;
    }
  }

  private done(f: PendingFill): void {
    this.queue = this.queue.filter((x) => x.id !== f.id);
    this.out.deliver({ k: "filled", id: f.id });
    this.pushState(true);
  }

  private compose(): ConnectionState {
    const c: ConnState = this.conn.state();
    return {
      status: c.status,
      transport: c.transport,
      lastHeartbeat: c.lastHeartbeat,
      latencyMs: this.latencyMs,
      reconnects: c.reconnects,
      leader: true,
      // Missing readings: not live, silent too long, or a backfill pending.
      stale: c.status !== "live" || c.stale || this.queue.length > 0,
    };
  }

  // Tells the state; changes of lastHeartbeat or latency alone at most
  // every stateEveryMs (the badge needs no more; a busy stream would
  // otherwise post one state per frame to every tab).
  private pushState(force = false): void {
    if (this.stopped) return;
    const next = this.compose();
    const prev = this.st;
    const major =
      next.status !== prev.status ||
      next.transport !== prev.transport ||
      next.reconnects !== prev.reconnects ||
      next.stale !== prev.stale;
    const minor = next.lastHeartbeat !== prev.lastHeartbeat || next.latencyMs !== prev.latencyMs;
    if (!major && !minor && !force) return;
    const now = this.env.timers.now();
    if (!major && !force && now - this.lastEmit < this.cfg.stateEveryMs) {
      if (this.emitTimer === null) {
        this.emitTimer = this.env.timers.setTimeout(() => {
          this.emitTimer = null;
          this.pushState(true);
        }, this.cfg.stateEveryMs - (now - this.lastEmit));
      }
      return;
    }
    if (this.emitTimer !== null) this.env.timers.clearTimeout(this.emitTimer);
    this.emitTimer = null;
    this.st = next;
    this.lastEmit = now;
    this.out.state(next);
  }
}
