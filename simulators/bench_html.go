package simulators

import (
	"cmp"
	_ "embed"
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The uPlot files in benchhtml/ are copied verbatim from the npm package
// uplot 1.6.32 (web/ui/node_modules/uplot/dist/uPlot.iife.min.js,
// dist/uPlot.min.css and LICENSE, MIT), the version the dashboard pins in
// web/ui/package.json. They are vendored rather than read from
// node_modules so that `go build` alone (no npm) can write a report, and
// inlined so the report works offline from a file:// URL. `make` does not
// regenerate them: when the dashboard moves to a new uPlot, copy the three
// files again and update the version here.
var (
	//go:embed benchhtml/uPlot.iife.min.js
	uplotJS string
	//go:embed benchhtml/uPlot.min.css
	uplotCSS string
	//go:embed benchhtml/LICENSE-uPlot
	uplotLicense string
	//go:embed benchhtml/report.js
	benchPageJS string
	//go:embed benchhtml/report.css
	benchPageCSS string
	//go:embed benchhtml/report.html.tmpl
	benchPageTmpl string
)

// benchTmpl is parsed once; Execute is safe for concurrent use.
var benchTmpl = template.Must(template.New("bench").Funcs(template.FuncMap{
	"load":     benchLoad,
	"delivery": benchDelivery,
	"dur":      humanDuration,
	"count":    humanCount,
	// Zero means "does not apply" for the omitempty fields of
	// BenchResult, so those print a dash rather than a misleading 0.
	"rate":      orDash(humanRate),
	"bytes":     orDash(humanBytes),
	"resources": benchResources,
	"utc":       func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05 MST") },
	"machine":   benchMachine,
	"exactly":   benchExactlyOnce,
}).Parse(benchPageTmpl))

// benchPage is what the template sees.
type benchPage struct {
	R             *BenchReport
	Fanout        []fanoutBar
	HasThroughput bool
	HasCDF        bool
	// Data is the report as JSON for the page's script. It is a
	// json.RawMessage so html/template re-encodes it through encoding/json,
	// which escapes <, > and & (so a "</script>" in a note stays inside
	// the data block) and U+2028/U+2029.
	Data     json.RawMessage
	UPlotJS  template.JS
	UPlotCSS template.CSS
	PageJS   template.JS
	PageCSS  template.CSS
}

// fanoutBar is one row of the p99-by-viewers chart.
type fanoutBar struct {
	Scenario  string
	Viewers   int64
	Transport string
	P99       time.Duration
	// Pct is the bar's width relative to the slowest row, preformatted
	// because html/template only lets plain tokens into a style attribute.
	Pct string
}

// WriteBenchHTML writes r as one self-contained HTML page: the run's
// context, a results table and uPlot charts of throughput over time,
// latency distributions and fan-out p99 by viewer count. uPlot and the
// data are inlined, so the file works offline. It fails only if r cannot
// be encoded as JSON (a NaN or infinite rate) or w fails.
func WriteBenchHTML(w io.Writer, r *BenchReport) error {
	if r == nil {
		return fmt.Errorf("write bench html: nil report")
	}
	// Encode here rather than let html/template do it: the template turns
	// a marshalling error into a JS comment and renders on.
	data, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encode bench report: %w", err)
	}
	p := benchPage{
		R:        r,
		Fanout:   fanoutBars(r.Results),
		Data:     data,
		UPlotCSS: template.CSS(uplotCSS),
		PageCSS:  template.CSS(benchPageCSS),
		// MIT asks for the notice in every copy, and every report is one.
		UPlotJS: template.JS("/*! uPlot licence:\n" + uplotLicense + "*/\n" + uplotJS),
		PageJS:  template.JS(benchPageJS),
	}
	for _, res := range r.Results {
		p.HasThroughput = p.HasThroughput || len(res.Throughput) > 0
		p.HasCDF = p.HasCDF || len(res.LatencyCDF) > 0
	}
	if err := benchTmpl.Execute(w, p); err != nil {
		return fmt.Errorf("write bench html: %w", err)
	}
	return nil
}

// fanoutBars picks the fan-out results with a latency summary, ordered by
// viewer count so the bars read as a scaling curve.
func fanoutBars(results []BenchResult) []fanoutBar {
	var bars []fanoutBar
	var maxP99 time.Duration
	for _, res := range results {
		if res.Group != BenchFanout || res.Latency == nil || res.Error != "" {
			continue
		}
		bars = append(bars, fanoutBar{Scenario: res.Scenario, Viewers: int64(res.Viewers), Transport: res.Transport, P99: res.Latency.P99})
		maxP99 = max(maxP99, res.Latency.P99)
	}
	slices.SortStableFunc(bars, func(a, b fanoutBar) int { return cmp.Compare(a.Viewers, b.Viewers) })
	for i := range bars {
		pct := 0.0
		if maxP99 > 0 {
			pct = 100 * float64(bars[i].P99) / float64(maxP99)
		}
		bars[i].Pct = strconv.FormatFloat(pct, 'f', 1, 64)
	}
	return bars
}

