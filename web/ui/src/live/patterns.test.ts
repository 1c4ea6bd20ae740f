import { describe, expect, it } from "vitest";
import { compact, coversDevice, Matcher, matches, normalize, patternError } from "./patterns";

describe("patterns", () => {
  it("match MQTT-style over {device}/{metric}", () => {
    expect(matches("boiler-1/temperature", "boiler-1/temperature")).toBe(true);
    expect(matches("boiler-1/temperature", "boiler-1/pressure")).toBe(false);
    expect(matches("boiler-1/#", "boiler-1/pressure")).toBe(true);
    expect(matches("boiler-1/+", "boiler-1/pressure")).toBe(true);
    expect(matches("+/temperature", "boiler-2/temperature")).toBe(true);
    expect(matches("+/temperature", "boiler-2/pressure")).toBe(false);
    expect(matches("#", "x/y")).toBe(true);
    expect(matches("+/+", "x/y")).toBe(true);
    expect(matches("boiler-1/#", "boiler-10/x")).toBe(false);
  });

  it("say which devices' presence a pattern covers", () => {
    expect(coversDevice("boiler-1/#", "boiler-1")).toBe(true);
    expect(coversDevice("boiler-1/t", "boiler-2")).toBe(false);
    expect(coversDevice("+/t", "anything")).toBe(true);
    expect(coversDevice("#", "anything")).toBe(true);
    expect(new Matcher(["a/x", "+/y"]).coversDevice("b")).toBe(true);
  });

  it("are validated like the server does", () => {
    expect(patternError("a/b")).toBeNull();
    expect(patternError("#")).toBeNull();
    expect(patternError("+/#")).toBeNull();
    expect(patternError("a/b/c")).not.toBeNull();
    expect(patternError("a/#/b")).not.toBeNull();
    expect(patternError("#/b")).not.toBeNull();
    expect(patternError("a")).not.toBeNull();
    expect(patternError("")).not.toBeNull();
    expect(patternError("a b/c")).not.toBeNull();
  });

  it("normalize drops repeats and covered patterns", () => {
    expect(normalize(["a/x", "a/x", "a/#", "b/y", "+/y"])).toEqual(["+/y", "a/#"]);
    expect(normalize(["a/+", "a/#"])).toEqual(["a/#"]);
    expect(normalize(["a/x", "+/+"])).toEqual(["#"]);
  });

  it("compact widens a subscription the server would refuse (over 256 patterns)", () => {
    const many = Array.from({ length: 300 }, (_, i) => `dev${i % 10}/m${i}`);
    expect(compact(many)).toEqual(Array.from({ length: 10 }, (_, i) => `dev${i}/#`).sort());
    const devices = Array.from({ length: 300 }, (_, i) => `dev${i}/m`);
    expect(compact(devices)).toEqual(["#"]);
    const m = new Matcher(compact(many));
    for (const id of many) expect(m.has(id)).toBe(true);
  });
});
