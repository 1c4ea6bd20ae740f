// The operator's dashboard app: shell (header, connection badge, stale
// banner), hash router and views. Entry: start(root) from src/main.ts.

import "../styles.css";
import { createLive, type Live } from "../live";
import { ApiError, getMe, logout, onUnauthorized, type Me } from "./api";
import { connectionBadge, staleBanner } from "./badge";
import { h } from "./dom";
import { Fleet, PRESENCE_ONLY } from "./fleet";
import { installHooks } from "./hooks";
import { showLogin } from "./login";
import { parseHash, type Route } from "./router";
import { initTheme, themeToggle } from "./theme";
import { adminView } from "./views/admin";
import { boardView } from "./views/board";
import { dashboardsView } from "./views/dashboards";
import { deviceView } from "./views/device";
import { fleetView } from "./views/fleet";
import type { Ctx, View } from "./views/view";

export function start(root: HTMLElement): void {
  initTheme();
  if (!document.querySelector("link[rel~='icon']")) {
    // An inline icon: no request, no 404 in the console.
    const svg = `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><circle cx="8" cy="8" r="7" fill="#1d5fd6"/><path d="M8 8V2a6 6 0 0 1 6 6z" fill="#fff"/></svg>`;
    document.head.append(h("link", { rel: "icon", href: `data:image/svg+xml,${encodeURIComponent(svg)}` }));
  }
  // Who we are decides between the app and the login page. A server that
  // cannot be reached (or predates logins) gets the app, which shows it
  // offline and keeps trying, as before.
  getMe()
    .then((me) => startApp(root, me))
    .catch((e) => {
      if (e instanceof ApiError && e.status === 401) showLogin(root, reload);
      else startApp(root, { user: "", role: "admin", auth: "anonymous" });
    });
}

/** A fresh page after login: every connection starts over with the cookie. */
const reload = () => location.reload();

