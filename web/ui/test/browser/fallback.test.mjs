// With WebSocket upgrades refused the client falls back to SSE; with SSE
// refused too, to long polling; data flows either way.
import { test } from "node:test";
import assert from "node:assert/strict";
import { eventually, launchBrowser, startServer } from "./harness.mjs";

for (const [transports, want] of [["sse,longpoll", "sse"], ["longpoll", "longpoll"]]) {
  test(`only ${transports}: the client uses ${want}`, async () => {
    const server = await startServer(["--demo", "2", "--heartbeat", "2s", "--transports", transports]);
    const browser = await launchBrowser();
    try {
      const page = await browser.newPage();
      await page.goto(server.url + "/#/device/demo-0000?range=5m");
      await eventually(() => page.evaluate(() => window.__telegauge.live()?.status === "live"), { what: "live", timeout: 30000 });
      const state = await page.evaluate(() => window.__telegauge.live());
      assert.equal(state.transport, want);
      assert.equal(await page.getByTestId("conn-badge").getAttribute("data-transport"), want);
      const lastT = () => page.evaluate(() => Math.max(...window.__telegauge.charts().map((c) => c.series[0]?.lastT ?? 0)));
      const t0 = await lastT();
      await eventually(async () => (await lastT()) > t0, { what: `readings over ${want}` });
      // The server sees that transport, and only it.
      const label = want === "longpoll" ? "longpoll" : want;
      await eventually(async () => (await server.metric("telegauge_live_frames_sent_total", { transport: label })) > 0, { what: `frames sent over ${label}` });
      assert.equal(await server.metric("telegauge_live_frames_sent_total", { transport: "ws" }), 0);
    } finally {
      await browser.close();
      await server.stop();
    }
  });
}
