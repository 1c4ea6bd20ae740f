package dashboard

import (
	"slices"
	"strings"

	"github.com/telegauge/telegauge/ingest"
)

// MaxPatterns caps the patterns of one subscription.
const MaxPatterns = 256

// pattern is a parsed subscription pattern over "{device}/{metric}" with MQTT
// wildcards: "+" matches one level, "#" the rest ("#", "dev1/#").
type pattern struct {
	device string // "" for + or #
	metric string // "" for + or #
	all    bool   // "#"
	anyDev bool   // first level is +
	anyMet bool   // second level is + or #
}

// parsePattern checks one pattern. Valid forms: "#", "{d}/#", "{d}/{m}",
// "{d}/+", "+/{m}", "+/+", "+/#", where {d} and {m} are valid names.
func parsePattern(s string) (pattern, error) {
	if s == "#" {
		return pattern{all: true}, nil
	}
	dev, met, ok := strings.Cut(s, "/")
	if !ok {
		return pattern{}, Errorf(CodeInvalid, "series pattern %.80q: want {device}/{metric}, with + or # wildcards", s)
	}
	var p pattern
	switch {
	case dev == "+":
		p.anyDev = true
	case ingest.ValidName(dev):
		p.device = dev
	default:
		return pattern{}, Errorf(CodeInvalid, "series pattern %.80q: invalid device level", s)
	}
	switch {
	case met == "+" || met == "#":
		p.anyMet = true
	case ingest.ValidName(met):
		p.metric = met
	default:
		return pattern{}, Errorf(CodeInvalid, "series pattern %.80q: invalid metric level", s)
	}
	if p.anyDev && p.anyMet {
		p.all = true
	}
	return p, nil
}

func (p *pattern) matches(series string) bool {
	if p.all {
		return true
	}
	dev, met, _ := strings.Cut(series, "/")
	return (p.anyDev || p.device == dev) && (p.anyMet || p.metric == met)
}

func (p *pattern) matchesDevice(device string) bool {
	return p.all || p.anyDev || p.device == device
}

// Patterns is a validated, canonical set of subscription patterns.
type Patterns struct {
	list []string // sorted, deduplicated
	ps   []pattern
	all  bool
}

// ParsePatterns validates a subscription. The result is canonical: the same
// set in any order or with repeats gives equal Key()s.
func ParsePatterns(list []string) (Patterns, error) {
	if len(list) > MaxPatterns {
		return Patterns{}, Errorf(CodeInvalid, "too many series patterns: %d, limit %d", len(list), MaxPatterns)
	}
	list = slices.Clone(list)
	slices.Sort(list)
	list = slices.Compact(list)
	out := Patterns{list: list, ps: make([]pattern, len(list))}
	for i, s := range list {
		p, err := parsePattern(s)
		if err != nil {
			return Patterns{}, err
		}
		out.ps[i] = p
		out.all = out.all || p.all
	}
	return out, nil
}

// List returns the patterns, sorted.
func (ps Patterns) List() []string { return slices.Clone(ps.list) }

// Len returns the number of patterns.
func (ps Patterns) Len() int { return len(ps.list) }

// Key identifies the set: equal sets have equal keys.
func (ps Patterns) Key() string { return strings.Join(ps.list, "\x00") }

// Match reports whether the series is covered by any pattern.
func (ps Patterns) Match(series string) bool {
	if ps.all {
		return true
	}
	for i := range ps.ps {
		if ps.ps[i].matches(series) {
			return true
		}
	}
	return false
}

// MatchDevice reports whether any pattern could cover a series of the device.
func (ps Patterns) MatchDevice(device string) bool {
	for i := range ps.ps {
		if ps.ps[i].matchesDevice(device) {
			return true
		}
	}
	return false
}

// Union returns the set of both.
func (ps Patterns) Union(o Patterns) (Patterns, error) {
	return ParsePatterns(append(slices.Clone(ps.list), o.list...))
}

// Without returns ps minus the patterns of o (removed by exact text, as MQTT
// unsubscribe does).
func (ps Patterns) Without(o Patterns) Patterns {
	out := Patterns{}
	for i, s := range ps.list {
		if !slices.Contains(o.list, s) {
			out.list = append(out.list, s)
			out.ps = append(out.ps, ps.ps[i])
			out.all = out.all || ps.ps[i].all
		}
	}
	return out
}
