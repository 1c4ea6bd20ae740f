// The fleet as the app knows it: /api/v1/devices polled every few seconds
// while anyone listens, with presence events applied in between.

import type { Presence } from "../live";
import { getDevices, type Device } from "./api";

type Listener = (devices: Device[]) => void;

/** A pattern that covers every device but names no real metric: the app
 *  keeps one subscription to it for presence events (the server sends them
 *  for the devices a subscription covers), which also keeps the live
 *  connection, and so the connection badge, up on every view. */
export const PRESENCE_ONLY = "+/_presence";

export class Fleet {
  devices: Device[] = [];
  loaded = false;
  error: string | null = null;
  /** When the list was last fetched (Date.now()). */
  fetchedAt = 0;
  private listeners = new Set<Listener>();
  private timer = 0;
  private inflight: Promise<Device[]> | null = null;

  constructor(readonly intervalMs = 3000) {}

  get(id: string): Device | undefined {
    return this.devices.find((d) => d.id === id);
  }

  /** Listens for updates (polling runs while there are listeners). */
  subscribe(l: Listener): () => void {
    this.listeners.add(l);
    if (this.loaded) l(this.devices);
    if (!this.timer) {
      void this.refresh();
      this.timer = window.setInterval(() => {
        if (!document.hidden) void this.refresh();
      }, this.intervalMs);
    }
    return () => {
      this.listeners.delete(l);
      if (!this.listeners.size) {
        clearInterval(this.timer);
        this.timer = 0;
      }
    };
  }

  /** Fetches now (one request at a time). */
  refresh(): Promise<Device[]> {
    if (this.inflight) return this.inflight;
    this.inflight = getDevices()
      .then((ds) => {
        this.devices = ds;
        this.loaded = true;
        this.error = null;
        this.fetchedAt = Date.now();
        this.emit();
        return ds;
      })
      .catch((e: Error) => {
        this.error = e.message;
        this.emit();
        return this.devices;
      })
      .finally(() => {
        this.inflight = null;
      });
    return this.inflight;
  }

  /** A presence event: online state and last seen, without waiting for the next poll. */
  applyPresence(p: Presence): void {
    const d = this.get(p.device);
    if (!d) {
      void this.refresh();
      return;
    }
    if (d.online === p.online) return;
    d.online = p.online;
    if (p.t > d.lastSeen) d.lastSeen = p.t;
    this.emit();
  }

  private emit(): void {
    for (const l of this.listeners) l(this.devices);
  }
}
