import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { LeaseLocks } from "./leaselock";
import { World, type FakeTab } from "./testkit";

const tick = (ms: number) => vi.advanceTimersByTimeAsync(ms);

interface Contender {
  tab: FakeTab;
  locks: LeaseLocks;
  held: boolean;
  lost: number;
  release: () => void;
  request(steal?: boolean): void;
}

function contender(world: World, hidden = false): Contender {
  const tab = world.tab({ without: ["locks"], hidden });
  const locks = new LeaseLocks(tab.env);
  const c: Contender = {
    tab,
    locks,
    held: false,
    lost: 0,
    release: () => {},
    request(steal = false) {
      locks
        .request("L", steal ? { steal: true } : {}, () => {
          c.held = true;
          return new Promise<void>((res) => {
            c.release = () => {
              c.held = false;
              res();
            };
          });
        })
        .catch(() => {
          c.held = false;
          c.lost++;
        });
    },
  };
  return c;
}

describe("LeaseLocks", () => {
  beforeEach(() => void vi.useFakeTimers({ now: 1_700_000_000_000 }));
  afterEach(() => void vi.useRealTimers());

  it("grants the lock to one tab of many", async () => {
    const world = new World();
    const cs = [contender(world), contender(world), contender(world)];
    for (const c of cs) c.request();
    await tick(2_000);
    expect(cs.filter((c) => c.held)).toHaveLength(1);
    await tick(60_000);
    expect(cs.filter((c) => c.held)).toHaveLength(1);
    expect(cs.map((c) => c.lost)).toEqual([0, 0, 0]);
  });

  it("a tab that arrives later does not take a held lock", async () => {
    const world = new World();
    const a = contender(world);
    a.request();
    await tick(1_000);
    const b = contender(world);
    b.request();
    await tick(60_000);
    expect([a.held, b.held]).toEqual([true, false]);
  });

  it("passes on at once when released, and after the lease when the holder dies", async () => {
    const world = new World();
    const a = contender(world);
    const b = contender(world);
    const c = contender(world);
    a.request();
    await tick(1_000);
    b.request();
    c.request();
    await tick(1_000);
    a.release();
    await tick(300);
    const next = [b, c].find((x) => x.held)!;
    const other = next === b ? c : b;
    expect(next).toBeDefined();
    next.tab.kill();
    await tick(9_000);
    expect(other.held).toBe(false);
    await tick(4_000);
    expect(other.held).toBe(true);
  });

  it("gives a hidden holder a longer lease (background timers are throttled)", async () => {
    const world = new World();
    const a = contender(world, true);
    const b = contender(world);
    a.request();
    await tick(1_000);
    b.request();
    await tick(1_000);
    a.tab.freeze(); // its renewals stop
    await tick(140_000);
    expect(b.held).toBe(false);
    await tick(15_000);
    expect(b.held).toBe(true);
  });

  it("steal takes the lock from a live holder, whose request fails", async () => {
    const world = new World();
    const a = contender(world);
    const b = contender(world);
    a.request();
    await tick(1_000);
    b.request(true);
    await tick(1_000);
    expect([a.held, b.held]).toEqual([false, true]);
    expect(a.lost).toBe(1);
  });

  it("resolves two holders to one: the higher epoch, then the smaller tab id, wins", async () => {
    const world = new World();
    const a = contender(world); // "tab1"
    a.request();
    await tick(1_000);
    expect(a.held).toBe(true);
    // Another holder appears (a partition healed): same epoch, id "tab0".
    const Ch = world.bus.forTab("tab0");
    const other = new Ch("telegauge-lock:L");
    const seen: { t: string; epoch?: number }[] = [];
    other.onmessage = (ev) => void seen.push(ev.data as { t: string });
    other.postMessage({ t: "lease", from: "tab9", epoch: 0, ttl: 10_000 });
    await tick(0);
    expect(a.held).toBe(true); // lower epoch loses...
    expect(seen.some((m) => m.t === "lease")).toBe(true); // ...and is told at once
    other.postMessage({ t: "lease", from: "tab0", epoch: 1, ttl: 10_000 });
    await tick(0);
    expect(a.held).toBe(false);
    expect(a.lost).toBe(1);
  });

  it("releases on pagehide and claims nothing until the page is shown again", async () => {
    const world = new World();
    const a = contender(world);
    const b = contender(world);
    a.request();
    await tick(1_000);
    b.request();
    a.tab.page.fire("pagehide");
    await tick(0);
    expect(a.lost).toBe(1);
    a.request();
    await tick(1_000);
    expect([a.held, b.held]).toEqual([false, true]);
    b.release();
    await tick(5_000);
    expect(a.held).toBe(false);
    a.tab.page.fire("pageshow");
    await tick(1_000);
    expect(a.held).toBe(true);
  });
});
