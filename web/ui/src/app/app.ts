// The operator's dashboard app: shell (header, connection badge, stale
// banner), hash router and views. Entry: start(root) from src/main.ts.

import "../styles.css";
import { createLive, type Live } from "../live";
import { connectionBadge, staleBanner } from "./badge";
import { h } from "./dom";
import { Fleet, PRESENCE_ONLY } from "./fleet";
import { installHooks } from "./hooks";
import { parseHash, type Route } from "./router";
import { initTheme, themeToggle } from "./theme";
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
  const live: Live = createLive();
  const fleet = new Fleet();
  const ctx: Ctx = { live, fleet };
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
  const badge = connectionBadge(live);
  const banner = staleBanner(live, root);
  const header = h(
    "header",
    { class: "topbar" },
    h("a", { class: "brand", href: "#/", "aria-label": "Telegauge home" }, h("span", { class: "brand-mark", "aria-hidden": "true" }, "◔"), h("span", { class: "brand-text" }, "Telegauge")),
    h("nav", { class: "nav", "aria-label": "Main" }, navFleet, navBoards),
    h("div", { class: "topbar-right" }, badge.el, themeToggle()),
  );
  root.classList.add("app");
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
    for (const a of [navFleet, navBoards]) {
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

  installHooks({
    live: () => live,
    route: () => route,
    devices: () => fleet.devices,
    view: () => view?.info?.() ?? { view: route.view },
  });

  window.addEventListener("pagehide", (e) => {
    if (!e.persisted) {
      view?.destroy();
      presence.close();
      badge.destroy();
      banner.destroy();
      live.close();
    }
  });
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
