package ingest

import "sync"

// Per-device limits: readings per second (a token bucket in each device)
// and series per device (newSeriesLocked). Both are enforced in the shard,
// under the lock apply already holds, so they cost a few arithmetic
// operations per reading and no extra synchronisation. A reading over a
// limit is rejected like any other (counted per device and per reason,
// visible in the API), and the device is named in a warning, rate-limited
// so that a misbehaving fleet cannot flood the log.

// takeToken spends one of the device's reading tokens, after refilling the
// bucket for the time since its last refill; it reports false when the
// bucket is empty. atMs is the publish's arrival time: time never runs
// backwards for the bucket (an earlier atMs refills nothing). The caller
// must hold the shard's mutex.
func (d *device) takeToken(atMs int64, rate float64, burst int) bool {
	switch {
	case d.tokensMs == 0:
		d.tokens, d.tokensMs = float64(burst), atMs // a new device starts full
	case atMs > d.tokensMs:
		d.tokens = min(float64(burst), d.tokens+float64(atMs-d.tokensMs)*rate/1000)
		d.tokensMs = atMs
	}
	if d.tokens < 1 {
		return false
	}
	d.tokens--
	return true
}

// limitLogEveryMs is how often one device over a limit is named in the log.
const limitLogEveryMs = 60_000

// limitHit is what apply learned about a device over a limit, to be logged
// once the shard's lock is released.
type limitHit struct {
	reason     Reason
	rejected   uint64 // readings of the device rejected by limits since its last line
	suppressed int    // lines about other devices left out since the last line
}

// noteLimitLocked counts n readings of dev rejected by a limit at atMs and
// reports whether to log it now: at most once a minute per device, and
// within the aggregator's overall budget of lines. dev may be nil (a device
// over MaxDevices), which only the overall budget limits. The caller must
// hold the shard's mutex.
func (s *shard) noteLimitLocked(dev *device, reason Reason, n int, atMs int64) (limitHit, bool) {
	hit := limitHit{reason: reason, rejected: uint64(n)}
	if dev != nil {
		dev.limitRejected += uint64(n)
		if dev.limitLogMs != 0 && atMs-dev.limitLogMs < limitLogEveryMs {
			return hit, false
		}
		hit.rejected = dev.limitRejected
	}
	ok, suppressed := s.a.limitLog.allow(atMs)
	if !ok {
		return hit, false
	}
	if dev != nil {
		dev.limitLogMs, dev.limitRejected = atMs, 0
	}
	hit.suppressed = suppressed
	return hit, true
}

// logLimit writes the warning for a device over a limit. It is called with
// no lock held.
func (a *Aggregator) logLimit(device string, hit limitHit) {
	if hit.reason == ReasonRateLimited {
		a.log.Warn("device over its reading rate: readings rejected", "device", device,
			"reason", hit.reason.String(), "limit_per_second", a.cfg.MaxRatePerDevice, "burst", a.cfg.MaxBurstPerDevice,
			"rejected", hit.rejected, "suppressed", hit.suppressed)
		return
	}
	// The device's limit, or the server's (MaxSeries, MaxDevices).
	a.log.Warn("series limit reached: new series of the device rejected", "device", device,
		"reason", hit.reason.String(), "limit", a.cfg.MaxSeriesPerDevice, "server_limit", a.cfg.MaxSeries,
		"rejected", hit.rejected, "suppressed", hit.suppressed)
}

// logBudget is a token bucket of log lines: a burst of logBurst, then one
// line per logEveryMs. It counts the lines it refuses and reports them with
// the next one it allows.
type logBudget struct {
	mu         sync.Mutex // guards the fields below; a leaf lock, taken under shard.mu
	tokens     float64
	lastMs     int64
	started    bool
	suppressed int
}

const (
	logBurst   = 10
	logEveryMs = 1000
)

// allow reports whether a line may be written at nowMs, and how many were
// refused since the last one allowed.
func (b *logBudget) allow(nowMs int64) (ok bool, suppressed int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case !b.started:
		b.tokens, b.lastMs, b.started = logBurst, nowMs, true
	case nowMs > b.lastMs:
		b.tokens = min(logBurst, b.tokens+float64(nowMs-b.lastMs)/logEveryMs)
		b.lastMs = nowMs
	}
	if b.tokens < 1 {
		b.suppressed++
		return false, 0
	}
	b.tokens--
	suppressed, b.suppressed = b.suppressed, 0
	return true, suppressed
}
