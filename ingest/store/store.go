package store

import (
	"context"
	"errors"
	"time"

	"github.com/telegauge/telegauge/ingest/rollup"
)

// ErrClosed is returned by a store used after Close.
var ErrClosed = errors.New("store closed")

// ErrNotFound is returned when a record asked for by key (a board, a user,
// a device) does not exist.
var ErrNotFound = errors.New("not found")

// Entry is one bucket of one series at one tier.
type Entry struct {
	Series string
	Tier   rollup.Tier
	rollup.Bucket
}

// Batch is one flush of one writer: the delta buckets since its previous
// flush. A writer's batches have increasing Seq, starting at 1.
type Batch struct {
	Writer  int
	Seq     uint64
	Entries []Entry
}

// Selection is the answer to Select.
type Selection struct {
	// Buckets holds, for each requested series in order, its stored buckets
	// with StartMs in [from, to), sorted by StartMs, one per StartMs.
	Buckets [][]rollup.Bucket
	// Marks holds the watermark of each writer (the Seq of its latest
	// applied batch) as of the read. A writer missing from the map has had
	// nothing applied.
	Marks map[int]uint64
}

// Store is where closed history lives.
type Store interface {
	// Append merges every entry of b into the stored buckets and records
	// b.Seq as b.Writer's watermark, both or neither. Appending a batch
	// whose Seq is not above the writer's watermark does nothing, so a
	// retried batch is never counted twice.
	Append(ctx context.Context, b Batch) error
	// Select reads the buckets of each series at tier with StartMs in
	// [fromMs, toMs), and the writers' watermarks consistent with them.
	Select(ctx context.Context, series []string, tier rollup.Tier, fromMs, toMs int64) (Selection, error)
	// Close releases the store. It is idempotent.
	Close() error
}

// Retention is how long each tier is kept, indexed by rollup.Tier.
type Retention [rollup.NumTiers]time.Duration

// DefaultMemoryRetention is the in-memory store's retention: enough for live
// dashboards while keeping memory per series bounded (about 0.4 MiB at one
// reading per second, all tiers full).
var DefaultMemoryRetention = Retention{time.Hour, 48 * time.Hour, 90 * 24 * time.Hour}

// withDefaults returns r with zero tiers replaced by def's.
func (r Retention) withDefaults(def Retention) Retention {
	for i := range r {
		if r[i] <= 0 {
			r[i] = def[i]
		}
	}
	return r
}
