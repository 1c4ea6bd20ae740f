//go:build integration

package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/stretchr/testify/require"

	"github.com/telegauge/telegauge/simulators"
)

// The hostile-load test's limits, set low so that the bad devices reach
// them within seconds; the good devices stay far inside every one.
const (
	hostileMaxPacket  = 4096      // bytes
	hostileRate       = 50        // readings/s per device
	hostileBurst      = 100       // readings
	hostileMaxSeries  = 20        // per device
	hostileMaxKA      = 5         // seconds: a silent connection is cut after 7 s
	hostileGroup      = 40        // bad devices of each of five kinds
	hostileGood       = 200       // good devices
	hostileGoodMsgs   = 25        // messages per good device, 2 readings each
	hostileGoodRate   = 5         // messages/s per good device: 10 readings/s
	hostileHeapLimit  = 256 << 20 // bytes of live heap objects, whole process (measured peak: 33-56 MiB)
	hostileOversize   = 3         // oversized packets per oversize device, one per connection
	hostileSeriesMsgs = 10        // messages per wide device, 100 readings each
	hostileBadMsgs    = 20        // messages per malformed device
	// Messages per flooding device, as fast as it can: 600 readings, which
	// the rate lets in over at least (600-100)/50 = 10 s. They all fit in
	// the flooder's and the kernel's buffers, so its client is done at once
	// and the server then reads them at the device's rate.
	hostileFlood = 300
)

