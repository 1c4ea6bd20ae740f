package store

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"sort"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/telegauge/telegauge/ingest/rollup"
)

// MemoryConfig configures a Memory store.
type MemoryConfig struct {
	// Retention per tier; zero tiers take DefaultMemoryRetention.
	Retention Retention `yaml:"retention"`
	// PruneInterval is how often Run drops expired buckets. Zero means 1 minute.
	PruneInterval time.Duration `yaml:"prune-interval"`
	// Clock gives the time for retention; nil means the real clock.
	Clock clockwork.Clock `yaml:"-"`
}

// Memory is a Store that keeps history in memory, bounded by retention. It
// is the store when no database is configured and the reference the durable
// stores are tested against.
type Memory struct {
	cfg MemoryConfig
	log *slog.Logger

	mu     sync.RWMutex // guards series, marks and closed
	series map[string]*memSeries
	marks  map[int]uint64
	closed bool
}

// memSeries holds one series' buckets per tier, sorted by StartMs.
type memSeries struct {
	tiers [rollup.NumTiers][]rollup.Bucket
}

var _ Store = (*Memory)(nil)

// NewMemory returns an empty in-memory store.
func NewMemory(cfg MemoryConfig, log *slog.Logger) (*Memory, error) {
	cfg.Retention = cfg.Retention.withDefaults(DefaultMemoryRetention)
	if cfg.PruneInterval <= 0 {
		cfg.PruneInterval = time.Minute
	}
	if cfg.Clock == nil {
		cfg.Clock = clockwork.NewRealClock()
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Memory{
		cfg:    cfg,
		log:    log.With("component", "store"),
		series: make(map[string]*memSeries),
		marks:  make(map[int]uint64),
	}, nil
}

// Append implements Store.
func (m *Memory) Append(_ context.Context, b Batch) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	if b.Seq <= m.marks[b.Writer] {
		return nil
	}
	// Check every entry before applying any: a batch applies whole or not
	// at all, or its retry would count the applied part twice.
	for i := range b.Entries {
		if e := &b.Entries[i]; int(e.Tier) >= rollup.NumTiers {
			return fmt.Errorf("append to %s: unknown tier %d", e.Series, e.Tier)
		}
	}
	nowMs := m.cfg.Clock.Now().UnixMilli()
	for i := range b.Entries {
		e := &b.Entries[i]
		if e.Count == 0 {
			continue // merging an empty bucket changes nothing (rollup.Bucket.Merge)
		}
		if e.StartMs+e.Tier.StepMs() <= nowMs-m.cfg.Retention[e.Tier].Milliseconds() {
			continue // already past retention: it would be pruned at once
		}
		s := m.series[e.Series]
		if s == nil {
			s = &memSeries{}
			m.series[e.Series] = s
		}
		s.tiers[e.Tier] = mergeInto(s.tiers[e.Tier], &e.Bucket)
	}
	m.marks[b.Writer] = b.Seq
	return nil
}

// mergeInto merges b into the sorted slice bs. The common case, a bucket at
// or after the last one, is handled without a search.
func mergeInto(bs []rollup.Bucket, b *rollup.Bucket) []rollup.Bucket {
	n := len(bs)
	if n == 0 || bs[n-1].StartMs < b.StartMs {
		return append(bs, *b)
	}
	i := sort.Search(n, func(i int) bool { return bs[i].StartMs >= b.StartMs })
	if i < n && bs[i].StartMs == b.StartMs {
		bs[i].Merge(b)
		return bs
	}
	bs = append(bs, rollup.Bucket{})
	copy(bs[i+1:], bs[i:])
	bs[i] = *b
	return bs
}

// Select implements Store.
func (m *Memory) Select(_ context.Context, series []string, tier rollup.Tier, fromMs, toMs int64) (Selection, error) {
	if int(tier) >= rollup.NumTiers {
		return Selection{}, fmt.Errorf("select: unknown tier %d", tier)
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return Selection{}, ErrClosed
	}
	sel := Selection{Buckets: make([][]rollup.Bucket, len(series)), Marks: maps.Clone(m.marks)}
	for i, id := range series {
		s := m.series[id]
		if s == nil {
			continue
		}
		bs := s.tiers[tier]
		lo := sort.Search(len(bs), func(i int) bool { return bs[i].StartMs >= fromMs })
		hi := sort.Search(len(bs), func(i int) bool { return bs[i].StartMs >= toMs })
		if lo < hi {
			sel.Buckets[i] = append([]rollup.Bucket(nil), bs[lo:hi]...)
		}
	}
	return sel, nil
}

// Prune drops every bucket that ended before its tier's retention, and
// series left with nothing.
func (m *Memory) Prune() {
	nowMs := m.cfg.Clock.Now().UnixMilli()
	m.mu.Lock()
	defer m.mu.Unlock()
	for id, s := range m.series {
		empty := true
		for t := range s.tiers {
			bs := s.tiers[t]
			step := rollup.Tier(t).StepMs()
			cut := nowMs - m.cfg.Retention[t].Milliseconds()
			i := sort.Search(len(bs), func(i int) bool { return bs[i].StartMs+step > cut })
			// Reslicing leaves the dropped prefix allocated until the next
			// append outgrows the array; copying here instead would move
			// every live bucket once per prune.
			s.tiers[t] = bs[i:]
			if len(s.tiers[t]) > 0 {
				empty = false
			}
		}
		if empty {
			delete(m.series, id)
		}
	}
}

// Run prunes expired buckets every PruneInterval until ctx ends.
func (m *Memory) Run(ctx context.Context) error {
	t := m.cfg.Clock.NewTicker(m.cfg.PruneInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.Chan():
			m.Prune()
		}
	}
}

// Close implements Store.
func (m *Memory) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	return nil
}
