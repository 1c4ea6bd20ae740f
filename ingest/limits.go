package ingest

import (
	"math"
	"sync"
	"time"
)

// Per-device limits: readings per second (a token bucket in each device)
// and series per device (newSeriesLocked). Both are enforced in the shard,
// under the lock apply already holds, so they cost a few arithmetic
// operations per publish and no extra synchronisation.
//
// The two differ in what they do to a device over them. A reading that
// would create a series over the limit is rejected like any other (counted
// per device and per reason, visible in the API). A device over its rate
// loses nothing: every reading is accepted, its bucket goes into debt, and
// Offer holds the publishing connection for the debt's worth of time after
// releasing the shard. The broker calls Offer on the connection's own
// goroutine, so mochi does not read the device's next packet meanwhile, and
// TCP (and, at QoS 1, the device's in-flight window) slows the device down
// to its rate; its offline backlog arrives late, not lost.
//
// Either way the device is named in a warning, rate-limited so that a
// misbehaving fleet cannot flood the log.

// maxThrottleWait caps how long one publish holds its connection. A device
// over its rate owes the time its debt takes to refill, which after a
// burst of large payloads can be seconds; held that long at once, its
// PINGREQ would wait behind the held publish, and closing the broker would
// wait for it. The debt left over is paid by the device's next publishes.
// With this cap, a device whose every payload carries more than a second's
// worth of its rate gets one publish a second.
const maxThrottleWait = time.Second

// spend takes n accepted readings from the device's bucket, after refilling
// it for the time since its last refill, and returns how long the
// publishing connection should be held: zero while the bucket had the
// readings, otherwise the time the debt takes to refill at rate, at most
// maxThrottleWait. atMs is the publish's arrival time: time never runs
// backwards for the bucket (an earlier atMs refills nothing).
//
// The bucket holds at most burst readings, and its debt is bounded too: by
// burst readings, or a maxThrottleWait's worth if that is more (so that a
// device at the bound is always held the whole cap). Without a bound one
// huge payload (a 64 KiB one carries some 7,000 readings), or several
// connections publishing for one device, could hold a device for minutes
// after it calmed down; with it, a device at the bound is held
// maxThrottleWait per publish until it slows down. The caller must hold the
// shard's mutex.
func (d *device) spend(atMs int64, n int, rate float64, burst int) time.Duration {
	switch {
	case d.tokensMs == 0:
		d.tokens, d.tokensMs = float64(burst), atMs // a new device starts full
	case atMs > d.tokensMs:
		d.tokens = min(float64(burst), d.tokens+float64(atMs-d.tokensMs)*rate/1000)
		d.tokensMs = atMs
	}
	maxDebt := max(float64(burst), rate*maxThrottleWait.Seconds())
	d.tokens = max(d.tokens-float64(n), -maxDebt)
	if d.tokens >= 0 {
		return 0
	}
	return min(time.Duration(math.Round(-d.tokens/rate*float64(time.Second))), maxThrottleWait)
}

// limitLogEveryMs is how often one device over a limit is named in the log.
const limitLogEveryMs = 60_000

// limit is a per-device limit that names the device in a warning.
type limit uint8

const (
	limitSeries limit = iota // MaxSeriesPerDevice (and MaxSeries, MaxDevices): readings rejected
	limitRate                // MaxRatePerDevice: publishes held
	numLimits
)

// limitHit is what apply learned about a device over a limit, to be logged
// once the shard's lock is released.
type limitHit struct {
	limit      limit
	n          uint64        // since the device's last line about the limit: readings rejected (limitSeries), publishes held (limitRate)
	wait       time.Duration // limitRate: the time they were held
	suppressed int           // lines about other devices left out since the last line
}

// noteLimitLocked counts n readings rejected (limitSeries) or one publish
// held for wait (limitRate) of dev at atMs, and reports whether to log it
// now: at most once a minute per device and limit, and within the
// aggregator's overall budget of lines. dev may be nil (a device over
// MaxDevices), which only the overall budget limits. The caller must hold
// the shard's mutex.
func (s *shard) noteLimitLocked(dev *device, l limit, n int, wait time.Duration, atMs int64) (limitHit, bool) {
	hit := limitHit{limit: l, n: uint64(n), wait: wait}
	if dev != nil {
		dev.limitN[l] += uint64(n)
		if l == limitRate {
			dev.limitWait += wait
		}
		if dev.limitLogMs[l] != 0 && atMs-dev.limitLogMs[l] < limitLogEveryMs {
			return hit, false
		}
		hit.n = dev.limitN[l]
		if l == limitRate {
			hit.wait = dev.limitWait
		}
	}
	ok, suppressed := s.a.limitLog.allow(atMs)
	if !ok {
		return hit, false
	}
	if dev != nil {
		dev.limitLogMs[l], dev.limitN[l] = atMs, 0
		if l == limitRate {
			dev.limitWait = 0
		}
	}
	hit.suppressed = suppressed
	return hit, true
}

// logLimit writes the warning for a device over a limit. It is called with
// no lock held.
func (a *Aggregator) logLimit(device string, hit limitHit) {
	if hit.limit == limitRate {
		a.log.Warn("device over its reading rate: its connection is slowed, nothing is dropped", "device", device,
			"limit_per_second", a.cfg.MaxRatePerDevice, "burst", a.cfg.MaxBurstPerDevice,
			"throttled", hit.n, "held", hit.wait.Round(time.Millisecond), "suppressed", hit.suppressed)
		return
	}
	// The device's limit, or the server's (MaxSeries, MaxDevices).
	a.log.Warn("series limit reached: new series of the device rejected", "device", device,
		"reason", ReasonTooManySeries.String(), "limit", a.cfg.MaxSeriesPerDevice, "server_limit", a.cfg.MaxSeries,
		"rejected", hit.n, "suppressed", hit.suppressed)
}

// throttle holds the caller (a publishing connection's goroutine) for
// wait, or until throttling stops. It is called with no lock held.
func (a *Aggregator) throttle(wait time.Duration) {
	select {
	case <-a.unthrottled:
		return
	default:
	}
	if a.cfg.Sleep != nil {
		a.cfg.Sleep(wait)
		return
	}
	t := a.cfg.Clock.NewTimer(wait)
	select {
	case <-t.Chan():
	case <-a.unthrottled:
	}
	t.Stop()
}

// StopThrottling ends every throttling wait in progress and holds no
// connection from then on (readings are accepted as before; devices over
// their rate are just no longer slowed). Shutdown calls it before closing
// the broker, which waits for the publishes inside Offer, so that a slowed
// device cannot delay it; Run calls it when it stops. It is idempotent.
func (a *Aggregator) StopThrottling() {
	a.unthrottleOnce.Do(func() { close(a.unthrottled) })
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