// TestHostileLoad: 200 bad devices and 200 good ones at once against one
// server. The bad ones send only malformed payloads (40), packets over the
// size limit (40, reconnecting each time they are cut), readings as fast
// as they can (40), a hundred metrics each against a limit of twenty (40),
// or connect and fall silent (40). Every good reading must arrive, exactly
// (the history API's counts), no good device may see a rejection, a lost
// connection or a slowed one, each bad kind must be refused or (the
// flooders) slowed by its limit, and the process (server and all 400
// clients: they share it) must stay under a heap bound sampled throughout.
// The flooders lose nothing: every reading they sent is stored, no faster
// than their rate and burst allow.
func TestHostileLoad(t *testing.T) {
	began := time.Now()
	n := mustRunMain(t,
		fmt.Sprintf("--mqtt-max-packet-bytes=%d", hostileMaxPacket),
		fmt.Sprintf("--max-rate-per-device=%d", hostileRate),
		fmt.Sprintf("--max-burst-per-device=%d", hostileBurst),
		fmt.Sprintf("--max-series-per-device=%d", hostileMaxSeries),
		fmt.Sprintf("--mqtt-max-keepalive=%ds", hostileMaxKA),
	)
	heap := startHeapSampler(t)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
	defer cancel()

	var wg sync.WaitGroup
	errs := make(chan error, 8*hostileGroup+8)
	run := func(name string, f func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(); err != nil {
				errs <- fmt.Errorf("%s: %w", name, err)
			}
		}()
	}

	// Good devices: paho at QoS 1, 10 readings/s each.
	var good simulators.DevicesStats
	run("good devices", func() (err error) {
		good, err = simulators.RunDevices(ctx, simulators.DevicesConfig{
			Broker: n.mqttURL, Devices: hostileGood, Rate: hostileGoodRate, Messages: hostileGoodMsgs,
			Metrics: 2, QoS: 1, IDPrefix: "good-", KeepAlive: hostileMaxKA * time.Second, Seed: 1,
		}, nil)
		return err
	})
	// Malformed payloads only.
	var malformed simulators.DevicesStats
	run("malformed devices", func() (err error) {
		malformed, err = simulators.RunDevices(ctx, simulators.DevicesConfig{
			Broker: n.mqttURL, Devices: hostileGroup, Rate: 10, Messages: hostileBadMsgs,
			Metrics: 2, QoS: 1, IDPrefix: "bad-mal-", BadShare: 1, KeepAlive: hostileMaxKA * time.Second, Seed: 2,
		}, nil)
		return err
	})
	// Too many series: 100 metrics a message against a limit of 20.
	var wide simulators.DevicesStats
	run("series devices", func() (err error) {
		wide, err = simulators.RunDevices(ctx, simulators.DevicesConfig{
			Broker: n.mqttURL, Devices: hostileGroup, Rate: 2, Messages: hostileSeriesMsgs,
			Metrics: 100, QoS: 1, IDPrefix: "bad-wide-", KeepAlive: hostileMaxKA * time.Second, Seed: 3,
		}, nil)
		return err
	})
	// Over the rate: 600 readings each as fast as they can, at QoS 0
	// (a count rather than a time: on a busy machine connecting alone can
	// take seconds).
	var flood simulators.LoadStats
	floodStart := time.Now()
	run("flooding devices", func() (err error) {
		flood, err = simulators.RunLoad(ctx, simulators.LoadConfig{
			Addr: n.broker.Addr(), Connections: hostileGroup, Messages: hostileFlood, Metrics: 2, IDPrefix: "bad-hog-",
		}, nil)
		return err
	})
	// Oversized packets: each device connects, sends one packet over the
	// limit, is cut, and does it again.
	for i := range hostileGroup {
		id := simulators.DeviceID("bad-big-", i, hostileGroup)
		run(id, func() error {
			for round := range hostileOversize {
				if err := sendOversized(ctx, n.mqttURL, fmt.Sprintf("%s-%d", id, round), id); err != nil {
					return err
				}
			}
			return nil
		})
	}
	// Silent connections: no keep-alive asked for, nothing sent after
	// CONNECT. The server must cut them.
	for i := range hostileGroup {
		id := simulators.DeviceID("bad-mute-", i, hostileGroup)
		run(id, func() error { return waitCut(ctx, n.mqttURL, id) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	require.False(t, t.Failed())
	loadDone := time.Since(began)

	// Every good reading arrived, and nothing of theirs was refused.
	require.Equal(t, int64(hostileGood*hostileGoodMsgs), good.Messages)
	require.Equal(t, int64(2*hostileGood*hostileGoodMsgs), good.Readings)
	require.Zero(t, good.Errors, "good devices' publish errors")
	require.Zero(t, good.ConnectFailures, "good devices' failed connections")
	require.Zero(t, good.ConnectionsLost, "good devices' lost connections")
	goodSeries := deviceSeries("good-", hostileGood)
	from, to := began.Add(-time.Minute).UnixMilli(), time.Now().Add(time.Minute).UnixMilli()
	eventually(t, 20*time.Second, func() error {
		counts, err := seriesTotals(n.httpURL, goodSeries, from, to)
		if err != nil {
			return err
		}
		var total int64
		for _, s := range goodSeries {
			if counts[s] != hostileGoodMsgs {
				return fmt.Errorf("%s has %d readings, want %d", s, counts[s], hostileGoodMsgs)
			}
			total += counts[s]
		}
		if total != good.Readings {
			return fmt.Errorf("%d good readings stored, want %d", total, good.Readings)
		}
		return nil
	})
	devices := listDevices(t, n.httpURL)
	for i := range hostileGood {
		d := devices[simulators.DeviceID("good-", i, hostileGood)]
		require.NotNil(t, d, "good device %d listed", i)
		require.Zero(t, d.Rejected, "good device %s: %v", d.ID, d.RejectedByReason)
	}

	// Each kind of bad device met its limit.
	sum := func(prefix, reason string) (n uint64) {
		for id, d := range devices {
			if strings.HasPrefix(id, prefix) {
				if reason == "" {
					n += d.Rejected
				} else {
					n += d.RejectedByReason[reason]
				}
			}
		}
		return n
	}
	require.Equal(t, int64(hostileGroup*hostileBadMsgs), malformed.Bad)
	require.Equal(t, uint64(malformed.Bad), sum("bad-mal-", ""), "every malformed message rejected once")
	for i := range hostileGroup {
		id := simulators.DeviceID("bad-wide-", i, hostileGroup)
		d := devices[id]
		require.NotNil(t, d, id)
		require.Len(t, d.Metrics, hostileMaxSeries, id)
		require.Positive(t, d.RejectedByReason["too_many_series"], id)
	}
	wideAccepted := acceptedOf(t, n.httpURL, devices, "bad-wide-", from, to)
	require.Equal(t, wide.Readings, wideAccepted+int64(sum("bad-wide-", "too_many_series")),
		"every reading of the wide devices accepted or rejected, once")
	for i := range hostileGroup {
		dev := simulators.DeviceID("bad-wide-", i, hostileGroup)
		require.Zero(t, devices[dev].ThrottledSeconds, "%s is within its rate (20 series, 2 messages/s)", dev)
	}

	// The flood: every flooder sent all its messages, none of them was
	// refused, and each was slowed: the server read its connection at its
	// rate, so its stored readings never ran ahead of its burst plus its
	// rate since the flood began, and arrived in full only after the time
	// the rate takes.
	require.Equal(t, int64(hostileGroup*hostileFlood), flood.Messages)
	require.Zero(t, flood.Errors)
	hogSeries := deviceSeries("bad-hog-", hostileGroup)
	const hogReadings = 2 * hostileFlood
	var hogTotal int64
	eventually(t, 40*time.Second, func() error {
		// Stored readings lag accepted ones; either is within the bound.
		// The 2 is the readings of the publish being held.
		maxHog := int64(hostileBurst + 2 + hostileRate*time.Since(floodStart).Seconds())
		counts, err := seriesTotals(n.httpURL, hogSeries, from, to)
		if err != nil {
			return err
		}
		hogTotal = 0
		var short []string
		for i := range hostileGroup {
			dev := simulators.DeviceID("bad-hog-", i, hostileGroup)
			got := counts[dev+"/"+simulators.MetricName(0)] + counts[dev+"/"+simulators.MetricName(1)]
			if got > maxHog {
				t.Fatalf("%s has %d readings stored %s after the flood began: more than its burst and rate allow (%d)",
					dev, got, time.Since(floodStart).Round(time.Millisecond), maxHog)
			}
			if got < hogReadings {
				short = append(short, fmt.Sprintf("%s: %d", dev, got))
			}
			hogTotal += got
		}
		if len(short) > 0 {
			return fmt.Errorf("%d flooders have not all their %d readings stored yet, e.g. %s", len(short), hogReadings, short[0])
		}
		return nil
	})
	floodSpan := time.Since(floodStart)
	minSpan := time.Duration(float64(hogReadings-hostileBurst-2) / hostileRate * float64(time.Second))
	require.GreaterOrEqual(t, floodSpan, minSpan, "the flood was stored no faster than the rate allows")
	require.Equal(t, 2*flood.Messages, hogTotal, "every reading the flooders sent is stored")
	devices = listDevices(t, n.httpURL)
	for i := range hostileGroup {
		dev := simulators.DeviceID("bad-hog-", i, hostileGroup)
		require.Zero(t, devices[dev].Rejected, "%s: %v", dev, devices[dev].RejectedByReason)
		require.Positive(t, devices[dev].ThrottledSeconds, "%s was slowed", dev)
	}
	for i := range hostileGood {
		d := devices[simulators.DeviceID("good-", i, hostileGood)]
		require.Zero(t, d.ThrottledSeconds, "good device %s was never slowed", d.ID)
	}

	m, err := scrapeMetrics(n.httpURL)
	require.NoError(t, err)
	refused := func(limit string) float64 { return m[`telegauge_mqtt_limit_refusals_total{limit="`+limit+`"}`] }
	require.GreaterOrEqual(t, refused("packet_size"), float64(hostileGroup*hostileOversize))
	require.GreaterOrEqual(t, refused("keepalive"), float64(hostileGroup))
	require.Positive(t, m["telegauge_device_throttled_seconds_total"])
	require.Positive(t, m["telegauge_device_throttled_messages_total"])
	require.NotContains(t, m, `telegauge_readings_rejected_total{reason="rate_limited"}`, "nothing is rejected for the rate")
	require.Positive(t, m[`telegauge_readings_rejected_total{reason="too_many_series"}`])
	require.Positive(t, m[`telegauge_readings_rejected_total{reason="malformed"}`])

	// Every bad connection is gone; the server still answers.
	eventually(t, 10*time.Second, func() error {
		m, err := scrapeMetrics(n.httpURL)
		if err != nil {
			return err
		}
		if c := m["telegauge_mqtt_connections"]; c != 0 {
			return fmt.Errorf("%v MQTT connections left", c)
		}
		return nil
	})
	resp, err := http.Get(n.httpURL + "/healthz")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)

	peak := heap.stop()
	t.Logf("hostile load: %d good readings all stored; load phase %s, whole test %s; flood sent %d messages (%.0f/s); "+
		"flooders' readings all stored (%d) over %s (at least %s at their rate), held %.1f s in %v publishes; "+
		"refusals: packet_size %v, keepalive %v; rejected: too_many_series %v, malformed %v; "+
		"peak Go heap (objects, whole process) %.1f MiB, server's heap in use at the end %.1f MiB",
		good.Readings, loadDone.Round(time.Millisecond), time.Since(began).Round(time.Millisecond), flood.Messages, flood.MessagesPerSecond,
		hogTotal, floodSpan.Round(time.Millisecond), minSpan.Round(time.Millisecond),
		m["telegauge_device_throttled_seconds_total"], m["telegauge_device_throttled_messages_total"],
		refused("packet_size"), refused("keepalive"),
		m[`telegauge_readings_rejected_total{reason="too_many_series"}`],
		m[`telegauge_readings_rejected_total{reason="malformed"}`],
		float64(peak)/(1<<20), m["go_memstats_heap_inuse_bytes"]/(1<<20))
	require.Less(t, peak, uint64(hostileHeapLimit), "peak heap")
}

// TestBacklogOverTheRate: devices back from hours offline replay their
// backlog (the simulators' backfill, at QoS 1, each as fast as its
// in-flight window lets it), several times their burst. The rate slows
// them down and loses nothing: every reading is stored, none is rejected,
// each device was held, and the replay took at least the time the rate
// says.
func TestBacklogOverTheRate(t *testing.T) {
	const (
		rate, burst = 200, 100 // readings/s, readings
		devices     = 4
		// One message a second over 5 minutes, two readings each, then one
		// live message: 600 readings a device, (600-100)/200 = 2.5 s at
		// the rate.
		backfill = 5 * time.Minute
		readings = 2 * (5*60 - 1 + 1)
	)
	n := mustRunMain(t, fmt.Sprintf("--max-rate-per-device=%d", rate), fmt.Sprintf("--max-burst-per-device=%d", burst))
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	began := time.Now()
	stats, err := simulators.RunDevices(ctx, simulators.DevicesConfig{
		Broker: n.mqttURL, Devices: devices, Rate: 10, Messages: 1, Metrics: 2, QoS: 1,
		IDPrefix: "replay-", Backfill: backfill, BackfillStep: time.Second, Seed: 4,
	}, nil)
	require.NoError(t, err)
	replay := time.Since(began)
	require.EqualValues(t, devices*readings, stats.Readings, "readings sent")
	require.Zero(t, stats.Errors, "publish errors")
	require.Zero(t, stats.Unsent+stats.Dropped, "readings left unsent or dropped by the devices")
	require.EqualValues(t, stats.Messages, stats.Acks, "QoS 1 acknowledgements")
	// Every publish was acknowledged, so every reading was accepted by now:
	// no faster than the rate allows.
	minReplay := time.Duration(float64(readings-burst-2) / rate * float64(time.Second))
	require.GreaterOrEqual(t, replay, minReplay, "the replay was slowed to the rate")

	series := deviceSeries("replay-", devices)
	from, to := began.Add(-backfill-time.Minute).UnixMilli(), time.Now().Add(time.Minute).UnixMilli()
	eventually(t, 20*time.Second, func() error {
		counts, err := seriesTotals(n.httpURL, series, from, to)
		if err != nil {
			return err
		}
		for _, s := range series {
			if counts[s] != readings/2 {
				return fmt.Errorf("%s has %d readings stored, want %d", s, counts[s], readings/2)
			}
		}
		return nil
	})
	devs := listDevices(t, n.httpURL)
	var held float64
	for i := range devices {
		d := devs[simulators.DeviceID("replay-", i, devices)]
		require.NotNil(t, d, i)
		require.Zero(t, d.Rejected, "%s: %v", d.ID, d.RejectedByReason)
		require.Positive(t, d.ThrottledSeconds, "%s was slowed", d.ID)
		held += d.ThrottledSeconds
	}
	t.Logf("backlog over the rate: %d devices replayed %d readings each in %s (at least %s at %d/s after a burst of %d), held %.1f s in all; all stored",
		devices, readings, replay.Round(time.Millisecond), minReplay.Round(time.Millisecond), rate, burst, held)
}

// sendOversized connects as client id for device dev, publishes a packet
// over the limit and waits for the server to cut the connection.
func sendOversized(ctx context.Context, broker, id, dev string) error {
	lost := make(chan struct{})
	var once sync.Once
	c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(broker).SetClientID(id).SetUsername(dev).SetProtocolVersion(4).
		SetAutoReconnect(false).SetKeepAlive(hostileMaxKA * time.Second).
		SetConnectionLostHandler(func(mqtt.Client, error) { once.Do(func() { close(lost) }) }))
	tok := c.Connect()
	if !tok.WaitTimeout(20*time.Second) || tok.Error() != nil {
		return fmt.Errorf("connect: %v", tok.Error())
	}
	defer c.Disconnect(0)
	c.Publish("telemetry/"+dev, 0, false, `{"blob":"`+strings.Repeat("x", 2*hostileMaxPacket)+`"}`)
	select {
	case <-lost:
		return nil
	case <-ctx.Done():
		return errors.New("an oversized packet did not cut the connection")
	}
}

