package ingest

import (
	"context"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/telegauge/telegauge/ingest/rollup"
)

// TestAggregatorHostileInputLosesNothing: a device sends good readings
// before, between and after every kind of hostile payload (nesting deeper
// than the parser takes and as deep as it takes, more fields than its
// series limit, a payload over the size cap, NaN and Inf, names that are
// not UTF-8, timestamps beyond any calendar, too far ahead, too far back).
// Each hostile payload is refused and counted against the device by
// reason; every good reading, of that device and of one beside it, reaches
// the live feed and the rollups exactly once.
func TestAggregatorHostileInputLosesNothing(t *testing.T) {
	const seriesLimit = 50
	ta := newTestAggregator(t, Config{MaxSeriesPerDevice: seriesLimit, MaxRatePerDevice: 1e9})
	nowMs := ta.clock.Now().UnixMilli()

	var wide strings.Builder
	wide.WriteString("{")
	fields := 0
	for wide.Len() < 60<<10 {
		if fields > 0 {
			wide.WriteString(",")
		}
		wide.WriteString(`"w` + strconv.Itoa(fields) + `":1`)
		fields++
	}
	wide.WriteString("}")

	hostile := []struct{ topic, payload string }{
		{"telemetry/dev1", strings.Repeat(`{"a":`, 400) + "1" + strings.Repeat("}", 400)},
		{"telemetry/dev1", strings.Repeat(`{"a":`, 250) + "1" + strings.Repeat("}", 250)},
		{"telemetry/dev1", wide.String()},
		{"telemetry/dev1", `{"t":` + strings.Repeat("1", 64<<10) + `}`},
		{"telemetry/dev1", `{"t":NaN}`},
		{"telemetry/dev1/t", `-Inf`},
		{"telemetry/dev1", `[{"n":"t","v":1e999}]`},
		{"telemetry/dev1", "{\"t\xff\":1}"},
		{"telemetry/dev1", "[{\"n\":\"\xc3(\",\"v\":1}]"},
		{"telemetry/dev1", `{"ts":"10000-01-01T00:00:00Z","t":1}`},
		{"telemetry/dev1", `{"ts":1e300,"t":1}`},
		{"telemetry/dev1", `{"ts":"9223372036854775807","t":1}`},
		{"telemetry/dev1", `{"ts":"-9223372036854775808","t":1}`},
	}
	wantRejected := map[string]uint64{
		"malformed":       1,
		"bad_name":        3,
		"too_many_series": uint64(fields - (seriesLimit - 1)), // dev1/good is the first series
		"too_large":       1,
		"not_finite":      3,
		"bad_time":        2,
		"future":          1,
		"too_old":         1,
	}

	var good []Reading
	offerGood := func(dev string) {
		r := Reading{Series: dev + "/good", TimeMs: nowMs - 60_000 + int64(len(good))*100, Value: float64(len(good))}
		good = append(good, r)
		ta.offer(t, "telemetry/"+dev, `{"ts":`+strconv.FormatInt(r.TimeMs, 10)+`,"good":`+strconv.FormatFloat(r.Value, 'g', -1, 64)+`}`)
	}
	offerGood("dev1")
	offerGood("dev2")
	for _, h := range hostile {
		ta.offer(t, h.topic, h.payload)
		offerGood("dev1")
		offerGood("dev2")
	}
	ta.flush(t)

	dev1 := ta.device(t, "dev1")
	var total uint64
	for reason, n := range wantRejected {
		require.Equal(t, n, dev1.RejectedByReason[reason], reason)
		total += n
	}
	require.Equal(t, total, dev1.Rejected)
	require.Zero(t, ta.device(t, "dev2").Rejected)

	// Live: every good reading once (and of dev1's wide payload only the
	// series within its limit).
	var live []Reading
	wideAccepted := 0
	for _, r := range ta.readings() {
		if strings.HasPrefix(r.Series, "dev1/w") {
			wideAccepted++
			continue
		}
		live = append(live, r)
	}
	require.ElementsMatch(t, good, live)
	require.Equal(t, seriesLimit-1, wideAccepted)

	// History: the good series count every good reading once.
	for _, dev := range []string{"dev1", "dev2"} {
		n, err := countOnce(context.Background(), ta.Aggregator, ta.mem, dev+"/good", rollup.Tier1s, nowMs-3_600_000, nowMs+1)
		require.NoError(t, err)
		require.Equal(t, int64(len(hostile)+1), n, dev)
	}
}
