// An exclusive lock between the tabs of an origin over BroadcastChannel,
// with leases: the navigator.locks subset tabs.ts uses, for pages where the
// Web Locks API is missing (insecure contexts such as a dashboard served
// over plain HTTP on a LAN, older browsers).
//
// - The holder posts a lease every renewMs, valid for leaseMs (visible) or
//   hiddenLeaseMs (hidden: background timers may run once a minute).
// - A tab that wants the lock asks who holds it, and claims it when no lease
//   is valid (the holder released it, or stopped renewing: closed, crashed,
//   frozen). A claim carries an epoch one above the highest seen; after
//   settleMs without a better claim (higher epoch, or same epoch and smaller
//   tab id) the claimer holds the lock.
// - Any holder that sees a better claim or lease gives the lock up (its
//   request() rejects with AbortError, as a stolen Web Lock does): two
//   holders cannot last longer than one message round.
// - steal claims at once, without waiting for the lease to run out.

import type { ChannelLike, LiveEnv, LockManagerLike } from "./env";

export interface LeaseLockOptions {
  leaseMs: number;
  hiddenLeaseMs: number;
  renewMs: number;
  settleMs: number;
}

export const leaseLockDefaults: LeaseLockOptions = {
  leaseMs: 10_000,
  hiddenLeaseMs: 150_000,
  renewMs: 3_000,
  settleMs: 250,
};

type LockMsg =
  | { t: "who"; from: string }
  | { t: "lease"; from: string; epoch: number; ttl: number }
  | { t: "claim"; from: string; epoch: number }
  | { t: "release"; from: string; epoch: number };

interface Req {
  cb: (lock: unknown) => Promise<unknown>;
  resolve: (v: unknown) => void;
  reject: (e: unknown) => void;
  state: "waiting" | "claiming" | "held" | "done";
  epoch: number;
  steal: boolean;
}

const abortError = () => Object.assign(new Error("lock request aborted"), { name: "AbortError" });

class NamedLock {
  private readonly ch: ChannelLike;
  private lease: { from: string; epoch: number; until: number } | null = null;
  private maxEpoch = 0;
  private queue: Req[] = [];
  private timer: unknown = null;
  private renewTimer: unknown = null;
  private asked = false;
  private away = false;
  private closed = false;
  private unlisten: (() => void)[] = [];

  constructor(
    private readonly env: LiveEnv,
    private readonly name: string,
    private readonly o: LeaseLockOptions,
  ) {
    this.ch = new env.BroadcastChannel!(`telegauge-lock:${name}`);
    this.ch.onmessage = (ev) => this.onMessage(ev.data as LockMsg);
    this.unlisten.push(
      env.page.on("pagehide", () => this.pagehide()),
      env.page.on("pageshow", () => this.pageshow()),
    );
  }

  request(opts: { steal?: boolean; signal?: AbortSignal }, cb: (lock: unknown) => Promise<unknown>): Promise<unknown> {
    return new Promise((resolve, reject) => {
      if (opts.signal?.aborted) return reject(abortError());
      const r: Req = { cb, resolve, reject, state: "waiting", epoch: 0, steal: !!opts.steal };
      opts.signal?.addEventListener("abort", () => {
        if (r.state !== "waiting" && r.state !== "claiming") return;
        r.state = "done";
        this.queue = this.queue.filter((x) => x !== r);
        reject(abortError());
        this.next();
      });
      if (r.steal) this.queue.unshift(r);
      else this.queue.push(r);
      this.next();
    });
  }

  private get head(): Req | undefined {
    return this.queue[0];
  }

  private now(): number {
    return this.env.timers.now();
  }

  private post(m: LockMsg): void {
    try {
      this.ch.postMessage(m);
    } catch {
      // Closed: nothing to tell.
    }
  }

  private free(): boolean {
    return !this.lease || this.now() >= this.lease.until;
  }

  // Moves the head request on: claim when the lock looks free.
  private next(): void {
    const r = this.head;
    if (!r || r.state !== "waiting" || this.away || this.closed) return;
    if (!this.asked) {
      // Find out about a holder before claiming anything.
      this.asked = true;
      this.post({ t: "who", from: this.env.tabId });
      this.wait(this.o.settleMs);
      return;
    }
    if (r.steal || this.free()) this.claim(r);
    else this.wait(Math.max(0, Math.min(this.lease!.until - this.now(), this.o.renewMs)));
  }

  private wait(ms: number): void {
    this.clearTimer();
    this.timer = this.env.timers.setTimeout(() => {
      this.timer = null;
      this.next();
    }, ms);
  }

  private clearTimer(): void {
    if (this.timer !== null) this.env.timers.clearTimeout(this.timer);
    this.timer = null;
  }

  private claim(r: Req): void {
    r.state = "claiming";
    r.epoch = ++this.maxEpoch;
    this.post({ t: "claim", from: this.env.tabId, epoch: r.epoch });
    this.clearTimer();
    this.timer = this.env.timers.setTimeout(() => {
      this.timer = null;
      if (r.state === "claiming") this.hold(r);
    }, this.o.settleMs);
  }