// waitCut connects with no keep-alive, sends nothing more, and waits for
// the server to cut the connection.
func waitCut(ctx context.Context, broker, id string) error {
	lost := make(chan struct{})
	var once sync.Once
	c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(broker).SetClientID(id).SetProtocolVersion(4).
		SetAutoReconnect(false).SetKeepAlive(0).
		SetConnectionLostHandler(func(mqtt.Client, error) { once.Do(func() { close(lost) }) }))
	tok := c.Connect()
	if !tok.WaitTimeout(20*time.Second) || tok.Error() != nil {
		return fmt.Errorf("connect: %v", tok.Error())
	}
	defer c.Disconnect(0)
	select {
	case <-lost:
		return nil
	case <-ctx.Done():
		return errors.New("a silent connection was not cut")
	}
}

// seriesTotals asks GET /api/v1/query for the readings of each series in
// [fromMs, toMs), summed over its buckets, fifty series a request.
func seriesTotals(base string, series []string, fromMs, toMs int64) (map[string]int64, error) {
	out := map[string]int64{}
	for len(series) > 0 {
		batch := series[:min(50, len(series))]
		series = series[len(batch):]
		q := url.Values{"from": {strconv.FormatInt(fromMs, 10)}, "to": {strconv.FormatInt(toMs, 10)}, "step": {"1m"}}
		for _, s := range batch {
			q.Add("series", s)
		}
		resp, err := http.Get(base + "/api/v1/query?" + q.Encode())
		if err != nil {
			return nil, err
		}
		var a queryAnswer
		err = json.NewDecoder(resp.Body).Decode(&a)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("query: %s %v %s", resp.Status, err, a.Error)
		}
		for _, s := range a.Series {
			for _, c := range s.Count {
				out[s.ID] += c
			}
		}
	}
	return out, nil
}

