// Logins: `telegauge users add` beside a running server turns the login
// page on; the password is the printed token; the session cookie is
// HttpOnly and SameSite=Strict; viewers see no admin controls; sign out,
// and `users remove`, bring the login page back. No page breaks the
// Content-Security-Policy.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { addUsers, cspContext, eventually, launchBrowser, screenshot, signIn, startServer, users } from "./harness.mjs";

let server, browser, annToken, vicToken;
before(async () => {
  server = await startServer(["--demo", "3", "--heartbeat", "2s"]);
  browser = await launchBrowser();
  ({ ann: annToken, vic: vicToken } = await addUsers(server, { ann: "admin", vic: "viewer" }));
});
after(async () => {
  await browser?.close();
  await server?.stop();
});

/** A page that records Content-Security-Policy violations. */
async function newPage(viewport = { width: 1280, height: 800 }) {
  const ctx = await cspContext(browser, { viewport });
  const page = await ctx.newPage();
  return { ctx, page };
}

test("login page, session cookie, live app, sign out", async () => {
  const { ctx, page } = await newPage();
  await page.goto(server.url + "/#/");
  await page.getByTestId("login-form").waitFor();
  await screenshot(page, "login-desktop");
  assert.equal(await page.title(), "Sign in · Telegauge");

  await signIn(page, "ann", "not-the-token");
  await eventually(async () => (await page.getByTestId("login-error").innerText()).includes("Wrong user name or password"), { what: "the error" });
  assert.deepEqual(await ctx.cookies(), [], "no cookie for a failed login");

  await signIn(page, "ann", annToken);
  await eventually(async () => (await page.getByTestId("device-row").count()) === 3, { what: "the fleet after login" });
  await eventually(() => page.evaluate(() => window.__telegauge.live()?.status === "live"), { what: "live" });
  assert.equal(await page.getByTestId("user").innerText(), "ann");
  const [cookie] = await ctx.cookies();
  assert.equal(cookie.name, "telegauge_session");
  assert.equal(cookie.httpOnly, true);
  assert.equal(cookie.sameSite, "Strict");
  assert.equal(await page.evaluate(() => document.cookie), "", "scripts cannot read the session");

  // An admin manages dashboards from the page (a same-origin write with
  // the cookie passes the CSRF check).
  await page.goto(server.url + "/#/dashboards");
  await page.getByTestId("dashboard-name").fill("Boilers");
  await page.getByTestId("dashboard-create").getByRole("button", { name: "Create" }).click();
  await page.getByTestId("board-editor").waitFor();

  await page.getByTestId("logout").click();
  await page.getByTestId("login-form").waitFor();
  assert.equal(await page.evaluate(async () => (await fetch("/api/v1/me")).status), 401, "the session ended on the server");
  assert.deepEqual(await page.evaluate(() => window.__csp), []);
  await ctx.close();
});

test("a viewer sees no admin controls", async () => {
  const { ctx, page } = await newPage({ width: 360, height: 740 });
  await page.goto(server.url + "/#/dashboards");
  await page.getByTestId("login-form").waitFor();
  await screenshot(page, "login-phone");
  await signIn(page, "vic", vicToken);
  await page.getByTestId("dashboard-list").waitFor();
  await eventually(async () => (await page.getByTestId("dashboard-item").count()) >= 1, { what: "the admin's board listed" });
  assert.equal(await page.getByTestId("dashboard-create").isVisible(), false);
  assert.equal(await page.getByTestId("dashboard-item").first().getByRole("button", { name: /Delete/ }).isVisible(), false);
  assert.deepEqual(await page.evaluate(() => window.__csp), []);
  await ctx.close();
});

test("users remove: the open page asks for a login at once", async () => {
  const token = (await users(server, ["add", "tmp", "--role", "viewer"])).trim();
  // The server takes a new user within a second.
  await eventually(async () => (await fetch(server.url + "/api/v1/me", { headers: { Authorization: `Bearer ${token}` } })).ok, { what: "tmp known" });
  const { ctx, page } = await newPage();
  await page.goto(server.url + "/#/");
  await page.getByTestId("login-form").waitFor();
  await signIn(page, "tmp", token);
  await eventually(async () => (await page.getByTestId("device-row").count()) === 3, { what: "the fleet after login" });
  await eventually(() => page.evaluate(() => window.__telegauge.live()?.status === "live"), { what: "live" });
  await users(server, ["remove", "tmp"]);
  await page.getByTestId("login-form").waitFor({ timeout: 15000 });
  assert.match(await page.getByTestId("login").innerText(), /session has ended/);
  assert.deepEqual(await page.evaluate(() => window.__csp), []);
  await ctx.close();
});
