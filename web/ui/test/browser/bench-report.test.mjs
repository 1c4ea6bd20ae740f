// The `telegauge bench` HTML report (simulators.WriteBenchHTML) opened from
// a file:// URL, offline: no page errors, no requests, every chart drawn,
// and a scenario named "</script><script>alert(1)</script>" stays text.
// The Go test TestBenchHTMLSampleFile writes the sample report.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { launchBrowser, screenshot } from "./harness.mjs";

const ROOT = fileURLToPath(new URL("../../../../", import.meta.url));
const GO = process.env.GO || "go";

let dir, file, browser;
before(async () => {
  dir = mkdtempSync(join(tmpdir(), "telegauge-bench-html-"));
  file = join(dir, "report.html");
  execFileSync(GO, ["test", "-count=1", "-run", "^TestBenchHTMLSampleFile$", "./simulators/"], {
    cwd: ROOT,
    env: { ...process.env, TELEGAUGE_BENCH_HTML_OUT: file },
    stdio: ["ignore", "inherit", "inherit"],
  });
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

// The sample has three results with throughput samples and five with a
// latency distribution (see sampleBenchReport).
const THROUGHPUT_PLOTS = 3;
const CDF_SERIES = 5;

for (const view of [
  { name: "desktop", viewport: { width: 1280, height: 800 }, colorScheme: "light" },
  { name: "phone-dark", viewport: { width: 390, height: 844 }, colorScheme: "dark", isMobile: true, hasTouch: true },
]) {
  test(`bench report draws offline (${view.name})`, async () => {
    const ctx = await browser.newContext({ ...view, offline: true });
    const page = await ctx.newPage();
    const problems = [];
    page.on("pageerror", (e) => problems.push("page error: " + e.message));
    page.on("console", (m) => m.type() === "error" && problems.push("console error: " + m.text()));
    page.on("dialog", (d) => {
      problems.push("dialog: " + d.message());
      d.dismiss();
    });
    page.on("request", (r) => r.url().startsWith("file:") || problems.push("request: " + r.url()));

    await page.goto(pathToFileURL(file).href);
    await page.waitForSelector("#latency .uplot canvas");

    const plots = await page.evaluate(() =>
      [...document.querySelectorAll(".uplot")].map((u) => {
        const c = u.querySelector("canvas");
        const box = c.getBoundingClientRect();
        // Something was drawn: the canvas is not all transparent.
        const px = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
        let inked = 0;
        for (let i = 3; i < px.length; i += 4) if (px[i] !== 0) inked++;
        return { parent: u.parentElement.id, w: box.width, h: box.height, cw: c.width, ch: c.height, inked };
      }),
    );
    assert.equal(plots.length, THROUGHPUT_PLOTS + 1, JSON.stringify(plots));
    for (const p of plots) {
      assert.ok(p.w > 0 && p.h > 0 && p.cw > 0 && p.ch > 0, "canvas has a size: " + JSON.stringify(p));
      assert.ok(p.inked > 0, "canvas has ink: " + JSON.stringify(p));
      assert.ok(p.w <= view.viewport.width, "plot fits the viewport: " + JSON.stringify(p));
    }
    assert.equal(await page.locator("#latency .u-legend .u-series").count(), CDF_SERIES + 1, "legend: x and one line per scenario");

    const layout = await page.evaluate(() => ({
      scroll: document.documentElement.scrollWidth,
      inner: window.innerWidth,
      evil: [...document.querySelectorAll("#throughput h3")].map((h) => h.textContent),
      scripts: document.scripts.length,
    }));
    assert.ok(layout.scroll <= layout.inner, `no sideways scrolling: ${layout.scroll} > ${layout.inner}`);
    assert.ok(layout.evil.includes("</script><script>alert(1)</script>"), "the hostile name is text: " + layout.evil);
    assert.equal(layout.scripts, 3);

    await screenshot(page, "bench-report-" + view.name);
    await page.locator("#latency").scrollIntoViewIfNeeded();
    await screenshot(page, "bench-report-" + view.name + "-latency");
    assert.deepEqual(problems, []);
    await ctx.close();
  });
}
