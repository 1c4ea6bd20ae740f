// How a device connects with a token the admin API issued: the broker's
// host and port from its listener URLs, and an example command line.

import type { IssuedDevice } from "./api";

/** A broker listener: scheme, host and port. */
export interface Listener {
  url: string;
  scheme: string;
  host: string;
  port: string;
}

/** Parses the listener URLs (mqtt://host:1883, mqtts://..., ws://host:port/mqtt);
 *  ones that do not parse are left out. */
export function listeners(urls: string[]): Listener[] {
  const out: Listener[] = [];
  for (const url of urls) {
    try {
      const u = new URL(url);
      out.push({ url, scheme: u.protocol.replace(/:$/, ""), host: u.hostname.replace(/^\[|\]$/g, ""), port: u.port });
    } catch {
      /* not a URL: nothing to show */
    }
  }
  return out;
}

/** Single-quotes s for a POSIX shell. */
export function shellQuote(s: string): string {
  return /^[A-Za-z0-9._\/:@%+=,-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

/** An example mosquitto_pub command publishing one reading as the device,
 *  over the first plain or TLS MQTT listener; "" if there is none. */
export function examplePublish(d: IssuedDevice): string {
  const l = listeners(d.brokers).find((x) => x.scheme === "mqtt" || x.scheme === "mqtts");
  if (!l) return "";
  const tls = l.scheme === "mqtts" ? " --capath /etc/ssl/certs" : "";
  const port = l.port || (l.scheme === "mqtts" ? "8883" : "1883");
  return (
    `mosquitto_pub -h ${shellQuote(l.host)} -p ${port}${tls} -u ${shellQuote(d.id)} -P ${shellQuote(d.token)} ` +
    `-t ${shellQuote(d.topic)} -m '{"temperature": 21.5}'`
  );
}