// benchLoad describes a scenario's load in one line, leaving out what does
// not apply to its group.
func benchLoad(r BenchResult) string {
	var parts []string
	if r.Devices > 0 {
		d := plural(r.Devices, "device")
		if r.Metrics > 0 {
			d += " × " + plural(r.Metrics, "metric")
		}
		parts = append(parts, d, "QoS "+strconv.Itoa(int(r.QoS)))
		if r.TargetRate > 0 {
			parts = append(parts, humanRate(r.TargetRate)+" msg/s")
		} else {
			parts = append(parts, "max rate")
		}
	}
	if r.Viewers > 0 {
		parts = append(parts, plural(r.Viewers, "viewer"))
	}
	if r.Transport != "" {
		parts = append(parts, r.Transport)
	}
	if r.Nodes > 1 {
		parts = append(parts, strconv.Itoa(r.Nodes)+" nodes")
	}
	if r.DurationMs > 0 {
		parts = append(parts, "for "+humanDuration(time.Duration(r.DurationMs*float64(time.Millisecond))))
	}
	return strings.Join(parts, " · ")
}

// benchDelivery summarises what viewers received, a line each for points
// and for trouble. Scenarios without viewers get nothing, since their zero
// duplicates say nothing.
func benchDelivery(r BenchResult) []string {
	if r.Viewers == 0 && r.PointsExpected == 0 && r.Duplicates == 0 && r.Gaps == 0 && r.Reconnects == 0 {
		return nil
	}
	var lines []string
	if r.PointsExpected > 0 {
		lines = append(lines, humanCount(r.PointsReceived)+" of "+humanCount(r.PointsExpected)+" points")
	}
	return append(lines, "dup "+humanCount(r.Duplicates)+" · gaps "+humanCount(r.Gaps)+" · reconnects "+humanCount(r.Reconnects))
}

// benchResources is the server's CPU and memory (and CPU per reading),
// a line each, or nothing if not measured.
func benchResources(r BenchResult) []string {
	var parts []string
	if r.ServerCPUCores > 0 {
		parts = append(parts, strconv.FormatFloat(r.ServerCPUCores, 'f', 2, 64)+" cores")
	}
	if r.ServerRSSBytes > 0 {
		parts = append(parts, humanBytes(r.ServerRSSBytes)+" RSS")
	}
	if r.CPUSecondsPerReading > 0 {
		parts = append(parts, perReading(r.CPUSecondsPerReading)+" CPU per reading")
	}
	if r.NATSCPUSecondsPerReading > 0 {
		parts = append(parts, "+ "+perReading(r.NATSCPUSecondsPerReading)+" in NATS")
	}
	return parts
}

func orDash(f func(float64) string) func(float64) string {
	return func(v float64) string {
		if v == 0 {
			return "–"
		}
		return f(v)
	}
}

func benchMachine(m BenchMachine) string {
	parts := []string{m.OS + "/" + m.Arch}
	if m.CPUs > 0 {
		c := strconv.Itoa(m.CPUs) + " CPUs"
		if m.CPUModel != "" {
			c += " (" + m.CPUModel + ")"
		}
		parts = append(parts, c)
	}
	if m.MemoryBytes > 0 {
		parts = append(parts, humanBytes(float64(m.MemoryBytes))+" RAM")
	}
	if m.GoVersion != "" {
		parts = append(parts, m.GoVersion)
	}
	return strings.Join(parts, ", ")
}

func benchExactlyOnce(b *bool) string {
	switch {
	case b == nil:
		return "–"
	case *b:
		return "yes"
	default:
		return "no"
	}
}

// humanRate formats a rate or count with a k/M/G suffix and three
// significant digits: 950, 12.3k, 1.25M.
func humanRate(v float64) string {
	if v == 0 {
		return "0"
	}
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return strconv.FormatFloat(v, 'f', -1, 64)
	}
	suffix := ""
	for _, s := range []string{"k", "M", "G"} {
		if math.Abs(v) < 999.5 {
			break
		}
		v /= 1000
		suffix = s
	}
	return sig3(v) + suffix
}

// humanCount writes counts exactly, with thousands separators: a rate's
// three digits would print 999,870 points of 1,000,000 as "1.00M of 1.00M".
func humanCount(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	if neg {
		b.WriteByte('-')
	}
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// plural writes "1 device", "2 devices".
func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return humanCount(int64(n)) + " " + word + "s"
}

// humanDuration formats a latency in ms below a second (with sub-ms
// precision, which is where a local broker's latencies live) and in s above.
func humanDuration(d time.Duration) string {
	ms := float64(d) / float64(time.Millisecond)
	switch {
	case d == 0:
		return "0"
	case math.Abs(ms) < 999.5:
		return sig3(ms) + " ms"
	case math.Abs(ms) < 120_000:
		return sig3(ms/1000) + " s"
	default:
		return d.Round(time.Second).String()
	}
}

// humanBytes formats a size in binary units: 512 B, 3.5 KiB, 180 MiB.
func humanBytes(v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return strconv.FormatFloat(v, 'f', -1, 64)
	}
	units := []string{"B", "KiB", "MiB", "GiB", "TiB"}
	i := 0
	for math.Abs(v) >= 1023.5 && i < len(units)-1 {
		v /= 1024
		i++
	}
	if i == 0 {
		return strconv.FormatFloat(math.Round(v), 'f', -1, 64) + " B"
	}
	return sig3(v) + " " + units[i]
}

// sig3 formats v with about three significant digits and no exponent.
func sig3(v float64) string {
	a := math.Abs(v)
	switch {
	case a >= 99.95:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 9.995:
		return strconv.FormatFloat(v, 'f', 1, 64)
	case a >= 0.9995:
		return strconv.FormatFloat(v, 'f', 2, 64)
	default:
		return strconv.FormatFloat(v, 'f', 3, 64)
	}
}
