import { describe, expect, it } from "vitest";
import { examplePublish, listeners, shellQuote } from "./mqtthint";

describe("device connection hint", () => {
  const issued = { id: "boiler-1", token: "tg_abc-DEF_123", replaced: false, topic: "telemetry/boiler-1", brokers: [] as string[] };

  it("parses listener URLs", () => {
    expect(listeners(["mqtt://127.0.0.1:1883", "mqtts://[2001:db8::1]:8883", "ws://ops.example.com:8083/mqtt", "::nonsense"])).toEqual([
      { url: "mqtt://127.0.0.1:1883", scheme: "mqtt", host: "127.0.0.1", port: "1883" },
      { url: "mqtts://[2001:db8::1]:8883", scheme: "mqtts", host: "2001:db8::1", port: "8883" },
      { url: "ws://ops.example.com:8083/mqtt", scheme: "ws", host: "ops.example.com", port: "8083" },
    ]);
  });

  it("builds a mosquitto_pub example over the first MQTT listener", () => {
    expect(examplePublish({ ...issued, brokers: ["ws://h:8083/mqtt", "mqtt://10.0.0.5:1883"] })).toBe(
      `mosquitto_pub -h 10.0.0.5 -p 1883 -u boiler-1 -P tg_abc-DEF_123 -t telemetry/boiler-1 -m '{"temperature": 21.5}'`,
    );
    expect(examplePublish({ ...issued, brokers: ["mqtts://mqtt.example.com:8883"] })).toContain("-p 8883 --capath /etc/ssl/certs");
    expect(examplePublish({ ...issued, brokers: ["ws://h:8083/mqtt"] })).toBe("");
  });

  it("quotes for the shell only when needed", () => {
    expect(shellQuote("boiler-1")).toBe("boiler-1");
    expect(shellQuote("a b")).toBe("'a b'");
    expect(shellQuote("it's")).toBe(`'it'\\''s'`);
  });
});
