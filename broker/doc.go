// Package broker is Telegauge's embedded MQTT server (mochi-mqtt v2): its
// listeners, the hook that hands telemetry publishes to ingest, and device
// presence. It is the only package that imports mochi.
//
// The broker does not import ingest. It consumes a Sink, called on each
// client's own goroutine (mochi runs hooks there): ingest decodes and folds
// the publish in on that goroutine, so a saturated server reads sockets more
// slowly and TCP and MQTT flow control reach the device, instead of a queue
// filling up and dropping. The sink never waits on viewers or storage.
//
// Presence: a device is online while at least one MQTT session publishes
// for it (anonymous mode). Changes go to Config.OnPresence.
//
// Limits (limits.go): packet size, the QoS 1/2 in-flight window,
// connections per IP (checked by a wrapper around every listener before
// mochi sees the connection) and a keep-alive ceiling; each refusal is
// counted in telegauge_mqtt_limit_refusals_total and logged, rate-limited,
// with the device. Readings per second and series per device are ingest's.
//
// Broker.Run serves until its context ends; Close is idempotent.
//
// External broker mode (upstream.go): instead of serving devices itself, a
// node can read telemetry from an existing MQTT broker or cluster with the
// Eclipse paho client, through a QoS 1 shared subscription
// ($share/{group}/{prefix}/#) so that several nodes split the readings.
// The sink then runs on paho's one dispatch goroutine, and a message is
// acknowledged only once the sink took it. Presence comes from readings:
// a device is online while it published within the presence window.
// Upstream.Run connects, resubscribes on every reconnection and returns
// once disconnected; Close is idempotent.
package broker
