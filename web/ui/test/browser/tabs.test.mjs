// Two tabs share one live connection; closing the leader hands it over.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { eventually, launchBrowser, startServer } from "./harness.mjs";

let server, browser;
before(async () => {
  server = await startServer(["--demo", "2", "--heartbeat", "2s"]);
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
  await server?.stop();
});

const live = (page) => page.evaluate(() => window.__telegauge.live());
const lastT = (page) => page.evaluate(() => Math.max(...window.__telegauge.charts().map((c) => c.series[0]?.lastT ?? 0)));
const connections = () => server.metric("telegauge_live_connections");

test("two tabs, one connection, hand-over", async () => {
  const ctx = await browser.newContext();
  const a = await ctx.newPage();
  await a.goto(server.url + "/#/device/demo-0000?range=5m");
  await eventually(async () => (await live(a))?.status === "live", { what: "tab A live" });
  const b = await ctx.newPage();
  await b.goto(server.url + "/#/device/demo-0001?range=5m");
  await eventually(async () => (await live(b))?.status === "live", { what: "tab B live" });

  const [la, lb] = [await live(a), await live(b)];
  assert.equal(la.leader !== lb.leader, true, "exactly one leader");
  const [leader, follower] = la.leader ? [a, b] : [b, a];
  await eventually(async () => (await connections()) === 1, { what: "one live connection for both tabs" });
  for (const p of [a, b]) {
    const t0 = await lastT(p);
    await eventually(async () => (await lastT(p)) > t0, { what: "both tabs get readings" });
  }

  await leader.close();
  await eventually(async () => (await live(follower))?.leader === true, { what: "the follower takes over", timeout: 20000 });
  await eventually(async () => (await live(follower))?.status === "live", { what: "live after hand-over" });
  await eventually(async () => (await connections()) === 1, { what: "still one connection" });
  const t0 = await lastT(follower);
  await eventually(async () => (await lastT(follower)) > t0, { what: "readings after hand-over" });
  await ctx.close();
});
