package simulators

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"
)

// sseBenchStream returns n frames of points points each, as the server
// sends them.
func sseBenchStream(frames, points int) []byte {
	var b bytes.Buffer
	for f := range frames {
		fmt.Fprintf(&b, "id: e1-%d\ndata: {\"cursor\":\"e1-%d\",\"points\":[", f, f)
		for p := range points {
			if p > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, `{"s":"sim-%04d/temperature","t":%d,"v":21.%02d}`, p, 1_700_000_000_000+int64(f), p%100)
		}
		b.WriteString("]}\n\n")
		if f%10 == 9 {
			b.WriteString("event: heartbeat\ndata: 1700000000000\n\n: keep-alive\n\n")
		}
	}
	return b.Bytes()
}

// BenchmarkParseSSE measures the SSE parser alone (no JSON decoding).
func BenchmarkParseSSE(b *testing.B) {
	for _, points := range []int{1, 100} {
		b.Run(fmt.Sprintf("points=%d", points), func(b *testing.B) {
			stream := sseBenchStream(100, points)
			r := bytes.NewReader(stream)
			br := bufio.NewReaderSize(r, 16<<10)
			p := &sseParser{}
			n := 0
			b.SetBytes(int64(len(stream)))
			b.ReportAllocs()
			for b.Loop() {
				r.Reset(stream)
				br.Reset(r)
				if err := p.parse(br, func(*sseEvent) error { n++; return nil }); err != io.EOF {
					b.Fatal(err)
				}
			}
			_ = n
		})
	}
}

// BenchmarkViewerSSE measures what a viewer does per stream: parse, decode
// frames, check duplicates and record latencies.
func BenchmarkViewerSSE(b *testing.B) {
	for _, points := range []int{1, 100} {
		b.Run(fmt.Sprintf("points=%d", points), func(b *testing.B) {
			stream := string(sseBenchStream(100, points))
			cfg := &ViewersConfig{Transport: TransportSSE, Now: func() time.Time { return time.UnixMilli(1_700_000_000_050) }}
			if err := cfg.setDefaults(); err != nil {
				b.Fatal(err)
			}
			v := newViewer(cfg, 0, http.DefaultClient, slog.New(slog.DiscardHandler))
			v.sse = &sseParser{}
			r := strings.NewReader("")
			br := bufio.NewReaderSize(r, 16<<10)
			b.SetBytes(int64(len(stream)))
			b.ReportAllocs()
			for b.Loop() {
				r.Reset(stream)
				br.Reset(r)
				if err := v.sse.parse(br, v.onSSE); err != io.EOF {
					b.Fatal(err)
				}
			}
		})
	}
}
