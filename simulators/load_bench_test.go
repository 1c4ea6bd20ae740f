package simulators

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func BenchmarkLoadPayload(b *testing.B) {
	for _, metrics := range []int{2, 8} {
		b.Run(fmt.Sprintf("metrics=%d", metrics), func(b *testing.B) {
			p := newLoadPayload(metrics, 1)
			ts := int64(1_700_000_000_123)
			b.ReportAllocs()
			for b.Loop() {
				ts++
				p.build(ts)
			}
		})
	}
}

// BenchmarkRawPublish measures building and encoding one PUBLISH into the
// write buffer, without the network.
func BenchmarkRawPublish(b *testing.B) {
	for _, qos := range []byte{0, 1} {
		b.Run(fmt.Sprintf("qos=%d", qos), func(b *testing.B) {
			c := &rawClient{w: bufio.NewWriterSize(io.Discard, 64<<10), qos: qos, scratch: make([]byte, 0, 512)}
			if qos > 0 {
				// A window nobody acknowledges: free the slot by hand.
				c.slots = make([]atomic.Uint32, 1)
				c.sem = make(chan struct{}, 1)
				c.maxID, c.nextID = 65535, 1
			}
			p := newLoadPayload(2, 1)
			topic := []byte("telemetry/load-0001")
			stop := make(chan struct{})
			ts := int64(1_700_000_000_123)
			b.ReportAllocs()
			for b.Loop() {
				ts++
				if err := c.publish(topic, p.build(ts), stop); err != nil {
					b.Fatal(err)
				}
				if qos > 0 {
					c.slots[0].Store(0)
					<-c.sem
				}
			}
		})
	}
}

// discardBroker accepts MQTT connections, accepts every CONNECT and
// discards everything after it: the ceiling of the load generator itself.
func discardBroker(b *testing.B) string {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(b, err)
	var wg sync.WaitGroup
	b.Cleanup(func() {
		_ = ln.Close()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer conn.Close()
				f := &fakeBrokerConn{conn: conn, r: bufio.NewReaderSize(conn, 64<<10)}
				if _, _, err := f.readPacket(); err != nil {
					return
				}
				_, _ = conn.Write([]byte{pktConnack, 2, 0, 0})
				_, _ = io.Copy(io.Discard, f.r)
			}()
		}
	}()
	return ln.Addr().String()
}

// BenchmarkRunLoad publishes b.N QoS 0 messages as fast as possible over
// loopback and reports messages per second, against the repository's mochi
// broker (a sink that only counts) and against a discarding server.
func BenchmarkRunLoad(b *testing.B) {
	for _, target := range []string{"broker", "discard"} {
		for _, conns := range []int{1, 100} {
			b.Run(fmt.Sprintf("target=%s/conns=%d", target, conns), func(b *testing.B) {
				var addr string
				if target == "broker" {
					addr = newTestBroker(b, &countingSink{})
				} else {
					addr = discardBroker(b)
				}
				per := max(b.N/conns, 1)
				b.ResetTimer()
				start := time.Now()
				s, err := RunLoad(context.Background(), LoadConfig{
					Addr:        addr,
					Connections: conns,
					Messages:    per,
				}, nil)
				elapsed := time.Since(start)
				b.StopTimer()
				require.NoError(b, err)
				require.EqualValues(b, per*conns, s.Messages)
				b.ReportMetric(float64(s.Messages)/elapsed.Seconds(), "msg/s")
			})
		}
	}
}
