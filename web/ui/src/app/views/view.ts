import type { Live } from "../../live";
import type { Fleet } from "../fleet";
import type { Route } from "../router";

/** What every view gets. */
export interface Ctx {
  live: Live;
  fleet: Fleet;
}

/** A mounted view. */
export interface View {
  el: HTMLElement;
  /** The document title. */
  title: string;
  /** A new route of the same view kind: handle it in place (e.g. a range
   *  change in the hash) and return true, or false to be rebuilt. */
  update?(route: Route): boolean;
  /** State for window.__telegauge.view(). */
  info?(): Record<string, unknown>;
  destroy(): void;
}
