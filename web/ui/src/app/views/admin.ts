// Admin view (admins only): device credentials and users, as `telegauge
// devices` and `telegauge users` manage them. A token is shown once, when
// it is issued, with a copy button; the server keeps only its hash.

import {
  adminDevices,
  adminUsers,
  ApiError,
  issueDevice,
  issueUser,
  removeUser,
  revokeDevice,
  type AdminDevice,
  type IssuedDevice,
  type IssuedUser,
  type Operator,
} from "../api";
import { announce, h } from "../dom";
import * as fmt from "../format";
import { examplePublish, listeners } from "../mqtthint";
import { href, type AdminTab, type Route } from "../router";
import type { Ctx, View } from "./view";

/** Device ids and user names (DESIGN.md §3; users may also have '@'). */
const DEVICE_ID = /^[A-Za-z0-9._-]{1,64}$/;
const USER_NAME = /^[A-Za-z0-9._@-]{1,64}$/;

const TABS: { tab: AdminTab; label: string }[] = [
  { tab: "devices", label: "Devices" },
  { tab: "users", label: "Users" },
];

function message(e: unknown): string {
  if (e instanceof ApiError && e.status === 403) return "this needs the admin role";
  return e instanceof Error ? e.message : String(e);
}

export function adminView(ctx: Ctx, route: Extract<Route, { view: "admin" }>): View {
  const tab = route.tab;
  const heading = h("h1", { id: "view-h", tabindex: -1 }, "Admin");
  if (ctx.me.role !== "admin") {
    return {
      el: h(
        "section",
        { class: "view", "aria-labelledby": "view-h" },
        heading,
        h("p", { class: "notice", "data-testid": "admin-denied" }, "Managing devices and users needs the admin role. ", h("a", { href: href.fleet() }, "Back to the fleet"), "."),
      ),
      title: "Admin · Telegauge",
      info: () => ({ view: "admin", tab, denied: true }),
      destroy() {},
    };
  }
  const tabs = h(
    "nav",
    { class: "tabs", "aria-label": "Admin sections" },
    ...TABS.map((t) =>
      h("a", { href: href.admin(t.tab), class: "tab", "data-testid": `admin-tab-${t.tab}`, "aria-current": t.tab === tab ? "page" : null }, t.label),
    ),
  );
  const panel = tab === "users" ? usersPanel(ctx) : devicesPanel(ctx);
  const el = h(
    "section",
    { class: "view admin-view", "aria-labelledby": "view-h", "data-testid": "admin-view" },
    h("div", { class: "view-head" }, heading),
    tabs,
    panel.el,
  );
  return {
    el,
    title: `${tab === "users" ? "Users" : "Devices"} · Admin · Telegauge`,
    info: () => ({ view: "admin", tab, ...panel.info() }),
    destroy: () => panel.destroy(),
  };
}

interface Panel {
  el: HTMLElement;
  info(): Record<string, unknown>;
  destroy(): void;
}

/** A token shown once: a read-only field with a copy button, what it is
 *  for, and Done, which forgets it. While it shows, the app stays up even
 *  if the session ends (ctx.holdSession). */
class SecretBox {
  readonly el = h("div", { class: "secret", role: "region", "aria-labelledby": "secret-h", hidden: true, "data-testid": "token-box" });
  private release: ((notice?: string) => void) | null = null;
  private notice: string | undefined;

  constructor(
    private readonly ctx: Ctx,
    private readonly onDone: () => void,
  ) {}

  show(title: string, token: string, body: (Node | string | null)[], notice?: string): void {
    this.release?.();
    this.release = this.ctx.holdSession();
    this.notice = notice;
    const value = h("input", {
      type: "text",
      readonly: true,
      class: "secret-value",
      value: token,
      "aria-label": "Token",
      spellcheck: "false",
      autocomplete: "off",
      "data-testid": "issued-token",
    });
    const copied = h("span", { class: "muted small", role: "status", "data-testid": "copy-status" });
    const copy = h("button", { type: "button", class: "btn btn-primary", "data-testid": "copy-token" }, "Copy");
    copy.addEventListener("click", async () => {
      copied.textContent = (await copyText(value)) ? "Copied." : "Select the token and copy it.";
    });
    value.addEventListener("focus", () => value.select());
    const done = h("button", { type: "button", class: "btn", "data-testid": "token-done" }, "Done");
    done.addEventListener("click", () => this.hide());
    this.el.replaceChildren(
      h("h2", { id: "secret-h", class: "secret-title" }, title),
      h("p", { class: "secret-warn" }, "Shown only this once: copy it now. The server keeps only a hash of it."),
      h("div", { class: "secret-row" }, value, copy),
      copied,
      ...body.filter((x): x is Node | string => x !== null),
      h("div", { class: "actions" }, done),
    );
    this.el.hidden = false;
    this.el.scrollIntoView({ block: "nearest" });
    copy.focus();
  }

