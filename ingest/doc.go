// Package ingest turns MQTT publishes into readings, rollups and live
// updates.
//
// The path of one publish, all on the publishing connection's goroutine:
//
//	broker hook --Offer--> Decode + validate (DESIGN.md §3; a pooled Decoder,
//	    no lock) --> the device's shard, under its mutex: series limits,
//	    pending buckets (1s, 1m, 1h), recent raw readings, device stats, and
//	    the shard's live list --> Config.Notify (the hub takes the live list
//	    with DrainReadings at its next frame)
//	every FlushInterval (Run): pending buckets --> store, as deltas merged there
//
// Devices are hashed onto shards (4 per GOMAXPROCS by default). A shard's
// mutex is held for one message's worth of map lookups and bucket updates,
// so publishers on different cores rarely meet and nothing on the hot path
// is shared by all shards. Doing the work where the message was read, rather
// than queueing it for a consumer goroutine, makes a saturated server read
// sockets more slowly (TCP and MQTT flow control reach the device) instead
// of dropping: see the NOTE on Aggregator for the measurement behind this.
//
// Offer never waits on a viewer or on storage: live readings wait in a
// bounded per-shard list for the hub (beyond MaxLiveReadings the oldest are
// dropped from the live stream and reported as a gap; history keeps them),
// and flushes write to the store from Run's goroutine, outside the shard
// locks. The one wait it makes is on purpose: a device over its reading
// rate has its publish held, with no lock held, for up to a second (see
// Limits below).
//
// Rejections are counted per device and per reason and logged at Debug; a
// rejected reading never reaches a rollup or a viewer, and never stops
// anything else.
//
// Locks: shard.mu guards one shard; only DrainReadings holds several at
// once, taking them in shard index order. Aggregator.flushMu serialises
// flushes and is taken before any shard's mu, never while holding one.
// Aggregator.limitLog's mutex (the budget of limit warnings) is a leaf,
// taken under a shard's mu and nothing else.
//
// Limits per device (limits.go): readings per second (a token bucket in the
// device's state, over arrival times) and series. A device over its rate is
// slowed, never refused: its readings are accepted, and Offer holds the
// publishing connection until the bucket has refilled (at most a second per
// publish; StopThrottling and Run's end cut the waits short), so the broker
// reads the device's next packets at its rate. Readings over the series
// limit are rejected as too_many_series. Either way the device is named in
// a rate-limited warning.
package ingest
