package simulators

import (
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"time"
)

// Pattern generates a metric's value at a reading time. Stateful patterns
// (random walk, step, spike, noise) advance as they are called and are
// deterministic given their seed and the sequence of times they are called
// with. A Pattern is not safe for concurrent use: each device owns its own.
type Pattern func(t time.Time) float64

// newRand returns a generator seeded from seed and a stream number, so that
// each (device, metric) pair gets an independent, reproducible sequence.
func newRand(seed int64, stream uint64) *rand.Rand {
	return rand.New(rand.NewPCG(uint64(seed), stream*0x9e3779b97f4a7c15+1))
}

// Sine returns base + amplitude·sin(2π·t/period + phase), a pure function of
// t: a temperature with a daily (or, for demos, minutes-long) cycle. A
// period of zero or less means 10 minutes.
func Sine(base, amplitude float64, period time.Duration, phase float64) Pattern {
	if period <= 0 {
		period = 10 * time.Minute
	}
	p := float64(period)
	return func(t time.Time) float64 {
		x := float64(t.UnixNano()%int64(period)) / p
		return base + amplitude*math.Sin(2*math.Pi*x+phase)
	}
}

// RandomWalk returns a Brownian walk from start that moves with a standard
// deviation of stepPerSecond per √second of elapsed time, reflected at lo
// and hi (humidity between 0 and 100, say). The first call returns start.
func RandomWalk(seed int64, start, stepPerSecond, lo, hi float64) Pattern {
	r := newRand(seed, 1)
	v := math.Min(math.Max(start, lo), hi)
	var last time.Time
	return func(t time.Time) float64 {
		if !last.IsZero() && t.After(last) {
			dt := t.Sub(last).Seconds()
			v += r.NormFloat64() * stepPerSecond * math.Sqrt(dt)
			// Reflect rather than clamp, so the walk does not stick to a bound.
			for range 4 {
				if v < lo {
					v = 2*lo - v
				} else if v > hi {
					v = 2*hi - v
				} else {
					break
				}
			}
			v = math.Min(math.Max(v, lo), hi)
		}
		if t.After(last) {
			last = t
		}
		return v
	}
}

// Step returns a two-level signal, like a door or a valve: it holds low or
// high for exponentially distributed times with mean meanHold, then toggles.
// It starts low. A meanHold of zero or less means one minute.
func Step(seed int64, low, high float64, meanHold time.Duration) Pattern {
	if meanHold <= 0 {
		meanHold = time.Minute
	}
	r := newRand(seed, 2)
	hold := func() time.Duration { return time.Duration(r.ExpFloat64() * float64(meanHold)) }
	on := false
	var next time.Time
	return func(t time.Time) float64 {
		if next.IsZero() {
			next = t.Add(hold())
		}
		// Catch up on every toggle since the previous call; a very long
		// silence is bounded so that one call stays cheap.
		for n := 0; !t.Before(next) && n < 1000; n++ {
			on = !on
			next = next.Add(hold())
		}
		if on {
			return high
		}
		return low
	}
}

// Spike returns a baseline with small Gaussian jitter and, with probability
// prob per call, a spike of up to height above it: vibration.
func Spike(seed int64, base, jitter, height, prob float64) Pattern {
	r := newRand(seed, 3)
	return func(time.Time) float64 {
		v := base + r.NormFloat64()*jitter
		if r.Float64() < prob {
			v += height * (0.5 + 0.5*r.Float64())
		}
		return v
	}
}

// Noise returns Gaussian noise with the given mean and standard deviation.
func Noise(seed int64, mean, stddev float64) Pattern {
	r := newRand(seed, 4)
	return func(time.Time) float64 { return mean + r.NormFloat64()*stddev }
}

// Metric is one simulated metric of a device.
type Metric struct {
	// Name satisfies the DESIGN.md §3 charset.
	Name string
	// Pattern generates the values.
	Pattern Pattern
	// Decimals is how many fraction digits a payload carries.
	Decimals int
}

