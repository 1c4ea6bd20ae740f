// Package simulators drives Telegauge from the outside, as libraries that
// `telegauge sim`, `telegauge bench`, `serve --demo` and tests call:
//
//   - RunDevices: a fleet of MQTT devices, one Eclipse paho client each,
//     publishing realistic readings (Pattern) in the shapes of DESIGN.md §3,
//     over TCP, TLS or WebSocket; optionally on flaky links (resets, silent
//     stalls) with an offline buffer, and with malformed messages mixed in.
//   - RunLoad: a fast-path load generator with a minimal hand-written MQTT
//     3.1.1 publisher (rawmqtt.go), for rates at which paho itself would be
//     the bottleneck.
//   - RunViewers: a swarm of live viewers speaking the four transports of
//     DESIGN.md §4 (WebSocket, SSE, long poll, short poll), each resuming
//     from its last cursor after a reconnect, measuring frames, duplicates,
//     gaps and publish-to-receive latency; optionally flaky, with an
//     exactly-once verdict.
//   - RunBench: the benchmark matrix of `telegauge bench` (BenchReport),
//     and WriteBenchHTML, its report with plots.
//
// Every Run function blocks until its Duration passes, its work is done or
// its context ends, and returns only after every goroutine it started has
// exited. Live progress is read from the optional Counters value in each
// config (DevicesCounters, LoadCounters, ViewersCounters), whose methods are
// safe for concurrent use. Patterns and the stream parsers are not safe for
// concurrent use: each simulated device or viewer owns its own.
//
// Nothing here installs signal handlers or reads flags; time for message
// timestamps and latency comes from an injected Now.
package simulators
