import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { memoryKey, TransportMemory } from "./memory";
import { FakeStorage } from "./testkit";

const timers = {
  now: () => Date.now(),
  setTimeout: (fn: () => void, ms: number) => setTimeout(fn, ms),
  clearTimeout: (h: unknown) => clearTimeout(h as ReturnType<typeof setTimeout>),
};

describe("TransportMemory", () => {
  beforeEach(() => void vi.useFakeTimers());
  afterEach(() => void vi.useRealTimers());

  it("remembers a transport per origin until it expires", () => {
    const s = new FakeStorage();
    const a = new TransportMemory(s, memoryKey("https://a.example/x"), timers, 600_000);
    const b = new TransportMemory(s, memoryKey("https://b.example"), timers, 600_000);
    a.set("sse");
    expect(a.get()?.transport).toBe("sse");
    expect(b.get()).toBeNull();
    // Another page of the same origin reads it.
    expect(new TransportMemory(s, memoryKey("https://a.example"), timers, 600_000).get()?.transport).toBe("sse");
    vi.advanceTimersByTime(600_000);
    expect(a.get()).toBeNull();
    expect(s.map.size).toBe(0);
  });

  it("survives garbage in storage and the lack of storage", () => {
    const s = new FakeStorage();
    s.setItem(memoryKey("https://a.example"), "{not json");
    expect(new TransportMemory(s, memoryKey("https://a.example"), timers, 1000).get()).toBeNull();
    const none = new TransportMemory(undefined, "k", timers, 1000);
    none.set("longpoll");
    expect(none.get()?.transport).toBe("longpoll");
  });
});
