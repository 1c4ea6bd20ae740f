// Package broker is Telegauge's embedded MQTT server (mochi-mqtt v2): its
// listeners, the hook that hands telemetry publishes to ingest, and device
// presence. It is the only package that imports mochi.
//
// The broker does not import ingest. It consumes a Sink (Offer never
// blocks) and, when the sink also implements Waiter, waits a bounded time
// for QoS 1 publishes, which is how a full ingest queue reaches a device as
// MQTT flow control. mochi runs hooks on each client's own goroutine, so the
// hook does only a prefix check and the offer; decoding happens in ingest.
//
// Presence: a device is online while at least one MQTT session publishes
// for it (anonymous mode). Changes go to Config.OnPresence.
//
// Broker.Run serves until its context ends; Close is idempotent.
package broker
