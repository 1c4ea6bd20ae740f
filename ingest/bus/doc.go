// Package bus joins Telegauge nodes into a cluster over core NATS (no
// JetStream): every node publishes the readings it accepted from its own
// devices and its devices' presence, and applies the others' locally, so
// that every node's live streams, device list and queries cover every
// device.
//
// What goes where:
//
//	own readings:    aggregator --DrainReadings (hub frame)--> Bus.Send --run loop--> <subject>.readings.<node>
//	remote readings: NATS --subscription--> Aggregator.ApplyRemote (rollups, raw, device stats) + Hub.Publish (live)
//	presence:        broker --LocalPresence--> Config.Presence when the cluster-wide state changes, and <subject>.presence.<node>
//
// History. With a history per node (SQLite), remote readings are persisted
// like local ones, so every node's history is complete while it was
// connected. With one shared PostgreSQL, only the origin node writes a
// reading (buckets merge, so each reading counts once); the others keep
// remote readings in memory for live streams and recent raw queries only,
// and their rollup queries see another node's readings once that node has
// flushed them (within its --flush-interval).
//
// Writer ids need no namespacing per node: store watermarks live in each
// process's store value (store.SQL), never in the shared database, so two
// nodes' shard 0 never meet.
//
// While NATS is unreachable the node keeps serving its own devices and
// viewers; nats.go buffers up to ReconnectBufBytes of publishes and sends
// them on reconnect. Readings beyond that buffer are counted as dropped
// (reason "send"): the other nodes never see them live, and, with SQLite
// per node, never in their histories (with shared PostgreSQL they are in
// history, written by their origin). Remote nodes silent for NodeTimeout
// have their devices' presence withdrawn; on reconnect every node sends
// its full presence again.
//
// Safety: all methods are safe for concurrent use. Send and LocalPresence
// never block (they queue for Run's goroutine, which alone publishes).
// Subscription callbacks run on nats.go's goroutines, which Run waits for
// (Drain) before it returns. Locks: outMu guards the outgoing queue and
// is never held with mu; mu guards presence and is held while calling
// Config.Presence, which takes the aggregator's shard lock and the hub's
// pending lock (both leaves).
package bus
