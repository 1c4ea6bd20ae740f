package dashboard

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/telegauge/telegauge/ingest"
	"github.com/telegauge/telegauge/ingest/rollup"
	"github.com/telegauge/telegauge/ingest/store"
)

// Source is the aggregator as the query side sees it: the live part of
// history, not yet (or not known to be) in the store.
type Source interface {
	// HasSeries reports whether the series has been seen since start.
	HasSeries(id string) bool
	// Unflushed returns the series' pending and in-flight buckets; see
	// ingest.Aggregator.Unflushed for the exactly-once protocol.
	Unflushed(series string, tier rollup.Tier, fromMs, toMs int64) ingest.Unflushed
	// Recent returns the series' recent raw readings in [fromMs, toMs).
	Recent(series string, fromMs, toMs int64) []ingest.Reading
}

// History is the store as the query side sees it.
type History interface {
	// Select reads stored buckets and the writers' watermarks.
	Select(ctx context.Context, series []string, tier rollup.Tier, fromMs, toMs int64) (store.Selection, error)
}

// QueryConfig configures a Querier. Zero values mean the documented defaults.
type QueryConfig struct {
	Source  Source  `yaml:"-"` // required
	History History `yaml:"-"` // required
	// Retention of the store's tiers, so that an automatic step never
	// picks a tier that no longer covers the start of the range. Zero
	// tiers count as kept forever.
	Retention store.Retention `yaml:"-"`
	// DefaultMaxPoints is the point cap when a query gives none. Zero
	// means 1,500.
	DefaultMaxPoints int `yaml:"default-max-points"`
	// MaxPoints is the largest cap a query may ask for. Zero means 20,000.
	MaxPoints int `yaml:"max-points"`
	// MaxSeries caps the series of one query. Zero means 100.
	MaxSeries int `yaml:"max-series"`
	// Clock is the time source; nil means the real clock.
	Clock clockwork.Clock `yaml:"-"`
}

// Querier answers history queries by merging the store with the
// aggregator's unflushed buckets. It is safe for concurrent use.
type Querier struct {
	cfg QueryConfig
	log *slog.Logger
}

