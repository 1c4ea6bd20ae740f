// The login page: shown instead of the app when the server wants a login
// (GET /api/v1/me, or any request, answers 401). The password is the API
// token `telegauge users add` printed; the session cookie it gets is
// HttpOnly, so the page never holds a credential.

import { ApiError, login, type Me } from "./api";
import { h } from "./dom";

/** Renders the login form into root; done() runs after a successful login. */
export function showLogin(root: HTMLElement, done: (me: Me) => void, notice = ""): void {
  const nameIn = h("input", { type: "text", id: "login-name", name: "username", autocomplete: "username", required: true, maxlength: 64, "data-testid": "login-name" });
  const passIn = h("input", { type: "password", id: "login-password", name: "password", autocomplete: "current-password", required: true, "data-testid": "login-password" });
  const submit = h("button", { type: "submit", class: "btn btn-primary", "data-testid": "login-submit" }, "Sign in");
  const err = h("p", { class: "form-error", role: "alert", "data-testid": "login-error" });
  const form = h(
    "form",
    { class: "login-card", "data-testid": "login-form", "aria-labelledby": "login-h" },
    h("h1", { id: "login-h", tabindex: -1 }, h("span", { class: "brand-mark", "aria-hidden": "true" }, "◔"), " Telegauge"),
    notice ? h("p", { class: "notice", role: "status" }, notice) : null,
    h("div", { class: "field" }, h("label", { for: "login-name" }, "User"), nameIn),
    h("div", { class: "field" }, h("label", { for: "login-password" }, "Password"), passIn),
    h("p", { class: "muted hint" }, "Your password is the API token ", h("code", null, "telegauge users add"), " printed."),
    err,
    submit,
  );
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    err.textContent = "";
    submit.disabled = true;
    try {
      done(await login(nameIn.value.trim(), passIn.value.trim()));
    } catch (e2) {
      passIn.value = "";
      err.textContent =
        e2 instanceof ApiError && e2.status === 401 ? "Wrong user name or password." : e2 instanceof Error ? e2.message : String(e2);
      passIn.focus();
    } finally {
      submit.disabled = false;
    }
  });
  root.classList.remove("app");
  root.replaceChildren(h("main", { class: "login-page", "data-testid": "login" }, form));
  document.title = "Sign in · Telegauge";
  (nameIn.value ? passIn : nameIn).focus();
}