// acceptedOf returns how many readings the devices with prefix had
// accepted, from the history API.
func acceptedOf(t *testing.T, base string, devices map[string]*apiDevice, prefix string, fromMs, toMs int64) int64 {
	t.Helper()
	var series []string
	for id, d := range devices {
		if strings.HasPrefix(id, prefix) {
			for _, m := range d.Metrics {
				series = append(series, id+"/"+m)
			}
		}
	}
	counts, err := seriesTotals(base, series, fromMs, toMs)
	require.NoError(t, err)
	var n int64
	for _, c := range counts {
		n += c
	}
	return n
}

// apiDevice is a device in GET /api/v1/devices.
type apiDevice struct {
	ID               string            `json:"id"`
	Online           bool              `json:"online"`
	Metrics          []string          `json:"metrics"`
	Rejected         uint64            `json:"rejected"`
	RejectedByReason map[string]uint64 `json:"rejectedByReason"`
	ThrottledSeconds float64           `json:"throttledSeconds"`
}

func listDevices(t *testing.T, base string) map[string]*apiDevice {
	t.Helper()
	var body struct {
		Devices []*apiDevice `json:"devices"`
	}
	require.Equal(t, http.StatusOK, getJSON(t, base+"/api/v1/devices", &body))
	out := make(map[string]*apiDevice, len(body.Devices))
	for _, d := range body.Devices {
		out[d.ID] = d
	}
	return out
}

// heapSampler records the peak of the process's live heap objects.
type heapSampler struct {
	stopc chan struct{}
	done  chan uint64
}

// startHeapSampler samples /memory/classes/heap/objects:bytes every 50 ms
// until stop, which returns the peak.
func startHeapSampler(t *testing.T) *heapSampler {
	h := &heapSampler{stopc: make(chan struct{}), done: make(chan uint64, 1)}
	go func() {
		sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		var peak uint64
		for {
			metrics.Read(sample)
			peak = max(peak, sample[0].Value.Uint64())
			select {
			case <-tick.C:
			case <-h.stopc:
				h.done <- peak
				return
			}
		}
	}()
	t.Cleanup(func() { h.stop() })
	return h
}

func (h *heapSampler) stop() uint64 {
	select {
	case <-h.stopc:
	default:
		close(h.stopc)
	}
	p := <-h.done
	h.done <- p
	return p
}
