// The fleet, device and dashboard views render and update with the demo
// fleet; screenshots of each at phone and desktop sizes, both themes.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { eventually, launchBrowser, screenshot, startServer } from "./harness.mjs";

let server, browser;
before(async () => {
  server = await startServer(["--demo", "6", "--heartbeat", "2s"]);
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
  await server?.stop();
});

const sizes = [
  ["phone", { width: 360, height: 740 }],
  ["desktop", { width: 1920, height: 1080 }],
];

test("fleet view lists the demo fleet and updates live", async () => {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await ctx.newPage();
  await page.goto(server.url + "/#/");
  await eventually(async () => (await page.getByTestId("device-row").count()) === 6, { what: "6 device rows" });
  const rows = page.getByTestId("device-row");
  assert.equal(await rows.first().getAttribute("data-online"), "true");
  // Live: the rows' readings/s and last-seen cells change as readings arrive.
  const before = await page.getByTestId("fleet-table").innerText();
  await eventually(async () => (await page.getByTestId("fleet-table").innerText()) !== before, { what: "the fleet table to change" });
  // Search filters by id.
  await page.getByTestId("fleet-search").fill("demo-0003");
  await eventually(async () => (await rows.count()) === 1, { what: "search to filter" });
  assert.equal(await rows.first().getAttribute("data-device"), "demo-0003");
  await eventually(async () => (await page.evaluate(() => window.__telegauge.live()))?.status === "live", { what: "live" });
  await ctx.close();
});

test("device view charts every metric and follows live data", async () => {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await ctx.newPage();
  await page.goto(server.url + "/#/device/demo-0001?range=5m");
  await eventually(async () => (await page.getByTestId("chart").count()) === 4, { what: "4 charts" });
  await eventually(() => page.evaluate(() => window.__telegauge.view().state === "ready"), { what: "history loaded" });
  const last = async () =>
    page.evaluate(() => Math.max(...window.__telegauge.charts().map((c) => c.series[0]?.lastT ?? 0)));
  const t0 = await last();
  await eventually(async () => (await last()) > t0, { what: "charts to take new readings" });
  assert.equal(await page.getByTestId("follow-toggle").getAttribute("data-following"), "true");
  // Pause stops following; the range buttons switch the window.
  await page.getByTestId("follow-toggle").click();
  assert.equal(await page.getByTestId("follow-toggle").getAttribute("data-following"), "false");
  await page.getByTestId("range-1h").click();
  await eventually(() => page.evaluate(() => window.__telegauge.view().range?.preset === "1h"), { what: "range 1h" });
  await ctx.close();
});

test("dashboards: create through the API, open by URL", async () => {
  const r = await fetch(server.url + "/api/v1/dashboards", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ name: "Temperatures", panels: [{ title: "All temperatures", series: ["+/temperature"], range: "5m" }, { title: "demo-0002", series: ["demo-0002/#"], range: "5m" }] }),
  });
  assert.equal(r.status, 201);
  const board = await r.json();
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await ctx.newPage();
  await page.goto(server.url + "/#/dashboards/" + board.id);
  await eventually(async () => (await page.getByTestId("panel").count()) === 2, { what: "2 panels" });
  await eventually(
    () => page.evaluate(() => window.__telegauge.charts().every((c) => c.series.length > 0 && c.series.every((s) => s.count > 0))),
    { what: "panels to draw series" },
  );
  const view = await page.evaluate(() => window.__telegauge.view());
  assert.equal(view.name, "Temperatures");
  await page.goto(server.url + "/#/dashboards");
  await eventually(async () => (await page.getByTestId("dashboard-item").count()) === 1, { what: "the board listed" });
  await ctx.close();
});

test("screenshots of every view at phone and desktop sizes, light and dark", async () => {
  const r = await server.json("/api/v1/dashboards");
  const boardId = r.dashboards[0]?.id;
  for (const [name, viewport] of sizes) {
    for (const scheme of ["light", "dark"]) {
      const ctx = await browser.newContext({ viewport, colorScheme: scheme });
      const page = await ctx.newPage();
      await page.goto(server.url + "/#/");
      await eventually(async () => (await page.getByTestId("device-row").count()) === 6, { what: "fleet" });
      await page.waitForLoadState("networkidle").catch(() => {});
      await screenshot(page, `fleet-${name}-${scheme}`);
      await page.goto(server.url + "/#/device/demo-0000?range=5m");
      await eventually(() => page.evaluate(() => window.__telegauge.view().state === "ready"), { what: "device view" });
      await screenshot(page, `device-${name}-${scheme}`);
      if (boardId) {
        await page.goto(server.url + "/#/dashboards/" + boardId);
        await eventually(async () => (await page.getByTestId("panel").count()) > 0, { what: "board" });
        await screenshot(page, `dashboard-${name}-${scheme}`);
      }
      await ctx.close();
    }
  }
});
