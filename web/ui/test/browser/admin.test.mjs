// The admin view: an admin gives a device a token in the dashboard, sees it
// once with a copy button and how to connect, and a simulated device then
// publishes with it; revoking asks first. Users are added (token shown
// once) and removed on a phone-sized screen. A viewer has no admin view.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { addUsers, cspContext, eventually, launchBrowser, screenshot, signIn, simDevices, startServer } from "./harness.mjs";

let server, browser, annToken, vicToken;
before(async () => {
  server = await startServer(["--heartbeat", "2s"]);
  browser = await launchBrowser();
  ({ ann: annToken, vic: vicToken } = await addUsers(server, { ann: "admin", vic: "viewer" }));
});
after(async () => {
  await browser?.close();
  await server?.stop();
});

/** A signed-in page that records CSP violations and accepts confirm()s
 *  (recording their messages). */
async function signedIn(name, token, viewport = { width: 1280, height: 800 }) {
  const ctx = await cspContext(browser, { viewport });
  await ctx.grantPermissions(["clipboard-read", "clipboard-write"], { origin: server.url });
  const page = await ctx.newPage();
  const dialogs = [];
  page.on("dialog", (d) => {
    dialogs.push(d.message());
    void d.accept();
  });
  await page.goto(server.url + "/#/");
  await signIn(page, name, token);
  await page.getByTestId("user").waitFor({ state: "attached" }); // hidden on phones
  return { ctx, page, dialogs };
}

test("an admin adds a device, sees its token once, and the device connects with it", async () => {
  const { ctx, page, dialogs } = await signedIn("ann", annToken);
  await page.getByTestId("nav-admin").click();
  await page.getByTestId("admin-view").waitFor();
  assert.equal(await page.getByTestId("admin-tab-devices").getAttribute("aria-current"), "page");

  // The browser's own check first, then the server's answer.
  await page.getByTestId("device-id").fill("bad id!");
  await page.getByTestId("device-add").getByRole("button", { name: "Add device" }).click();
  assert.equal(await page.getByTestId("token-box").isVisible(), false);

  await page.getByTestId("device-id").fill("boiler-1");
  await page.getByTestId("device-add").getByRole("button", { name: "Add device" }).click();
  await page.getByTestId("token-box").waitFor();
  const token = await page.getByTestId("issued-token").inputValue();
  assert.match(token, /^tg_[A-Za-z0-9_-]{43}$/);
  const hint = await page.getByTestId("mqtt-hint").innerText();
  assert.match(hint, new RegExp(`mqtt://${server.mqtt.replace(/\./g, "\\.")}`), hint);
  assert.match(hint, /boiler-1/);
  assert.match(hint, /telemetry\/boiler-1/);
  await page.getByTestId("copy-token").click();
  await eventually(async () => (await page.getByTestId("copy-status").innerText()) === "Copied.", { what: "copied" });
  assert.equal(await page.evaluate(() => navigator.clipboard.readText()), token);
  await eventually(async () => (await page.locator('[data-testid="admin-device"][data-id="boiler-1"]').getAttribute("data-credential")) === "token", {
    what: "boiler-1 listed with a token",
  });
  await screenshot(page, "admin-device-token-desktop");

  // Done forgets the token: it is not on the page any more.
  await page.getByTestId("token-done").click();
  assert.equal(await page.getByTestId("token-box").isVisible(), false);
  assert.equal(await page.getByTestId("issued-token").count(), 0);

  // A device publishes with the token from the page.
  const dir = mkdtempSync(join(tmpdir(), "telegauge-creds-"));
  const file = join(dir, "fleet.txt");
  writeFileSync(file, `boiler-1 ${token}\n`);
  const sim = simDevices(server, ["--credentials", file, "--rate", "5", "--duration", "3s"]);
  await sim.done;
  rmSync(dir, { recursive: true, force: true });
  const ok = await fetch(server.url + "/api/v1/devices", { headers: { Authorization: `Bearer ${annToken}` } });
  const devices = (await ok.json()).devices;
  assert.ok(devices.some((d) => d.id === "boiler-1" && d.metrics.length > 0), JSON.stringify(devices));

  // Revoke asks first, then the list says so.
  await page.locator('[data-testid="admin-device"][data-id="boiler-1"]').getByTestId("device-revoke").click();
  await eventually(async () => (await page.locator('[data-testid="admin-device"][data-id="boiler-1"]').getAttribute("data-credential")) === "revoked", {
    what: "boiler-1 revoked",
  });
  assert.match(dialogs.at(-1), /Revoke boiler-1/);
  assert.deepEqual(await page.evaluate(() => window.__csp), []);
  await ctx.close();
});