function startApp(root: HTMLElement, me: Me): void {
  const live: Live = createLive();
  const fleet = new Fleet();
  // The session may end while a view holds the page (holdSession): the
  // login page then waits until the last hold lets go.
  let holds = 0;
  let endNotice: string | null = null;
  const ctx: Ctx = {
    live,
    fleet,
    me,
    holdSession() {
      holds++;
      let released = false;
      return (notice) => {
        if (released) return;
        released = true;
        holds--;
        if (holds === 0 && endNotice !== null) end(notice ?? endNotice);
      };
    },
  };
  const presence = live.subscribe([PRESENCE_ONLY], { points: () => {}, presence: (p) => fleet.applyPresence(p) });

  const main = h("main", { id: "main", class: "main", tabindex: -1 });
  const skip = h("a", { class: "skip-link", href: "#main" }, "Skip to content");
  // The hash is the router's: move focus without navigating.
  skip.addEventListener("click", (e) => {
    e.preventDefault();
    (main.querySelector("h1") as HTMLElement | null ?? main).focus();
  });
  const navFleet = h("a", { href: "#/", "data-nav": "fleet" }, "Fleet");
  const navBoards = h("a", { href: "#/dashboards", "data-nav": "dashboards" }, "Dashboards");
  // Device credentials and users: admins only (the server refuses viewers).
  const navAdmin = me.role === "admin" ? h("a", { href: "#/admin", "data-nav": "admin", "data-testid": "nav-admin" }, "Admin") : null;
  const navLinks = navAdmin ? [navFleet, navBoards, navAdmin] : [navFleet, navBoards];
  const badge = connectionBadge(live);
  const banner = staleBanner(live, root);
  const header = h(
    "header",
    { class: "topbar" },
    h("a", { class: "brand", href: "#/", "aria-label": "Telegauge home" }, h("span", { class: "brand-mark", "aria-hidden": "true" }, "◔"), h("span", { class: "brand-text" }, "Telegauge")),
    h("nav", { class: "nav", "aria-label": "Main" }, ...navLinks),
    h("div", { class: "topbar-right" }, badge.el, themeToggle(), me.auth === "session" ? userMenu(me, () => end("")) : null),
  );
  root.classList.add("app");
  // Viewers see no controls they may not use (the server refuses them anyway).
  root.dataset.role = me.role;
  root.replaceChildren(skip, header, banner.el, main);

  let route: Route = parseHash(location.hash);
  let view: View | null = null;
  let first = true;

  const mount = () => {
    const next = parseHash(location.hash);
    if (view && next.view === route.view && view.update?.(next)) {
      route = next;
      return;
    }
    route = next;
    view?.destroy();
    view = makeView(ctx, route);
    main.replaceChildren(view.el);
    document.title = view.title;
    for (const a of navLinks) {
      const current = a.dataset.nav === (route.view === "board" ? "dashboards" : route.view === "device" ? "fleet" : route.view);
      if (current) a.setAttribute("aria-current", "page");
      else a.removeAttribute("aria-current");
    }
    if (!first) {
      // A new view: focus its heading so screen readers announce it.
      (view.el.querySelector("h1") as HTMLElement | null)?.focus({ preventScroll: true });
      window.scrollTo(0, 0);
    }
    first = false;
  };
  window.addEventListener("hashchange", mount);
  mount();

  // The session ended (expired, logged out in another tab, user removed):
  // tear the app down and ask for a login. A live connection that keeps
  // failing may be why, when no API call happens to tell: ask the server.
  let ended = false;
  const end = (notice: string) => {
    if (ended) return;
    if (holds > 0) {
      endNotice = notice;
      return;
    }
    ended = true;
    onUnauthorized(null);
    stopState();
    window.removeEventListener("hashchange", mount);
    teardown();
    showLogin(root, reload, notice);
  };
  onUnauthorized(() => end("Your session has ended: sign in again."));
  let checking = false;
  const stopState = live.onState((st) => {
    if (st.status !== "reconnecting" || checking) return;
    checking = true;
    getMe()
      .catch(() => undefined) // a 401 calls end() through onUnauthorized
      .finally(() => setTimeout(() => (checking = false), 5000));
  });

  installHooks({
    live: () => live,
    route: () => route,
    devices: () => fleet.devices,
    view: () => view?.info?.() ?? { view: route.view },
  });

  const teardown = () => {
    view?.destroy();
    view = null;
    presence.close();
    badge.destroy();
    banner.destroy();
    live.close();
  };
  window.addEventListener("pagehide", (e) => {
    if (!e.persisted && !ended) teardown();
  });
}

/** The signed-in user and a sign-out button, in the top bar. */
function userMenu(me: Me, signedOut: () => void): HTMLElement {
  const btn = h("button", { type: "button", class: "btn btn-ghost", "data-testid": "logout" }, "Sign out");
  btn.addEventListener("click", async () => {
    btn.disabled = true;
    try {
      await logout();
    } catch {
      /* the session is gone either way once the server is back */
    }
    signedOut();
  });
  return h(
    "span",
    { class: "user-menu" },
    h("span", { class: "user-name", "data-testid": "user", title: `Signed in as ${me.user} (${me.role})` }, me.user),
    btn,
  );
}

function makeView(ctx: Ctx, r: Route): View {
  switch (r.view) {
    case "fleet":
      return fleetView(ctx, r);
    case "device":
      return deviceView(ctx, r);
    case "dashboards":
      return dashboardsView();
    case "board":
      return boardView(ctx, r);
    case "admin":
      return adminView(ctx, r);
    default:
      return {
        el: h(
          "section",
          { class: "view" },
          h("h1", { tabindex: -1 }, "Not found"),
          h("p", null, "Nothing lives at ", h("code", null, r.path), ". ", h("a", { href: "#/" }, "Back to the fleet"), "."),
        ),
        title: "Not found · Telegauge",
        destroy() {},
      };
  }
}
