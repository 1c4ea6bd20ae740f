// The live-client library: live readings from Telegauge over WebSocket,
// SSE, long poll or short poll, shared by the tabs of a browser, every
// reading delivered once (web/PROTOCOL.md). The app imports from here only.

export { createLive } from "./live";
// The series-pattern rules, so that the app validates and matches patterns
// exactly as the connection does.
export { matches, patternError } from "./patterns";
export type {
  ConnectionState,
  Handlers,
  Live,
  LiveOptions,
  Point,
  Presence,
  Status,
  Subscription,
  Transport,
} from "./types";
