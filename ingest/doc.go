// Package ingest turns MQTT publishes into readings, rollups and live
// updates.
//
// The path of one publish:
//
//	broker hook --Offer--> shard queue --> shard goroutine:
//	    Decode + validate (DESIGN.md §3) -> series limits -> pending buckets
//	    (1s, 1m, 1h) + recent raw readings -> Config.OnReadings (the live hub)
//	every FlushInterval: pending buckets --> store (as deltas, merged there)
//
// Devices are hashed onto shards. Each shard has one goroutine, the only
// writer of its devices and series; queries (devices, unflushed buckets,
// recent readings) read them under the shard's mutex, which the goroutine
// holds once per batch, not per reading. There is no lock shared by shards on
// the hot path.
//
// Offer never blocks: when a shard's queue is full the message is refused
// and counted against its device as an overload rejection. OfferWait (for
// QoS 1) waits a bounded time for space, which is how MQTT flow control
// reaches a device that publishes faster than the server can decode.
//
// Rejections are counted per device and per reason and logged at Debug; a
// rejected reading never reaches a rollup or a viewer, and never stops
// anything else.
//
// Lock order: shard.mu, then queue.mu is never taken while holding it (the
// queue has its own mutex, used by producers and the shard goroutine only).
package ingest
