package web

import (
	"bufio"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestExport streams rollups as CSV and JSON, page by page, with the same
// numbers /api/v1/query gives.
func TestExport(t *testing.T) {
	ts := newTestServer(t, withWeb(func(c *Config) { c.ExportPageBuckets = 2 })) // force paging
	base := t0.UnixMilli() - t0.UnixMilli()%60_000 - 5*60_000
	var pts []point
	for i := range 5 * 60 {
		pts = append(pts, point{"dev1/temp", base + int64(i)*1000, float64(i % 17)})
		pts = append(pts, point{"dev2/hum", base + int64(i)*1000, float64(i % 5)})
	}
	ts.offer(t, pts...)
	q := "series=dev1/temp&series=dev2/hum&step=1m&from=" + strconv.FormatInt(base, 10) + "&to=" + strconv.FormatInt(base+5*60_000, 10)

	resp, err := http.Get(ts.url + "/api/v1/export?" + q)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "text/csv; charset=utf-8", resp.Header.Get("Content-Type"))
	require.Contains(t, resp.Header.Get("Content-Disposition"), "telegauge-export.csv")
	rows, err := csv.NewReader(resp.Body).ReadAll()
	require.NoError(t, err)
	require.Equal(t, []string{"series", "time", "time_ms", "min", "max", "avg", "count", "last"}, rows[0])
	require.Len(t, rows, 1+2*5, "five 1m buckets per series, across three pages of two")

	var query queryAnswerJSON
	require.Equal(t, http.StatusOK, getJSON(t, ts.url+"/api/v1/query?"+q, &query))
	i := 1
	for _, s := range query.Series {
		for j := range s.T {
			r := rows[i]
			require.Equal(t, s.ID, r[0])
			require.Equal(t, strconv.FormatInt(s.T[j], 10), r[2])
			require.Equal(t, strconv.FormatInt(s.Count[j], 10), r[6])
			require.Equal(t, strconv.FormatFloat(s.Avg[j], 'g', -1, 64), r[5])
			i++
		}
	}

	resp, err = http.Get(ts.url + "/api/v1/export?" + q + "&format=json")
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	var jrows []struct {
		Series string
		T      int64
		Count  int64
		Avg    float64
	}
	require.NoError(t, json.Unmarshal(body, &jrows), "one JSON array: %s", body)
	require.Len(t, jrows, 10)
	require.Equal(t, "dev1/temp", jrows[0].Series)
	require.Equal(t, int64(60), jrows[0].Count)
}

func TestExportErrors(t *testing.T) {
	ts := newTestServer(t)
	for _, tc := range []struct {
		name, query, msg string
		status           int
	}{
		{"no series", "", "no series", 400},
		{"unknown series", "series=dev9/none", "unknown series", 404},
		{"raw step", "series=dev1/temp&step=raw", "step", 400},
		{"bad format", "series=dev1/temp&format=xml", "format", 400},
		{"empty range", "series=dev1/temp&from=-1h&to=-2h", "empty range", 400},
		{"too many buckets", "series=dev1/temp&step=1s&from=0", "export too large", 400},
		{"too many buckets in all", "series=" + strings.Repeat("dev1/temp,", 200) + "&step=1s&from=-1d", "export too large", 400},
		{"range beyond any reading", "series=dev1/temp&from=9007199254740993&to=9223372036854775807", "outside", 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if strings.Contains(tc.query, "dev1/temp") {
				ts.offer(t, point{"dev1/temp", t0.UnixMilli(), 1})
			}
			resp, err := http.Get(ts.url + "/api/v1/export?" + tc.query)
			require.NoError(t, err)
			require.Contains(t, requireJSONError(t, tc.status, resp), tc.msg)
		})
	}
}

// TestExportSlowReaderIsCut: a client that asks for a large export and
// stops reading is cut once nothing moves for WriteTimeout, freeing the
// export and its connection; a client that reads gets it all.
func TestExportSlowReaderIsCut(t *testing.T) {
	const writeTimeout = 300 * time.Millisecond
	ts := newTestServer(t, withWeb(func(c *Config) { c.WriteTimeout = writeTimeout }))
	// Twice what the server's socket may buffer (the most TCP's send
	// buffer grows to here; 4 MiB by default), so the server must wait for
	// the reader: 84,000 rows, some 9 MB of JSON, by default.
	const devices = 20
	sendMax := sendBufferMax(t)
	points := max(3600, int(2*sendMax/100/devices))
	base := t0.UnixMilli() - t0.UnixMilli()%1000 - int64(points)*1000
	var pts []point
	q := url.Values{"step": {"1s"}, "format": {"json"}, "from": {strconv.FormatInt(base, 10)}, "to": {strconv.FormatInt(t0.UnixMilli(), 10)}}
	for d := range devices {
		id := fmt.Sprintf("dev%02d/temp", d)
		q.Add("series", id)
		for i := range points {
			pts = append(pts, point{id, base + int64(i)*1000, float64(i)})
		}
	}
	ts.offer(t, pts...)
	exporting := func() float64 { return ts.metric(t, "telegauge_http_exports_streaming", nil) }

	// A reader that stops after the headers, with a small receive window.
	d := net.Dialer{Timeout: waitTimeout, Control: rcvBufControl(4096)}
	slow, err := d.Dial("tcp", ts.srv.Addr())
	require.NoError(t, err)
	defer slow.Close()
	_, err = io.WriteString(slow, "GET /api/v1/export?"+q.Encode()+" HTTP/1.1\r\nHost: telegauge\r\n\r\n")
	require.NoError(t, err)
	slowReader := bufio.NewReader(slow)
	resp, err := http.ReadResponse(slowReader, nil)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, 1.0, exporting())

	// A good client beside it gets every row.
	good, err := http.Get(ts.url + "/api/v1/export?" + q.Encode())
	require.NoError(t, err)
	body, err := io.ReadAll(good.Body)
	good.Body.Close()
	require.NoError(t, err)
	var rows []json.RawMessage
	require.NoError(t, json.Unmarshal(body, &rows))
	require.Len(t, rows, devices*points)
	require.Greater(t, int64(len(body)), sendMax+64<<10)

	// The slow one is given up on, and what it then reads is cut short.
	eventually(t, waitTimeout, func() error {
		if n := exporting(); n != 0 {
			return fmt.Errorf("%v exports still streaming", n)
		}
		return nil
	})
	_ = slow.SetReadDeadline(time.Now().Add(waitTimeout))
	got, err := io.ReadAll(resp.Body)
	var ne net.Error
	require.False(t, errors.As(err, &ne) && ne.Timeout(), "the server did not close the connection")
	require.Error(t, err, "a cut chunked body ends without its last chunk")
	require.Less(t, len(got), len(body))
}

// sendBufferMax is the most a TCP socket's send buffer grows to on this
// machine (the third field of net.ipv4.tcp_wmem), or 4 MiB if unknown.
func sendBufferMax(t *testing.T) int64 {
	b, err := os.ReadFile("/proc/sys/net/ipv4/tcp_wmem")
	if err != nil {
		return 4 << 20
	}
	f := strings.Fields(string(b))
	if len(f) != 3 {
		return 4 << 20
	}
	n, err := strconv.ParseInt(f[2], 10, 64)
	require.NoError(t, err, "tcp_wmem %q", b)
	return n
}