// wellKnownMetrics are the first metric names of every simulated device;
// later metrics are named m4, m5, ...
var wellKnownMetrics = [...]string{"temperature", "humidity", "valve", "vibration"}

// MetricName returns the name of a device's i-th metric (0-based):
// temperature, humidity, valve, vibration, then m4, m5, ...
func MetricName(i int) string {
	if i >= 0 && i < len(wellKnownMetrics) {
		return wellKnownMetrics[i]
	}
	return "m" + strconv.Itoa(i)
}

// DefaultMetrics returns n realistic metrics for device number device,
// deterministic given seed: a temperature sine (period 5 to 15 minutes,
// base 18 to 26 °C), a humidity random walk bounded to 0..100, a valve
// stepping between 0 and 1, vibration spikes on a baseline, then noise.
// Devices differ in base, phase and period.
func DefaultMetrics(seed int64, device, n int) []Metric {
	r := newRand(seed, uint64(device)<<8)
	ms := make([]Metric, 0, n)
	for i := range n {
		kind := PatternNoise
		if i < len(mixedKinds) {
			kind = mixedKinds[i]
		}
		ms = append(ms, newMetric(r, i, kind))
	}
	return ms
}

// mixedKinds are the patterns of a device's first metrics in PatternMixed;
// the later ones are PatternNoise.
var mixedKinds = [...]string{PatternSine, PatternWalk, PatternSteps, PatternSpikes}

// newMetric returns metric i with a pattern of the given kind (anything
// else is PatternNoise), its parameters drawn from r.
func newMetric(r *rand.Rand, i int, kind string) Metric {
	s := int64(r.Uint64() >> 1)
	m := Metric{Name: MetricName(i)}
	switch kind {
	case PatternSine:
		period := 5*time.Minute + time.Duration(r.Float64()*float64(10*time.Minute))
		m.Pattern = Sine(18+8*r.Float64(), 2+2*r.Float64(), period, 2*math.Pi*r.Float64())
		m.Decimals = 2
	case PatternWalk:
		m.Pattern = RandomWalk(s, 30+40*r.Float64(), 0.2, 0, 100)
		m.Decimals = 1
	case PatternSteps:
		m.Pattern = Step(s, 0, 1, 30*time.Second+time.Duration(r.Float64()*float64(90*time.Second)))
		m.Decimals = 0
	case PatternSpikes:
		m.Pattern = Spike(s, 0.05, 0.01, 2, 0.02)
		m.Decimals = 3
	default:
		m.Pattern = Noise(s, 100*r.Float64(), 1+4*r.Float64())
		m.Decimals = 2
	}
	return m
}

// Value patterns (DevicesConfig.Pattern).
const (
	PatternMixed  = "mixed"  // each metric its own kind, as DefaultMetrics
	PatternSine   = "sine"   // a slow cycle, like a temperature
	PatternWalk   = "walk"   // a bounded random walk, like humidity
	PatternSteps  = "steps"  // two levels, like a valve or a door
	PatternSpikes = "spikes" // a baseline with rare spikes, like vibration
	PatternNoise  = "noise"  // Gaussian noise around a mean
)

// Patterns lists the value patterns, for help texts and validation.
var Patterns = []string{PatternMixed, PatternSine, PatternWalk, PatternSteps, PatternSpikes, PatternNoise}

func validPattern(p string) bool { return slices.Contains(Patterns, p) }

// MetricsFor returns n metrics of device number device whose values all
// follow pattern (PatternMixed, empty or unknown: DefaultMetrics),
// deterministic given seed. Metric names are MetricName's either way.
func MetricsFor(pattern string, seed int64, device, n int) []Metric {
	if pattern == PatternMixed || !validPattern(pattern) {
		return DefaultMetrics(seed, device, n)
	}
	r := newRand(seed, uint64(device)<<8|0x5a)
	ms := make([]Metric, 0, n)
	for i := range n {
		ms = append(ms, newMetric(r, i, pattern))
	}
	return ms
}
