// Package dashboard is the read side and the live side of Telegauge, with
// no HTTP in it: history queries (Querier: tier choice, point caps, merging
// the store with the aggregator's unflushed buckets) and the live hub (Hub:
// frames, cursors, the resume ring, subscriptions, fan-out, heartbeats and
// the slow-viewer policy). The web package puts the four transports on top.
//
// Live delivery: the aggregator calls Hub.Publish after each batch. The hub's
// Run loop gathers everything published since the previous frame into one
// frame, numbers it (the cursor), keeps it in a ring bounded by time and
// bytes for resumption, filters it once per distinct subscription (a group)
// and encodes that once, then queues the shared message to every viewer of
// the group. Each viewer's queue is bounded in bytes; on overflow the viewer
// is skipped to the newest frame and told the time range it missed (a gap).
// Publish never waits for a viewer, and a slow viewer never delays another.
//
// Goroutines: Hub.Run is the only goroutine of the package. Transports own
// their connection goroutines and drain their Viewer from them.
//
// Lock order: Hub.mu, then Viewer.mu. Hub.pendMu is never held with either.
package dashboard