  hide(): void {
    if (this.el.hidden) return;
    this.el.hidden = true;
    this.el.replaceChildren(); // the token goes with it
    const release = this.release;
    this.release = null;
    this.onDone();
    release?.(this.notice);
  }

  get shown(): boolean {
    return !this.el.hidden;
  }

  destroy(): void {
    this.release?.(this.notice);
    this.release = null;
  }
}

/** Copies the field's text: the Clipboard API, or (plain HTTP off
 *  localhost has none) selecting it and the copy command. */
async function copyText(input: HTMLInputElement): Promise<boolean> {
  try {
    await navigator.clipboard.writeText(input.value);
    return true;
  } catch {
    input.focus();
    input.select();
    try {
      return document.execCommand("copy");
    } catch {
      return false;
    }
  }
}

function credentialLabel(c: AdminDevice["credential"]): string {
  return c === "token" ? "token" : c === "revoked" ? "revoked" : "no token";
}

function devicesPanel(ctx: Ctx): Panel {
  const idIn = h("input", {
    type: "text",
    id: "new-device-id",
    required: true,
    maxlength: 64,
    pattern: "[A-Za-z0-9._\\-]{1,64}",
    placeholder: "e.g. boiler-1",
    autocomplete: "off",
    spellcheck: "false",
    "aria-describedby": "new-device-help",
    "data-testid": "device-id",
  });
  const addBtn = h("button", { type: "submit", class: "btn btn-primary" }, "Add device");
  const form = h("form", { class: "inline-form", "data-testid": "device-add" }, h("label", { for: "new-device-id" }, "Device id"), idIn, addBtn);
  const formErr = h("p", { class: "form-error", role: "alert", "data-testid": "device-error" });
  const status = h("p", { class: "notice", role: "status" }, "Loading devices…");
  const list = h("ul", { class: "admin-list", "data-testid": "admin-devices", "aria-busy": "true" });
  const box = new SecretBox(ctx, () => idIn.focus());
  const el = h(
    "div",
    { class: "admin-panel" },
    h(
      "p",
      { class: "muted", id: "new-device-help" },
      "A device connects to MQTT with its id as the username and its token as the password. Letters, digits, ",
      h("code", null, "."),
      " ",
      h("code", null, "_"),
      " and ",
      h("code", null, "-"),
      ", up to 64. Giving a device a new token replaces its old one.",
    ),
    form,
    formErr,
    box.el,
    status,
    list,
  );
  let destroyed = false;
  let devices: AdminDevice[] = [];

  const showIssued = (d: IssuedDevice) => {
    const ls = listeners(d.brokers);
    const example = examplePublish(d);
    box.show(`Token for ${d.id}`, d.token, [
      d.replaced ? h("p", { class: "small" }, "The previous token no longer works; sessions that used it were disconnected.") : null,
      h(
        "dl",
        { class: "hint-list", "data-testid": "mqtt-hint" },
        h("dt", null, ls.length > 1 ? "Brokers" : "Broker"),
        h("dd", null, ...(ls.length ? ls.map((l) => h("code", { class: "hint-url" }, l.url)) : [h("span", { class: "muted" }, "this server's MQTT listener")])),
        h("dt", null, "Username"),
        h("dd", null, h("code", null, d.id)),
        h("dt", null, "Password"),
        h("dd", null, "the token above"),
        h("dt", null, "Topic"),
        h("dd", null, h("code", null, d.topic), " (JSON readings, e.g. ", h("code", null, '{"temperature": 21.5}'), ")"),
      ),
      example ? h("p", { class: "small" }, "For example:") : null,
      example ? h("pre", { class: "example" }, h("code", null, example)) : null,
    ]);
  };

  /** Gives id a token and shows it; false if the server refused. */
  const issue = async (id: string): Promise<boolean> => {
    formErr.textContent = "";
    try {
      const d = await issueDevice(id);
      if (destroyed) return true;
      showIssued(d);
      announce(`Token for ${d.id} issued`);
      void load();
      return true;
    } catch (e) {
      formErr.textContent = `Could not give ${id} a token: ${message(e)}`;
      return false;
    }
  };

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const id = idIn.value.trim();
    if (!DEVICE_ID.test(id)) {
      formErr.textContent = "A device id is 1 to 64 letters, digits, '.', '_' or '-'.";
      idIn.focus();
      return;
    }
    const known = devices.some((d) => d.id === id && d.credential === "token");
    if (known && !confirm(`${id} already has a token. Replace it? Its current sessions are disconnected.`)) return;
    addBtn.disabled = true;
    const issued = await issue(id);
    addBtn.disabled = false;
    if (issued) idIn.value = "";
  });

  const item = (d: AdminDevice): HTMLLIElement => {
    const err = h("span", { class: "form-error", role: "alert" });
    const renew = h("button", { type: "button", class: "btn btn-small", "aria-label": `New token for ${d.id}`, "data-testid": "device-renew" }, "New token");
    renew.addEventListener("click", async () => {
      if (d.credential === "token" && !confirm(`Give ${d.id} a new token? The current one stops working and its sessions are disconnected.`)) return;
      renew.disabled = true;
      await issue(d.id);
      renew.disabled = false;
    });
    const revoke = h("button", { type: "button", class: "btn btn-small btn-danger", "aria-label": `Revoke ${d.id}`, "data-testid": "device-revoke" }, "Revoke");
    revoke.addEventListener("click", async () => {
      if (!confirm(`Revoke ${d.id}'s token? The device is disconnected at once and refused until it gets a new token.`)) return;
      revoke.disabled = true;
      try {
        await revokeDevice(d.id);
        announce(`${d.id} revoked`);
        void load();
      } catch (e) {
        err.textContent = `Could not revoke: ${message(e)}`;
        revoke.disabled = false;
      }
    });
    return h(
      "li",
      { class: "admin-item", "data-testid": "admin-device", "data-id": d.id, "data-credential": d.credential },
      h("span", { class: "admin-name" }, d.id),
      h("span", { class: "cred", "data-credential": d.credential, "data-testid": "credential" }, credentialLabel(d.credential)),
      h("span", { class: "muted small" }, d.lastSeen ? `seen ${fmt.ago(d.lastSeen)}` : "never seen"),
      h("span", { class: "actions" }, renew, d.credential === "token" ? revoke : null),
      err,
    );
  };

  const load = async () => {
    try {
      const devs = await adminDevices();
      if (destroyed) return;
      devices = devs;
      list.replaceChildren(...devs.map(item));
      status.hidden = devs.length > 0;
      status.textContent = devs.length ? "" : "No devices yet: add one above.";
    } catch (e) {
      if (destroyed) return;
      status.hidden = false;
      status.textContent = `Cannot list devices: ${message(e)}`;
    } finally {
      list.setAttribute("aria-busy", "false");
    }
  };
  void load();

  return {
    el,
    info: () => ({ devices: devices.length, tokenShown: box.shown }),
    destroy() {
      destroyed = true;
      box.destroy();
    },
  };
}

