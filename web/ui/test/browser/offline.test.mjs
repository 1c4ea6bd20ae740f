// With the browser offline for 10 s and back, the chart ends with no gap and
// no duplicate compared with /api/v1/query.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { eventually, launchBrowser, record, screenshot, startServer } from "./harness.mjs";

let server, browser;
before(async () => {
  server = await startServer(["--demo", "3", "--heartbeat", "2s"]);
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
  await server?.stop();
});

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

test("10 s offline: no gap, no duplicate", async () => {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await ctx.newPage();
  const series = "demo-0000/temperature";
  await page.goto(server.url + "/#/device/demo-0000?range=5m");
  await eventually(() => page.evaluate(() => window.__telegauge.view().state === "ready" && window.__telegauge.live()?.status === "live"), { what: "live device view" });
  const loaded = Date.now();
  await sleep(3000); // live readings before the outage

  await ctx.setOffline(true);
  await eventually(() => page.evaluate(() => window.__telegauge.live()?.stale === true), { what: "the page to show stale data" });
  await eventually(async () => !(await page.getByTestId("stale-banner").isHidden()), { what: "the stale banner" });
  await screenshot(page, "device-offline");
  await sleep(10000); // the outage
  await ctx.setOffline(false);
  const back = Date.now();
  await eventually(() => page.evaluate(() => { const s = window.__telegauge.live(); return s?.status === "live" && !s.stale; }), { what: "live again", timeout: 30000 });
  // Readings for a few seconds after the outage, so that the compared
  // window runs from before it to after it.
  await eventually(() => page.evaluate(([s, t]) => (window.__telegauge.charts().find((c) => c.key === s)?.series[0]?.lastT ?? 0) > t, [series, back + 4000]), { what: "readings after the outage" });
  const state = await page.evaluate(() => window.__telegauge.live());
  record("offline_10s", { transport: state.transport, reconnects: state.reconnects });

  // Compare complete buckets from just after history loaded to just before
  // now: every bucket the server has, the chart has, with the same values.
  const data = await page.evaluate((s) => window.__telegauge.chartData(s), series);
  const chart = data.series[0];
  assert.ok(chart.step > 0, "the 5 min view draws buckets");
  const step = chart.step;
  const from = Math.ceil((loaded + 2000) / step) * step;
  const to = Math.floor((back + 3000) / step) * step;
  assert.ok(to - from > 10000 + step, "the window spans the outage");
  const q = await server.json(`/api/v1/query?series=${series}&from=${from}&to=${to}&step=${step / 1000}s&maxPoints=20000`);
  const want = q.series[0];
  const got = { t: [], v: [], min: [], max: [] };
  for (let i = 0; i < chart.t.length; i++) {
    if (chart.t[i] >= from && chart.t[i] < to) {
      got.t.push(chart.t[i]);
      got.v.push(chart.v[i]);
      got.min.push(chart.min[i]);
      got.max.push(chart.max[i]);
    }
  }
  for (let i = 1; i < chart.t.length; i++) assert.ok(chart.t[i] > chart.t[i - 1], "no duplicate bucket");
  assert.deepEqual(got.t, want.t, "every bucket of the window, no gap and nothing extra");
  assert.deepEqual(got.min, want.min, "bucket minima");
  assert.deepEqual(got.max, want.max, "bucket maxima");
  for (let i = 0; i < want.t.length; i++) {
    assert.ok(Math.abs(got.v[i] - want.avg[i]) <= 1e-9 * Math.max(1, Math.abs(want.avg[i])), `bucket ${want.t[i]} mean ${got.v[i]} vs ${want.avg[i]}`);
  }
  assert.ok(want.t.some((t) => t > back - 12000 && t < back), "buckets inside the outage are compared");
  await ctx.close();
});
