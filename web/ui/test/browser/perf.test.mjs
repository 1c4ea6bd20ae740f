// Measurements, reported, not asserted: first meaningful paint of the device
// view with 24 h of history for 8 metrics, and frame times while 20 series
// update at 10 readings/s each.
import { after, before, test } from "node:test";
import { eventually, launchBrowser, record, screenshot, simDevices, startServer } from "./harness.mjs";

let server, browser, fleets = [];
before(async () => {
  server = await startServer(["--heartbeat", "2s", "--late-window", "25h"]);
  browser = await launchBrowser();
});
after(async () => {
  for (const f of fleets) f.stop();
  await Promise.allSettled(fleets.map((f) => f.done));
  await browser?.close();
  await server?.stop();
});

test("device view with 24 h of history for 8 metrics: first meaningful paint", async () => {
  fleets.push(simDevices(server, ["--devices", "1", "--id-prefix", "perf-", "--metrics", "8", "--rate", "1", "--qos", "1",
    "--backfill", "24h", "--backfill-step", "60s", "--duration", "10m"]));
  await eventually(async () => {
    const q = await server.json("/api/v1/query?series=perf-0000/temperature&from=-24h&step=1h");
    return q.series[0].count.reduce((a, b) => a + b, 0) >= 1430;
  }, { what: "24 h of history stored", timeout: 60000 });
  const paints = [];
  for (let i = 0; i < 5; i++) {
    const ctx = await browser.newContext({ viewport: { width: 1920, height: 1080 } });
    const page = await ctx.newPage();
    await page.goto(server.url + "/#/device/perf-0000?range=24h");
    const ms = await eventually(() => page.evaluate(() => window.__telegauge.marks()["tg:device-view-painted"]?.[0]), { what: "the paint mark" });
    paints.push(Math.round(ms));
    if (i === 0) await screenshot(page, "device-24h-8-metrics");
    await ctx.close();
  }
  const sorted = [...paints].sort((x, y) => x - y);
  record("device_view_24h_8_metrics_paint_ms", { runs: paints, median: sorted[2], max: sorted[4] });
});

test("20 series at 10 readings/s: frame times", async () => {
  fleets.push(simDevices(server, ["--devices", "5", "--id-prefix", "fps-", "--metrics", "4", "--rate", "10", "--duration", "10m"]));
  const r = await fetch(server.url + "/api/v1/dashboards", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ name: "fps", panels: [{ title: "20 series", series: ["fps-0000/#", "fps-0001/#", "fps-0002/#", "fps-0003/#", "fps-0004/#"], range: "5m" }] }),
  });
  const board = await r.json();
  const ctx = await browser.newContext({ viewport: { width: 1920, height: 1080 } });
  const page = await ctx.newPage();
  await page.goto(server.url + "/#/dashboards/" + board.id);
  await eventually(() => page.evaluate(() => window.__telegauge.charts()[0]?.series.length === 20), { what: "20 series", timeout: 30000 });
  await page.evaluate(() => window.__telegauge.frames.start());
  await new Promise((r) => setTimeout(r, 10000));
  const stats = await page.evaluate(() => window.__telegauge.frames.stop());
  const draws = await page.evaluate(() => window.__telegauge.charts()[0].draws);
  delete stats.intervals;
  record("dashboard_20_series_10hz_frames", { ...stats, chartDraws: draws });
  await ctx.close();
});
