package simulators

import (
	"context"
	"encoding/json"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/telegauge/telegauge/ingest"
)

// fixedNow is the reading time of deterministic payload tests.
var fixedNow = time.UnixMilli(1_700_000_000_123)

func TestRunDevices(t *testing.T) {
	const devices, perDevice, metrics = 5, 20, 3
	for _, tc := range []struct {
		name   string
		form   string
		qos    byte
		topics int // distinct topics
		perMsg int // readings per message
	}{
		{name: "object qos0", form: FormObject, qos: 0, topics: devices, perMsg: metrics},
		{name: "object qos1", form: FormObject, qos: 1, topics: devices, perMsg: metrics},
		{name: "metric qos0", form: FormMetric, qos: 0, topics: devices * metrics, perMsg: 1},
		{name: "senml qos1", form: FormSenML, qos: 1, topics: devices, perMsg: metrics},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sink := &countingSink{keep: true}
			addr := newTestBroker(t, sink)
			counters := new(DevicesCounters)
			stats, err := RunDevices(context.Background(), DevicesConfig{
				Broker:   "tcp://" + addr,
				Devices:  devices,
				Rate:     500,
				Messages: perDevice,
				Metrics:  metrics,
				Form:     tc.form,
				QoS:      tc.qos,
				IDPrefix: "dev-",
				Seed:     7,
				Now:      func() time.Time { return fixedNow },
				Counters: counters,
			}, nil)
			require.NoError(t, err)

			msgs := devices * perDevice
			if tc.form == FormMetric {
				msgs *= metrics
			}
			require.EqualValues(t, msgs, stats.Messages)
			require.EqualValues(t, devices*perDevice*metrics, stats.Readings)
			require.Zero(t, stats.Errors)
			require.Zero(t, stats.ConnectFailures)
			require.Zero(t, stats.Connected)
			if tc.qos == 1 {
				require.EqualValues(t, msgs, stats.Acks)
			} else {
				require.Zero(t, stats.Acks)
			}
			require.Equal(t, stats.Messages, counters.Snapshot().Messages)

			sink.waitCount(t, msgs)
			got := sink.Messages()
			topics := map[string]int{}
			dec := ingest.NewDecoder(ingest.DecodeConfig{})
			readings := map[string]int{}
			for _, m := range got {
				topics[m.topic]++
				d := dec.Decode(m.topic, m.payload, fixedNow.UnixMilli())
				require.Empty(t, d.Rejects, "%s %s", m.topic, m.payload)
				require.Len(t, d.Readings, tc.perMsg)
				for _, r := range d.Readings {
					require.Equal(t, fixedNow.UnixMilli(), r.TimeMs, "%s %s", m.topic, m.payload)
					readings[r.Series]++
				}
			}
			require.Len(t, topics, tc.topics)
			if tc.form == FormMetric {
				require.Contains(t, topics, "telemetry/dev-0000/temperature")
			} else {
				require.Contains(t, topics, "telemetry/dev-0000")
			}
			for i := range devices {
				id := DeviceID("dev-", i, devices)
				for _, name := range []string{"temperature", "humidity", "valve"} {
					require.Equal(t, perDevice, readings[id+"/"+name], id+"/"+name)
				}
			}
		})
	}
}

// TestPayloadShapes checks the exact bytes of each form.
func TestPayloadShapes(t *testing.T) {
	ms := []Metric{
		{Name: "temperature", Decimals: 2},
		{Name: "humidity", Decimals: 1},
		{Name: "valve", Decimals: 0},
	}
	vals := []float64{21.534, 40.06, 1}
	for _, tc := range []struct {
		name string
		got  string
		want string
	}{
		{
			name: "object",
			got:  string(appendObject(nil, 1_700_000_000_123, ms, vals)),
			want: `{"ts":1700000000123,"temperature":21.53,"humidity":40.1,"valve":1}`,
		},
		{
			name: "metric",
			got:  string(appendValue(nil, 1_700_000_000_123, ms[0], vals[0])),
			want: `{"ts":1700000000123,"value":21.53}`,
		},
		{
			name: "senml",
			got:  string(appendSenML(nil, "dev-0001", 1_700_000_000_023, ms, vals)),
			want: `[{"bn":"dev-0001:","bt":1700000000.023,"n":"temperature","v":21.53},{"n":"humidity","v":40.1},{"n":"valve","v":1}]`,
		},
		{name: "scaled", got: string(appendScaled(nil, 2153, 2)), want: "21.53"},
		{name: "scaled small", got: string(appendScaled(nil, 5, 3)), want: "0.005"},
		{name: "scaled zero frac", got: string(appendScaled(nil, 4000, 2)), want: "40.00"},
		{name: "scaled negative", got: string(appendScaled(nil, -105, 1)), want: "-10.5"},
		{name: "scaled integer", got: string(appendScaled(nil, 7, 0)), want: "7"},
		{name: "device id", got: DeviceID("dev-", 7, 100), want: "dev-0007"},
		{name: "device id wide", got: DeviceID("sim-", 7, 100_000), want: "sim-00007"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, tc.got)
			if strings.HasPrefix(tc.want, "{") || strings.HasPrefix(tc.want, "[") {
				require.True(t, json.Valid([]byte(tc.got)))
			}
		})
	}
}