test("users: add with a role, token once, remove, on a phone", async () => {
  const { ctx, page, dialogs } = await signedIn("ann", annToken, { width: 360, height: 740 });
  await page.goto(server.url + "/#/admin/users");
  await page.getByTestId("admin-view").waitFor();
  await eventually(async () => (await page.getByTestId("admin-user").count()) === 2, { what: "ann and vic listed" });
  await page.getByTestId("user-name").fill("op@example.com");
  await page.getByTestId("user-role").selectOption("viewer");
  await page.getByTestId("user-add").getByRole("button", { name: "Add user" }).click();
  await page.getByTestId("token-box").waitFor();
  const token = await page.getByTestId("issued-token").inputValue();
  const me = await fetch(server.url + "/api/v1/me", { headers: { Authorization: `Bearer ${token}` } });
  assert.equal(me.status, 200, "the token works at once");
  assert.deepEqual(await me.json(), { user: "op@example.com", role: "viewer", auth: "token" });
  await eventually(async () => (await page.getByTestId("admin-user").count()) === 3, { what: "op listed" });
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
  assert.ok(overflow <= 0, `no sideways scrolling on a phone (${overflow} px)`);
  await screenshot(page, "admin-user-token-phone");
  await page.getByTestId("token-done").click();

  // The last admin cannot remove herself: the server says why.
  await page.locator('[data-testid="admin-user"][data-name="ann"]').getByTestId("user-remove").click();
  await eventually(async () => /last admin/.test(await page.locator('[data-testid="admin-user"][data-name="ann"]').innerText()), {
    what: "the last-admin refusal",
  });
  assert.match(dialogs.at(-1), /That is you/);

  await page.locator('[data-testid="admin-user"][data-name="op@example.com"]').getByTestId("user-remove").click();
  await eventually(async () => (await page.getByTestId("admin-user").count()) === 2, { what: "op removed" });
  assert.equal((await fetch(server.url + "/api/v1/me", { headers: { Authorization: `Bearer ${token}` } })).status, 401);
  assert.deepEqual(await page.evaluate(() => window.__csp), []);
  await ctx.close();
});

test("a viewer has no admin view", async () => {
  const { ctx, page } = await signedIn("vic", vicToken, { width: 360, height: 740 });
  assert.equal(await page.getByTestId("nav-admin").count(), 0, "no Admin link");
  await page.goto(server.url + "/#/admin/devices");
  await page.getByTestId("admin-denied").waitFor();
  assert.equal(await page.getByTestId("admin-view").count(), 0);
  assert.equal(await page.getByTestId("device-add").count(), 0);
  const requests = await page.evaluate(() => window.__telegauge.requests());
  assert.equal(Object.keys(requests).filter((p) => p.startsWith("/api/v1/admin")).length, 0, JSON.stringify(requests));
  const r = await page.evaluate(async () => (await fetch("/api/v1/admin/devices")).status);
  assert.equal(r, 403, "and the server refuses the viewer");
  await ctx.close();
});

test("the first user, added from a server without logins, keeps its token on screen until Done", async () => {
  const open = await startServer(["--heartbeat", "2s"]);
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  try {
    const page = await ctx.newPage();
    await page.goto(open.url + "/#/admin/users");
    await page.getByTestId("first-user-note").waitFor();
    await eventually(() => page.evaluate(() => window.__telegauge.live()?.status === "live"), { what: "live" });
    assert.equal(await page.getByTestId("user-role").inputValue(), "admin", "the first must be an admin");
    await page.getByTestId("user-name").fill("ann");
    // The race CI once lost: the live stream learns that sign-in is on (and
    // the page asks /api/v1/me, which answers 401) before the answer with
    // the token arrives. Hold that answer until then.
    const told = page.waitForResponse((r) => r.url().endsWith("/api/v1/me") && r.status() === 401, { timeout: 20000 });
    await page.route("**/api/v1/admin/users", async (route) => {
      if (route.request().method() !== "POST") return route.continue();
      const answer = await route.fetch();
      await told;
      await page.evaluate(() => new Promise((r) => setTimeout(r, 0))); // the page has read it
      await route.fulfill({ response: answer });
    });
    await page.getByTestId("user-add").getByRole("button", { name: "Add user" }).click();
    await page.getByTestId("token-box").waitFor();
    const token = await page.getByTestId("issued-token").inputValue();
    // Logins are on: the anonymous live stream was ended and cannot come
    // back, yet the token stays until Done.
    await eventually(() => page.evaluate(() => window.__telegauge.live()?.status !== "live"), { what: "the anonymous stream ended" });
    assert.equal(await page.evaluate(async () => (await fetch("/api/v1/me")).status), 401);
    assert.equal(await page.getByTestId("issued-token").inputValue(), token);
    assert.equal(await page.getByTestId("login-form").count(), 0);
    await page.getByTestId("token-done").click();
    await page.getByTestId("login-form").waitFor();
    assert.match(await page.getByTestId("login").innerText(), /Sign in as ann/);
    await signIn(page, "ann", token);
    await page.getByTestId("nav-admin").waitFor();
  } finally {
    await ctx.close();
    await open.stop();
  }
});