  private hold(r: Req): void {
    if (this.away || this.closed) {
      r.state = "waiting";
      return;
    }
    r.state = "held";
    this.lease = null;
    this.renew(r);
    Promise.resolve()
      .then(() => r.cb({ name: this.name }))
      .then(
        (v) => this.finish(r, () => r.resolve(v)),
        (e) => this.finish(r, () => r.reject(e)),
      );
  }

  private renew(r: Req): void {
    if (r.state !== "held" || this.closed) return;
    const ttl = this.env.page.hidden() ? this.o.hiddenLeaseMs : this.o.leaseMs;
    this.post({ t: "lease", from: this.env.tabId, epoch: r.epoch, ttl });
    this.renewTimer = this.env.timers.setTimeout(() => this.renew(r), this.o.renewMs);
  }

  private stopRenew(): void {
    if (this.renewTimer !== null) this.env.timers.clearTimeout(this.renewTimer);
    this.renewTimer = null;
  }

  // The callback settled: release.
  private finish(r: Req, settle: () => void): void {
    if (r.state !== "held") return;
    r.state = "done";
    this.stopRenew();
    this.post({ t: "release", from: this.env.tabId, epoch: r.epoch });
    this.queue = this.queue.filter((x) => x !== r);
    settle();
    this.next();
  }

  // Someone better holds it now.
  private lose(r: Req): void {
    r.state = "done";
    this.stopRenew();
    this.queue = this.queue.filter((x) => x !== r);
    r.reject(abortError());
    this.next();
  }

  private beats(epoch: number, from: string, mine: number): boolean {
    return epoch > mine || (epoch === mine && from < this.env.tabId);
  }

  private onMessage(m: LockMsg): void {
    if (this.closed || !m || typeof m !== "object" || m.from === this.env.tabId) return;
    const r = this.head;
    switch (m.t) {
      case "who":
        if (r?.state === "held") this.reassert(r);
        return;
      case "lease":
      case "claim": {
        this.maxEpoch = Math.max(this.maxEpoch, m.epoch);
        if (r?.state === "held") {
          if (!this.beats(m.epoch, m.from, r.epoch)) {
            this.reassert(r); // ours stands: say so at once
            return;
          }
          this.lose(r);
        } else if (r?.state === "claiming") {
          // A lease during a claim shows a live holder (unless stealing).
          const alive = m.t === "lease" && !r.steal;
          if (!alive && !this.beats(m.epoch, m.from, r.epoch)) return;
          r.state = "waiting";
          r.steal = false;
          this.clearTimer();
        }
        if (m.t === "lease") this.lease = { from: m.from, epoch: m.epoch, until: this.now() + m.ttl };
        else if (this.free()) this.lease = { from: m.from, epoch: m.epoch, until: this.now() + this.o.leaseMs };
        if (this.head?.state === "waiting") this.wait(this.o.settleMs);
        return;
      }
      case "release":
        if (this.lease?.from === m.from) this.lease = null;
        if (this.head?.state === "waiting") this.next();
        return;
    }
  }

  private reassert(r: Req): void {
    this.stopRenew();
    this.renew(r);
  }

  // The page is going away (maybe into the back/forward cache): let the
  // others have the lock now rather than after the lease, and claim nothing
  // until the page is shown again.
  private pagehide(): void {
    this.away = true;
    this.clearTimer();
    const r = this.head;
    if (r?.state === "held") {
      this.post({ t: "release", from: this.env.tabId, epoch: r.epoch });
      this.lose(r);
    } else if (r?.state === "claiming") {
      r.state = "waiting";
    }
  }

  private pageshow(): void {
    if (!this.away) return;
    this.away = false;
    this.asked = false;
    this.next();
  }

  close(): void {
    this.closed = true;
    this.clearTimer();
    this.stopRenew();
    for (const u of this.unlisten) u();
    const r = this.head;
    if (r?.state === "held") this.post({ t: "release", from: this.env.tabId, epoch: r.epoch });
    for (const q of this.queue) q.state = "done";
    this.queue = [];
    this.ch.onmessage = null;
    this.ch.close();
  }
}

/** navigator.locks (exclusive request, steal, signal) over BroadcastChannel. */
export class LeaseLocks implements LockManagerLike {
  private locks = new Map<string, NamedLock>();

  constructor(
    private readonly env: LiveEnv,
    private readonly o: LeaseLockOptions = leaseLockDefaults,
  ) {}

  request(name: string, options: { steal?: boolean; signal?: AbortSignal }, cb: (lock: unknown) => Promise<unknown>): Promise<unknown> {
    let l = this.locks.get(name);
    if (!l) {
      l = new NamedLock(this.env, name, this.o);
      this.locks.set(name, l);
    }
    return l.request(options, cb);
  }

  /** Lets go of everything (the Live is closed). */
  close(): void {
    for (const l of this.locks.values()) l.close();
    this.locks.clear();
  }
}