// NewQuerier returns a Querier.
func NewQuerier(cfg QueryConfig, log *slog.Logger) (*Querier, error) {
	if cfg.Source == nil || cfg.History == nil {
		return nil, fmt.Errorf("dashboard: QueryConfig needs Source and History")
	}
	if cfg.DefaultMaxPoints <= 0 {
		cfg.DefaultMaxPoints = 1500
	}
	if cfg.MaxPoints <= 0 {
		cfg.MaxPoints = 20_000
	}
	if cfg.MaxSeries <= 0 {
		cfg.MaxSeries = 100
	}
	if cfg.Clock == nil {
		cfg.Clock = clockwork.NewRealClock()
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Querier{cfg: cfg, log: log.With("component", "query")}, nil
}

// QueryRequest is one history query. Times are Unix ms; from is inclusive,
// to exclusive, and both apply to bucket start times.
type QueryRequest struct {
	Series    []string
	FromMs    int64
	ToMs      int64
	StepMs    int64 // 0: automatic
	Raw       bool  // recent raw readings instead of buckets
	MaxPoints int   // 0: the default
}

// SeriesData is one series' answer, columnar as uPlot wants it.
type SeriesData struct {
	ID     string    `json:"id"`
	StepMs int64     `json:"step"` // 0 for raw readings
	T      []int64   `json:"t"`    // bucket starts (raw: reading times), Unix ms
	Min    []float64 `json:"min"`
	Max    []float64 `json:"max"`
	Avg    []float64 `json:"avg"`
	Count  []int64   `json:"count"`
	Last   []float64 `json:"last"` // the value with the latest reading time
}

// MaxQueryMs bounds query times and steps: 2^53 ms, about 285,000 years
// either side of 1970. Reading times come from real clocks (the decoder keeps
// them within minutes or days of the server's), so nothing is cut off, and
// sums of a few such times or steps cannot overflow an int64.
const MaxQueryMs = 1 << 53

// niceSteps are the automatic steps, all multiples of a tier's step.
var niceSteps = []time.Duration{
	time.Second, 2 * time.Second, 5 * time.Second, 10 * time.Second, 15 * time.Second, 30 * time.Second,
	time.Minute, 2 * time.Minute, 5 * time.Minute, 10 * time.Minute, 15 * time.Minute, 30 * time.Minute,
	time.Hour, 2 * time.Hour, 3 * time.Hour, 6 * time.Hour, 12 * time.Hour,
	24 * time.Hour, 2 * 24 * time.Hour, 7 * 24 * time.Hour,
}

// Query runs req. Invalid parameters are CodeInvalid, unknown series
// CodeNotFound.
func (q *Querier) Query(ctx context.Context, req QueryRequest) ([]SeriesData, error) {
	if len(req.Series) == 0 {
		return nil, Errorf(CodeInvalid, "no series given")
	}
	if len(req.Series) > q.cfg.MaxSeries {
		return nil, Errorf(CodeInvalid, "too many series: %d, limit %d", len(req.Series), q.cfg.MaxSeries)
	}
	for _, id := range req.Series {
		if !ingest.ValidSeries(id) {
			return nil, Errorf(CodeInvalid, "invalid series id %.80q: want {device}/{metric}", id)
		}
	}
	if req.ToMs <= req.FromMs {
		return nil, Errorf(CodeInvalid, "empty range: to must be after from")
	}
	if req.StepMs > MaxQueryMs {
		return nil, Errorf(CodeInvalid, "step too long")
	}
	// No reading lies outside ±MaxQueryMs; clamping the range there keeps
	// the step arithmetic below from overflowing on absurd ranges.
	req.FromMs, req.ToMs = max(req.FromMs, -MaxQueryMs), min(req.ToMs, MaxQueryMs)
	if req.ToMs <= req.FromMs {
		req.FromMs, req.ToMs = 0, 0 // wholly outside: an empty answer
	}
	maxPoints := req.MaxPoints
	switch {
	case maxPoints == 0:
		maxPoints = q.cfg.DefaultMaxPoints
	case maxPoints < 0 || maxPoints > q.cfg.MaxPoints:
		return nil, Errorf(CodeInvalid, "maxPoints must be between 1 and %d", q.cfg.MaxPoints)
	}
	if req.Raw {
		return q.raw(ctx, req, maxPoints)
	}
	step, err := q.step(req, maxPoints)
	if err != nil {
		return nil, err
	}
	tier, _ := rollup.TierFor(step)
	lo, hi := alignUp(req.FromMs, step), alignUp(req.ToMs, step)
	out := make([]SeriesData, len(req.Series))
	for i, id := range req.Series {
		out[i] = SeriesData{ID: id, StepMs: step, T: []int64{}, Min: []float64{}, Max: []float64{}, Avg: []float64{}, Count: []int64{}, Last: []float64{}}
	}
	if lo >= hi {
		return out, nil
	}
	// Read the unflushed buckets before the store: see ingest.Aggregator.Unflushed.
	unflushed := make([]ingest.Unflushed, len(req.Series))
	for i, id := range req.Series {
		unflushed[i] = q.cfg.Source.Unflushed(id, tier, lo, hi)
	}
	sel, err := q.cfg.History.Select(ctx, req.Series, tier, lo, hi)
	if err != nil {
		return nil, fmt.Errorf("query history: %w", err)
	}
	var merged, stepped []rollup.Bucket
	for i, id := range req.Series {
		merged = append(merged[:0], sel.Buckets[i]...)
		mark := sel.Marks[unflushed[i].Writer]
		for _, ub := range unflushed[i].Buckets {
			if ub.Seq > mark {
				merged = append(merged, ub.Bucket)
			}
		}
		if len(merged) == 0 && !q.cfg.Source.HasSeries(id) {
			return nil, Errorf(CodeNotFound, "unknown series %q", id)
		}
		merged = mergeSorted(merged)
		stepped = rollup.Downsample(stepped[:0], merged, step)
		fill(&out[i], stepped)
	}
	return out, nil
}

// step picks the step of a query: the requested one coarsened to fit
// maxPoints, or an automatic one that fits maxPoints and that a tier still
// covering the start of the range divides.
func (q *Querier) step(req QueryRequest, maxPoints int) (int64, error) {
	span := req.ToMs - req.FromMs
	if req.StepMs != 0 {
		step := req.StepMs
		if step < 0 || step%1000 != 0 {
			return 0, Errorf(CodeInvalid, "step must be a positive multiple of 1s")
		}
		if n := ceilDiv(span, step); n > int64(maxPoints) {
			step *= ceilDiv(n, int64(maxPoints))
		}
		return step, nil
	}
	minStep := ceilDiv(span, int64(maxPoints))
	nowMs := q.cfg.Clock.Now().UnixMilli()
	for _, t := range rollup.Tiers {
		ret := q.cfg.Retention[t]
		if ret <= 0 || req.FromMs >= nowMs-ret.Milliseconds() || t == rollup.Tier1h {
			minStep = max(minStep, t.StepMs())
			break
		}
	}
	for _, s := range niceSteps {
		if s.Milliseconds() >= minStep {
			return s.Milliseconds(), nil
		}
	}
	day := (24 * time.Hour).Milliseconds()
	return ceilDiv(minStep, day) * day, nil
}

func (q *Querier) raw(_ context.Context, req QueryRequest, maxPoints int) ([]SeriesData, error) {
	out := make([]SeriesData, len(req.Series))
	for i, id := range req.Series {
		if !q.cfg.Source.HasSeries(id) {
			return nil, Errorf(CodeNotFound, "unknown series %q", id)
		}
		rs := q.cfg.Source.Recent(id, req.FromMs, req.ToMs)
		if len(rs) > maxPoints {
			rs = rs[len(rs)-maxPoints:]
		}
		d := SeriesData{ID: id, T: make([]int64, len(rs)), Min: make([]float64, len(rs)), Max: make([]float64, len(rs)),
			Avg: make([]float64, len(rs)), Count: make([]int64, len(rs)), Last: make([]float64, len(rs))}
		for j, r := range rs {
			d.T[j], d.Min[j], d.Max[j], d.Avg[j], d.Count[j], d.Last[j] = r.TimeMs, r.Value, r.Value, r.Value, 1, r.Value
		}
		out[i] = d
	}
	return out, nil
}

// mergeSorted sorts buckets by start and merges those with equal starts.
func mergeSorted(bs []rollup.Bucket) []rollup.Bucket {
	slices.SortFunc(bs, func(a, b rollup.Bucket) int { return cmpInt64(a.StartMs, b.StartMs) })
	out := bs[:0]
	for i := range bs {
		if n := len(out); n > 0 && out[n-1].StartMs == bs[i].StartMs {
			out[n-1].Merge(&bs[i])
			continue
		}
		out = append(out, bs[i])
	}
	return out
}

func fill(d *SeriesData, bs []rollup.Bucket) {
	for i := range bs {
		b := &bs[i]
		d.T = append(d.T, b.StartMs)
		d.Min = append(d.Min, b.Min)
		d.Max = append(d.Max, b.Max)
		d.Avg = append(d.Avg, b.Mean())
		d.Count = append(d.Count, b.Count)
		d.Last = append(d.Last, b.Last)
	}
}

func cmpInt64(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func ceilDiv(a, b int64) int64 { return (a + b - 1) / b }

// alignUp rounds t up to a multiple of step.
func alignUp(t, step int64) int64 {
	f := rollup.Floor(t, step)
	if f == t {
		return t
	}
	return f + step
}

// ParseTime parses a query time: Unix ms, RFC 3339, "now", or a duration
// relative to now ("-1h", "-30m", "-7d", "+5m").
func ParseTime(s string, now time.Time) (int64, error) {
	s = strings.TrimSpace(s)
	switch {
	case s == "" || s == "now":
		return now.UnixMilli(), nil
	case s[0] == '-' || s[0] == '+':
		d, err := ParseDuration(s[1:])
		if err != nil {
			return 0, Errorf(CodeInvalid, "invalid relative time %.40q: %v", s, err)
		}
		if s[0] == '-' {
			d = -d
		}
		return now.Add(d).UnixMilli(), nil
	}
	if ms, err := strconv.ParseInt(s, 10, 64); err == nil {
		return ms, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return 0, Errorf(CodeInvalid, "invalid time %.40q: want Unix ms, RFC 3339 or relative like -1h", s)
	}
	return t.UnixMilli(), nil
}

// ParseDuration is time.ParseDuration that also accepts days ("7d") and
// weeks ("2w") as a whole-number suffix, and plain numbers as seconds.
func ParseDuration(s string) (time.Duration, error) {
	if n, err := strconv.ParseFloat(s, 64); err == nil {
		if !(n >= 0 && n <= 1e9) { // also NaN, which ParseFloat accepts
			return 0, fmt.Errorf("%v seconds is out of range", n)
		}
		return time.Duration(n * float64(time.Second)), nil
	}
	for suffix, unit := range map[string]time.Duration{"d": 24 * time.Hour, "w": 7 * 24 * time.Hour} {
		if num, ok := strings.CutSuffix(s, suffix); ok {
			n, err := strconv.ParseInt(num, 10, 32)
			if err != nil || n < 0 || n > 100*52 {
				return 0, fmt.Errorf("invalid duration %.40q", s)
			}
			return time.Duration(n) * unit, nil
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("invalid duration %.40q", s)
	}
	return d, nil
}

// ParseStep parses a query step: "" or "auto" (0), "raw", or a duration
// that is a positive multiple of one second ("1s", "5m", "90s", "1h", "1d").
func ParseStep(s string) (stepMs int64, raw bool, err error) {
	switch s {
	case "", "auto":
		return 0, false, nil
	case "raw":
		return 0, true, nil
	}
	d, perr := ParseDuration(s)
	if perr != nil || d <= 0 || d%time.Second != 0 {
		return 0, false, Errorf(CodeInvalid, "invalid step %.40q: want auto, raw, or a multiple of 1s like 1m", s)
	}
	return d.Milliseconds(), false, nil
}