func TestRunDevicesCredentials(t *testing.T) {
	sink := &countingSink{}
	addr := newTestBroker(t, sink)
	stats, err := RunDevices(context.Background(), DevicesConfig{
		Broker:   "tcp://" + addr,
		Devices:  2,
		Rate:     1000,
		Messages: 3,
		Credentials: func(i int) (string, string) {
			id := DeviceID("sim-", i, 2)
			return id, "token-" + id
		},
	}, nil)
	require.NoError(t, err)
	require.EqualValues(t, 6, stats.Messages)
	sink.waitCount(t, 6)
}

func TestRunDevicesConnectFailure(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	// A port nothing listens on: every attempt fails until the run ends.
	_, err := RunDevices(ctx, DevicesConfig{
		Broker:   "tcp://127.0.0.1:1",
		Devices:  1,
		Duration: 300 * time.Millisecond,
	}, nil)
	require.Error(t, err)
}

func TestRunDevicesBadConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  DevicesConfig
	}{
		{name: "form", cfg: DevicesConfig{Form: "xml"}},
		{name: "qos", cfg: DevicesConfig{QoS: 2}},
		{name: "id prefix", cfg: DevicesConfig{IDPrefix: "a/b"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := RunDevices(context.Background(), tc.cfg, nil)
			require.Error(t, err)
		})
	}
}

func TestPatternsDeterministic(t *testing.T) {
	times := make([]time.Time, 50)
	for i := range times {
		times[i] = fixedNow.Add(time.Duration(i) * 1500 * time.Millisecond)
	}
	run := func(seed int64) [][]float64 {
		ms := DefaultMetrics(seed, 3, 6)
		out := make([][]float64, len(ms))
		for i, m := range ms {
			for _, at := range times {
				out[i] = append(out[i], m.Pattern(at))
			}
		}
		return out
	}
	a, b, c := run(1), run(1), run(2)
	require.Equal(t, a, b)
	require.NotEqual(t, a, c)

	names := []string{}
	for _, m := range DefaultMetrics(1, 0, 6) {
		require.True(t, validName(m.Name), m.Name)
		names = append(names, m.Name)
	}
	require.Equal(t, []string{"temperature", "humidity", "valve", "vibration", "m4", "m5"}, names)

	for _, tc := range []struct {
		name   string
		values []float64
		lo, hi float64
	}{
		{name: "humidity bounded", values: a[1], lo: 0, hi: 100},
		{name: "valve is 0 or 1", values: a[2], lo: 0, hi: 1},
		{name: "temperature plausible", values: a[0], lo: 10, hi: 32},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, v := range tc.values {
				require.GreaterOrEqual(t, v, tc.lo)
				require.LessOrEqual(t, v, tc.hi)
			}
		})
	}
	for _, v := range a[2] {
		require.True(t, v == 0 || v == 1)
	}
	// A long random walk stays within its bounds and moves.
	w := RandomWalk(9, 50, 5, 0, 100)
	seen := map[float64]bool{}
	lo, hi := 100.0, 0.0
	for i := range 10_000 {
		v := w(fixedNow.Add(time.Duration(i) * time.Second))
		lo, hi = min(lo, v), max(hi, v)
		seen[v] = true
	}
	require.GreaterOrEqual(t, lo, 0.0)
	require.LessOrEqual(t, hi, 100.0)
	require.Greater(t, len(seen), 1000)
	// A step toggles.
	s := Step(3, 0, 1, time.Second)
	vals := []float64{}
	for i := range 100 {
		vals = append(vals, s(fixedNow.Add(time.Duration(i)*time.Second)))
	}
	sort.Float64s(vals)
	require.Equal(t, 0.0, vals[0])
	require.Equal(t, 1.0, vals[len(vals)-1])
}

// TestRunDevicesBackfill: a device first publishes its past, oldest first,
// with the readings' own timestamps, then goes live.
func TestRunDevicesBackfill(t *testing.T) {
	sink := &countingSink{keep: true}
	addr := newTestBroker(t, sink)
	stats, err := RunDevices(context.Background(), DevicesConfig{
		Broker:       "tcp://" + addr,
		Devices:      1,
		Rate:         500,
		Messages:     2,
		Metrics:      1,
		QoS:          1,
		IDPrefix:     "bf-",
		Backfill:     time.Minute,
		BackfillStep: 10 * time.Second,
		Now:          func() time.Time { return fixedNow },
	}, nil)
	require.NoError(t, err)
	require.EqualValues(t, 5+2, stats.Messages, "five backfilled, then two live")
	sink.waitCount(t, 7)
	var ts []int64
	for _, m := range sink.Messages() {
		var p struct{ Ts int64 }
		require.NoError(t, json.Unmarshal(m.payload, &p))
		ts = append(ts, p.Ts)
	}
	base := fixedNow.UnixMilli()
	require.Equal(t, []int64{base - 50_000, base - 40_000, base - 30_000, base - 20_000, base - 10_000, base, base}, ts)
}
