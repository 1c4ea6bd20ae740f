// Browser-test harness: the real telegauge binary on free loopback ports,
// Debian's Chromium driven by playwright-core (never a browser a tool
// downloads for itself), screenshots saved as artifacts.
//
// Environment: TELEGAUGE_BIN (the binary, built with the dashboard),
// ARTIFACTS (where screenshots and measurements go), CHROMIUM (default
// /usr/bin/chromium).

import { spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { chromium } from "playwright-core";

export const BIN = process.env.TELEGAUGE_BIN || resolve("../../bin/telegauge");
export const ARTIFACTS = process.env.ARTIFACTS || resolve("../../test-artifacts");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";

/**
 * Starts `telegauge serve` with extra args and a history database of its
 * own (removed at stop); resolves once it serves.
 */
export async function startServer(args = []) {
  const dataDir = mkdtempSync(join(tmpdir(), "telegauge-browser-"));
  const proc = spawn(
    BIN,
    ["serve", "--http-addr", "127.0.0.1:0", "--mqtt-addr", "127.0.0.1:0", "--log-format", "json", "--data-dir", dataDir, ...args],
    { stdio: ["ignore", "ignore", "pipe"] },
  );
  const log = [];
  const ready = new Promise((resolveReady, reject) => {
    let buf = "";
    const timer = setTimeout(() => reject(new Error("server did not start:\n" + log.join("\n"))), 15000);
    proc.stderr.on("data", (chunk) => {
      buf += chunk;
      let i;
      while ((i = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        log.push(line);
        if (log.length > 200) log.shift();
        try {
          const rec = JSON.parse(line);
          if (rec.msg === "telegauge serving") {
            clearTimeout(timer);
            resolveReady({ url: rec.dashboard, mqtt: rec.mqtt });
          }
        } catch {
          // not JSON: a panic or a library's output; kept in log
        }
      }
    });
    proc.on("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`server exited with ${code}:\n` + log.join("\n")));
    });
  });
  const { url, mqtt } = await ready;
  proc.removeAllListeners("exit");
  const exited = new Promise((r) => proc.on("exit", (code, sig) => r({ code, sig })));
  return {
    url,
    mqtt,
    log,
    dataDir,
    /** Stops the server with SIGTERM and checks it exited cleanly. */
    async stop() {
      proc.kill("SIGTERM");
      const { code } = await exited;
      rmSync(dataDir, { recursive: true, force: true });
      if (code !== 0) throw new Error(`server exit status ${code}:\n` + log.slice(-20).join("\n"));
    },
    /** Sums a Prometheus metric's samples whose labels include `labels`. */
    async metric(name, labels = {}) {
      const text = await (await fetch(url + "/metrics")).text();
      let sum = 0;
      for (const line of text.split("\n")) {
        if (!line.startsWith(name)) continue;
        const m = line.match(/^([a-zA-Z_:]+)(\{([^}]*)\})? (\S+)$/);
        if (!m || m[1] !== name) continue;
        const have = Object.fromEntries(
          (m[3] || "").split(",").filter(Boolean).map((kv) => {
            const [k, v] = kv.split("=");
            return [k, v.replace(/^"|"$/g, "")];
          }),
        );
        if (Object.entries(labels).every(([k, v]) => have[k] === v)) sum += Number(m[4]);
      }
      return sum;
    },
    async json(path) {
      const r = await fetch(url + path);
      if (!r.ok) throw new Error(`${path}: ${r.status} ${await r.text()}`);
      return r.json();
    },
  };
}

/** Runs `telegauge users ARGS` beside a running server (on its data
 *  directory); resolves with its standard output. */
export function users(server, args) {
  const proc = spawn(BIN, ["users", ...args, "--data-dir", server.dataDir], { stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  let err = "";
  proc.stdout.on("data", (c) => (out += c));
  proc.stderr.on("data", (c) => (err += c));
  return new Promise((resolveDone, reject) =>
    proc.on("exit", (code) => (code === 0 ? resolveDone(out) : reject(new Error(`users ${args.join(" ")}: ${code}\n${err}`)))),
  );
}

/** Adds users (`telegauge users add NAME --role ROLE`, for each name:
 *  role) beside a running server and waits until the server takes them
 *  (within a second) and requires logins; resolves with the tokens by name. */
export async function addUsers(server, roles) {
  const tokens = {};
  for (const [name, role] of Object.entries(roles)) tokens[name] = (await users(server, ["add", name, "--role", role])).trim();
  await eventually(async () => (await fetch(server.url + "/api/v1/devices")).status === 401, { what: "logins required" });
  return tokens;
}

/** A browser context whose pages record Content-Security-Policy
 *  violations in window.__csp. */
export async function cspContext(browser, options) {
  const ctx = await browser.newContext(options);
  await ctx.addInitScript(() => {
    window.__csp = [];
    document.addEventListener("securitypolicyviolation", (e) => window.__csp.push(`${e.violatedDirective}: ${e.blockedURI}`));
  });
  return ctx;
}

/** Fills in and submits the login page. */
export async function signIn(page, name, password) {
  await page.getByTestId("login-name").fill(name);
  await page.getByTestId("login-password").fill(password);
  await page.getByTestId("login-submit").click();
}

/** Runs `telegauge sim devices` against a server; resolves when it exits. */
export function simDevices(server, args) {
  const proc = spawn(BIN, ["sim", "devices", "--broker", "tcp://" + server.mqtt, ...args], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  proc.stdout.on("data", (c) => (out += c));
  proc.stderr.on("data", (c) => (out += c));
  const done = new Promise((resolveDone, reject) =>
    proc.on("exit", (code) => (code === 0 ? resolveDone(out) : reject(new Error(`sim devices: ${code}\n${out}`)))),
  );
  return { done, stop: () => proc.kill("SIGINT") };
}

/** Launches headless Chromium with the flags this machine needs. */
export function launchBrowser() {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--disable-dev-shm-usage",
    ],
  });
}

/** Saves a screenshot under ARTIFACTS/screenshots. */
export async function screenshot(page, name) {
  const dir = join(ARTIFACTS, "screenshots");
  mkdirSync(dir, { recursive: true });
  await page.screenshot({ path: join(dir, name + ".png"), fullPage: false });
}

/** Records a measurement under ARTIFACTS/measurements.json (merged). */
const measurements = {};
export function record(name, value) {
  measurements[name] = value;
  mkdirSync(ARTIFACTS, { recursive: true });
  writeFileSync(join(ARTIFACTS, "measurements.json"), JSON.stringify(measurements, null, 2));
  console.log(`measurement ${name}: ${JSON.stringify(value)}`);
}

/** Polls f until it returns a truthy value or the timeout passes. */
export async function eventually(f, { timeout = 15000, interval = 100, what = "condition" } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      const v = await f();
      if (v) return v;
      last = v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`${what} not met after ${timeout} ms: ${last}`);
    await new Promise((r) => setTimeout(r, interval));
  }
}
