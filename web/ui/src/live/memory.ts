import type { StorageLike, TimerApi } from "./env";
import type { Transport } from "./types";

// Which transport worked last, per server origin, for a while. A network
// that blocks WebSocket upgrades or buffers SSE (a corporate proxy) costs
// seconds of probing per connection; remembering the transport that worked
// skips that on the next page load and the next reconnect. After ttlMs the
// memory expires and the client probes from the top again: the proxy may be
// gone (the laptop left the office).

interface Entry {
  transport: Transport;
  until: number;
}

const TRANSPORTS: readonly Transport[] = ["ws", "sse", "longpoll", "poll"];

export class TransportMemory {
  private fallback: Entry | null = null; // when there is no storage

  constructor(
    private readonly storage: StorageLike | undefined,
    readonly key: string,
    private readonly timers: TimerApi,
    readonly ttlMs: number,
  ) {}

  /** The remembered transport and until when, or null (none, expired). */
  get(): Entry | null {
    let e: Entry | null = this.fallback;
    if (this.storage) {
      try {
        const raw = this.storage.getItem(this.key);
        e = raw ? (JSON.parse(raw) as Entry) : null;
      } catch {
        e = null;
      }
    }
    if (!e || !TRANSPORTS.includes(e.transport) || typeof e.until !== "number") return null;
    if (e.until <= this.timers.now()) {
      this.clear();
      return null;
    }
    return e;
  }

  /** Remembers t for ttlMs from now. */
  set(t: Transport): Entry {
    const e = { transport: t, until: this.timers.now() + this.ttlMs };
    this.fallback = e;
    try {
      this.storage?.setItem(this.key, JSON.stringify(e));
    } catch {
      // Quota or privacy mode: the in-memory copy serves this page.
    }
    return e;
  }

  clear(): void {
    this.fallback = null;
    try {
      this.storage?.removeItem(this.key);
    } catch {
      // As above.
    }
  }
}

/** The storage key for a server base URL: one memory per origin. */
export function memoryKey(base: string): string {
  let origin = base;
  try {
    origin = new URL(base).origin;
  } catch {
    // Keep the text as given.
  }
  return `telegauge.live.transport:${origin}`;
}
