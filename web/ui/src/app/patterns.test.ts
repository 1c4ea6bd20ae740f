import { describe, expect, it } from "vitest";
import { expand, matches, patternError, splitPatterns } from "./patterns";
import { parseHash } from "./router";
import { rangeFromParams, rangeToParams } from "./ranges";

describe("patterns", () => {
  it("matches MQTT-style wildcards over device/metric", () => {
    expect(matches("#", "a/b")).toBe(true);
    expect(matches("a/#", "a/b")).toBe(true);
    expect(matches("a/+", "a/b")).toBe(true);
    expect(matches("+/b", "a/b")).toBe(true);
    expect(matches("+/b", "a/c")).toBe(false);
    expect(matches("a/b", "a/b")).toBe(true);
    expect(matches("b/#", "a/b")).toBe(false);
  });

  it("validates", () => {
    expect(patternError("dev1/temperature")).toBeNull();
    expect(patternError("+/+")).toBeNull();
    expect(patternError("#")).toBeNull();
    expect(patternError("a/b/c")).not.toBeNull();
    expect(patternError("#/a")).not.toBeNull();
    expect(patternError("a b/c")).not.toBeNull();
    expect(patternError("")).not.toBeNull();
  });

  it("expands against the fleet", () => {
    const fleet = [
      { id: "d2", metrics: ["t", "h"] },
      { id: "d1", metrics: ["t"] },
    ];
    expect(expand(["+/t"], fleet)).toEqual(["d1/t", "d2/t"]);
    expect(expand(["d2/#", "bad/pattern/x"], fleet)).toEqual(["d2/h", "d2/t"]);
    expect(splitPatterns("a/#\n +/t, x/y")).toEqual(["a/#", "+/t", "x/y"]);
  });
});

describe("routes and ranges", () => {
  it("parses hashes", () => {
    expect(parseHash("").view).toBe("fleet");
    expect(parseHash("#/").view).toBe("fleet");
    const d = parseHash("#/device/dev%2F1?range=24h");
    expect(d).toMatchObject({ view: "device", id: "dev/1" });
    expect(d.params.get("range")).toBe("24h");
    expect(parseHash("#/dashboards").view).toBe("dashboards");
    expect(parseHash("#/dashboards/abc")).toMatchObject({ view: "board", id: "abc" });
    expect(parseHash("#/nope/x/y").view).toBe("notfound");
  });

  it("parses the admin tabs", () => {
    expect(parseHash("#/admin")).toMatchObject({ view: "admin", tab: "devices" });
    expect(parseHash("#/admin/devices")).toMatchObject({ view: "admin", tab: "devices" });
    expect(parseHash("#/admin/users")).toMatchObject({ view: "admin", tab: "users" });
    expect(parseHash("#/admin/nope").view).toBe("notfound");
  });

  it("round-trips ranges through parameters", () => {
    const fb = { preset: "1h" as const };
    expect(rangeFromParams(new URLSearchParams("range=7d"), fb)).toEqual({ preset: "7d" });
    expect(rangeFromParams(new URLSearchParams("range=bogus"), fb)).toEqual(fb);
    expect(rangeFromParams(rangeToParams({ from: 1000, to: 5000 }), fb)).toEqual({ from: 1000, to: 5000 });
    expect(rangeFromParams(new URLSearchParams("from=5&to=1"), fb)).toEqual(fb);
  });
});