function usersPanel(ctx: Ctx): Panel {
  const me = ctx.me;
  const nameIn = h("input", {
    type: "text",
    id: "new-user-name",
    required: true,
    maxlength: 64,
    pattern: "[A-Za-z0-9._@\\-]{1,64}",
    placeholder: "e.g. ann or ann@example.com",
    autocomplete: "off",
    spellcheck: "false",
    "data-testid": "user-name",
  });
  const roleSel = h(
    "select",
    { id: "new-user-role", "data-testid": "user-role" },
    h("option", { value: "viewer" }, "viewer: reads"),
    h("option", { value: "admin" }, "admin: also manages"),
  );
  const addBtn = h("button", { type: "submit", class: "btn btn-primary" }, "Add user");
  const form = h(
    "form",
    { class: "inline-form", "data-testid": "user-add" },
    h("label", { for: "new-user-name" }, "User"),
    nameIn,
    h("label", { for: "new-user-role", class: "sr-only" }, "Role"),
    roleSel,
    addBtn,
  );
  const formErr = h("p", { class: "form-error", role: "alert", "data-testid": "user-error" });
  const firstNote = h(
    "p",
    { class: "notice", hidden: true, "data-testid": "first-user-note" },
    "Nobody needs to sign in yet. Adding the first user, an admin, turns sign-in on: you will then sign in with that user's token.",
  );
  const status = h("p", { class: "notice", role: "status" }, "Loading users…");
  const list = h("ul", { class: "admin-list", "data-testid": "admin-users", "aria-busy": "true" });
  const box = new SecretBox(ctx, () => nameIn.focus());
  const el = h(
    "div",
    { class: "admin-panel" },
    h(
      "p",
      { class: "muted" },
      "A user signs in with their name and token as the password, or sends the token as ",
      h("code", null, "Authorization: Bearer"),
      ". Viewers read; admins also manage dashboards, devices and users.",
    ),
    form,
    formErr,
    firstNote,
    box.el,
    status,
    list,
  );
  let destroyed = false;
  let users: Operator[] = [];

  const showIssued = (u: IssuedUser, first: boolean) => {
    const self = u.name === me.user;
    box.show(
      `Token for ${u.name} (${u.role})`,
      u.token,
      [
        h("p", { class: "small" }, `It is ${u.name}'s password for signing in, and an API token (Authorization: Bearer).`),
        u.replaced ? h("p", { class: "small" }, "The previous token no longer works; sessions that used it have ended.") : null,
        self ? h("p", { class: "small secret-warn" }, "That is you: your session has ended. Sign in again with this token when you are done.") : null,
        first ? h("p", { class: "small secret-warn" }, "Sign-in is on now: press Done, then sign in with this token.") : null,
      ],
      self || first ? `Sign in as ${u.name} with the token you copied.` : undefined,
    );
  };

  /** Gives name a token and shows it; null if the panel went away.
   *  Issuing the first user, or yourself, ends this page's session at the
   *  server, and the live stream may notice before the answer arrives:
   *  hold the page until the token is on screen. */
  const issue = async (name: string, role: Operator["role"], first: boolean): Promise<IssuedUser | null> => {
    const release = ctx.holdSession();
    try {
      const u = await issueUser(name, role);
      if (destroyed) return null;
      showIssued(u, first);
      if (!first && u.name !== me.user) void load();
      return u;
    } finally {
      release();
    }
  };

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    formErr.textContent = "";
    const name = nameIn.value.trim();
    const role = roleSel.value as "admin" | "viewer";
    if (!USER_NAME.test(name)) {
      formErr.textContent = "A user name is 1 to 64 letters, digits, '.', '_', '-' or '@'.";
      nameIn.focus();
      return;
    }
    const existing = users.find((u) => u.name === name);
    if (existing && !confirm(`${name} exists. Give ${name} a new token${existing.role !== role ? ` and make them ${role === "admin" ? "an admin" : "a viewer"}` : ""}? The current token stops working.`)) return;
    const first = users.length === 0 && me.auth === "anonymous";
    addBtn.disabled = true;
    try {
      const u = await issue(name, role, first);
      if (!u) return;
      nameIn.value = "";
      announce(`Token for ${u.name} issued`);
      if (first || u.name === me.user) status.hidden = true;
    } catch (err) {
      formErr.textContent = `Could not add ${name}: ${message(err)}`;
    } finally {
      addBtn.disabled = false;
    }
  });

  const item = (u: Operator): HTMLLIElement => {
    const self = u.name === me.user;
    const err = h("span", { class: "form-error", role: "alert" });
    const renew = h("button", { type: "button", class: "btn btn-small", "aria-label": `New token for ${u.name}`, "data-testid": "user-renew" }, "New token");
    renew.addEventListener("click", async () => {
      const warn = self ? " Your own session ends: you will sign in again with the new one." : " The current one stops working and its sessions end.";
      if (!confirm(`Give ${u.name} a new token?${warn}`)) return;
      renew.disabled = true;
      try {
        await issue(u.name, u.role, false);
      } catch (e) {
        err.textContent = `Could not: ${message(e)}`;
      } finally {
        renew.disabled = false;
      }
    });
    const remove = h("button", { type: "button", class: "btn btn-small btn-danger", "aria-label": `Remove ${u.name}`, "data-testid": "user-remove" }, "Remove");
    remove.addEventListener("click", async () => {
      const warn = self ? " That is you: you will be signed out." : " Their sessions and live streams end at once.";
      if (!confirm(`Remove ${u.name}?${warn}`)) return;
      remove.disabled = true;
      try {
        await removeUser(u.name);
        announce(`${u.name} removed`);
        if (!self) void load();
      } catch (e) {
        err.textContent = `Could not remove: ${message(e)}`;
        remove.disabled = false;
      }
    });
    return h(
      "li",
      { class: "admin-item", "data-testid": "admin-user", "data-name": u.name, "data-role": u.role },
      h("span", { class: "admin-name" }, u.name, self ? h("span", { class: "muted small" }, " (you)") : null),
      h("span", { class: "cred", "data-role": u.role }, u.role),
      h("span", { class: "muted small" }, u.created ? `added ${fmt.ago(u.created)}` : ""),
      h("span", { class: "actions" }, renew, remove),
      err,
    );
  };

  const load = async () => {
    try {
      const got = await adminUsers();
      if (destroyed) return;
      users = got;
      list.replaceChildren(...got.map(item));
      firstNote.hidden = got.length > 0 || me.auth !== "anonymous";
      if (got.length === 0) roleSel.value = "admin"; // the first must be one
      status.hidden = got.length > 0;
      status.textContent = got.length ? "" : "No users yet.";
    } catch (e) {
      if (destroyed) return;
      status.hidden = false;
      status.textContent = `Cannot list users: ${message(e)}`;
    } finally {
      list.setAttribute("aria-busy", "false");
    }
  };
  void load();

  return {
    el,
    info: () => ({ users: users.length, tokenShown: box.shown }),
    destroy() {
      destroyed = true;
      box.destroy();
    },
  };
}
