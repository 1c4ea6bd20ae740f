import type { Live } from "../../live";
import type { Me } from "../api";
import type { Fleet } from "../fleet";
import type { Route } from "../router";

/** What every view gets. */
export interface Ctx {
  live: Live;
  fleet: Fleet;
  /** Who the page acts for. */
  me: Me;
  /** Keeps the app up while a view shows something that must not vanish
   *  (a token shown once), even if the session ends meanwhile (a user
   *  re-issued their own token; the first user turned logins on). The
   *  returned function lets go; if the session ended, the login page then
   *  shows, with notice if given. */
  holdSession(): (notice?: string) => void;
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
