package store

import (
	"bufio"
	"context"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/telegauge/telegauge/ingest/rollup"
)

// appendFlush appends the entries of one aggregator flush when every
// series had one reading in second sec: a new 1s bucket, and deltas of the
// open 1m and 1h buckets. Values look like sensor readings (two decimals),
// so they take a full 8 bytes.
func appendFlush(entries []Entry, names []string, sec int64) []Entry {
	for i, name := range names {
		tMs := t0.UnixMilli() + sec*1000 + int64(i%1000)
		v := math.Round((20+5*math.Sin(float64(sec+int64(i))/60))*100) / 100
		for _, tier := range rollup.Tiers {
			b := rollup.Bucket{StartMs: rollup.Floor(tMs, tier.StepMs())}
			b.Add(tMs, v)
			entries = append(entries, Entry{Series: name, Tier: tier, Bucket: b})
		}
	}
	return entries
}

func benchNames(n int) []string {
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("dev%05d/temperature", i)
	}
	return names
}

// BenchmarkSQLAppend appends one flush per iteration, as the aggregator
// does every FlushInterval: each series had one reading a second, so a
// flush holds, per series, flush-seconds new 1s buckets and one delta each
// of the open 1m and 1h buckets. It reports:
//   - rows/s: bucket rows upserted per second;
//   - readings/s: the readings those rows summarise, per second;
//   - write-B/reading: bytes the process passed to write(2) per reading
//     (WAL frames plus checkpoints: SQLite's write amplification; SQLite
//     and Linux only);
//   - disk-B/row: database size per stored row after a final checkpoint,
//     no VACUUM (PostgreSQL: pg_total_relation_size of rollups after a
//     plain VACUUM).
//
// history is how many seconds of buckets every series has before timing
// starts: with some, each series' newest buckets sit in B-tree pages of
// their own, as on a server that has been running a while. Use a fixed
// -benchtime (e.g. 60x) so that the table grows to a known size.
func BenchmarkSQLAppend(b *testing.B) {
	for _, db := range []struct {
		name string
		url  func(testing.TB) string
	}{{"sqlite", sqliteTestURL}, {"postgres", postgresTestURL}} {
		for _, c := range []struct {
			series  int
			history int64 // seconds
			flush   int64 // seconds
		}{
			{1000, 0, 1},
			{10_000, 0, 1},
			{10_000, 300, 1},
			{10_000, 300, 10},
		} {
			name := fmt.Sprintf("db=%s/series=%d/history=%ds/flush=%ds", db.name, c.series, c.history, c.flush)
			b.Run(name, func(b *testing.B) { benchAppend(b, db.name, db.url, c.series, c.history, c.flush) })
		}
	}
}

func benchAppend(b *testing.B, dbName string, url func(testing.TB) string, n int, history, flush int64) {
	s, _ := newTestSQL(b, SQLConfig{URL: url(b)})
	ctx := context.Background()
	names := benchNames(n)
	var entries []Entry
	// The first flushes intern every name and fill the history; they are
	// not what a running server does each second.
	seq := uint64(0)
	for sec := int64(0); sec <= history; {
		entries = entries[:0]
		for end := sec + 60; sec < end && sec <= history; sec++ {
			entries = appendFlush(entries, names, sec)
		}
		seq++
		require.NoError(b, s.Append(ctx, Batch{Writer: 0, Seq: seq, Entries: entries}))
	}
	sec := history + 1
	rows := 0
	w0 := procWriteBytes()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		seq++
		entries = entries[:0]
		for end := sec + flush; sec < end; sec++ {
			entries = appendFlush(entries, names, sec)
		}
		rows += benchDistinct(entries)
		if err := s.Append(ctx, Batch{Writer: 0, Seq: seq, Entries: entries}); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	readings := float64(int64(n*b.N) * flush)
	b.ReportMetric(float64(rows)/b.Elapsed().Seconds(), "rows/s")
	b.ReportMetric(readings/b.Elapsed().Seconds(), "readings/s")
	if w1 := procWriteBytes(); w0 >= 0 && w1 >= 0 && dbName == "sqlite" {
		b.ReportMetric(float64(w1-w0)/readings, "write-B/reading")
	}
	bytes, stored := s.benchDiskBytes(b)
	b.ReportMetric(float64(bytes)/float64(stored), "disk-B/row")
}

// benchDistinct counts the rows a batch upserts: its distinct buckets.
// The entries of one series are adjacent, as appendFlush makes them.
func benchDistinct(entries []Entry) int {
	type key struct {
		tier  rollup.Tier
		start int64
	}
	n := 0
	seen := map[key]bool{}
	for i := range entries {
		if i > 0 && entries[i].Series != entries[i-1].Series {
			n += len(seen)
			clear(seen)
		}
		seen[key{entries[i].Tier, entries[i].StartMs}] = true
	}
	return n + len(seen)
}

// BenchmarkSQLSelect reads 24 h at 1 m for 8 series from a database that
// holds 24 h of every tier for them, the query a day-long chart makes.
// Target: under 20 ms.
func BenchmarkSQLSelect(b *testing.B) {
	for _, db := range []struct {
		name string
		url  func(testing.TB) string
	}{{"sqlite", sqliteTestURL}, {"postgres", postgresTestURL}} {
		b.Run("db="+db.name, func(b *testing.B) {
			s, clock := newTestSQL(b, SQLConfig{URL: db.url(b)})
			ctx := context.Background()
			names := benchNames(8)
			const secs = 24 * 3600
			var entries []Entry
			var seq uint64
			// Prefill a day, 10 minutes a batch (14,400 rows).
			for sec := int64(0); sec < secs; {
				entries = entries[:0]
				for end := sec + 600; sec < end; sec++ {
					entries = appendFlush(entries, names, sec)
				}
				seq++
				require.NoError(b, s.Append(ctx, Batch{Writer: 0, Seq: seq, Entries: entries}))
			}
			clock.Advance(secs * time.Second)
			from := rollup.Floor(t0.UnixMilli(), 60_000)
			to := from + secs*1000
			sel, err := s.Select(ctx, names, rollup.Tier1m, from, to)
			require.NoError(b, err)
			for i := range names {
				require.Equal(b, 24*60, len(sel.Buckets[i]), "series %d", i)
				require.Equal(b, int64(60), sel.Buckets[i][1].Count)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if _, err := s.Select(ctx, names, rollup.Tier1m, from, to); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// benchDiskBytes returns the size of the rollups on disk and their row
// count.
func (s *SQL) benchDiskBytes(b *testing.B) (bytes, rows int64) {
	b.Helper()
	ctx := context.Background()
	require.NoError(b, s.r.QueryRowContext(ctx, `SELECT count(*) FROM rollups`).Scan(&rows))
	if s.d.name == "postgres" {
		_, err := s.w.ExecContext(ctx, `VACUUM rollups`) // frees dead tuples for reuse; does not shrink the file
		require.NoError(b, err)
		require.NoError(b, s.r.QueryRowContext(ctx, `SELECT pg_total_relation_size('rollups')`).Scan(&bytes))
		return bytes, rows
	}
	s.appendMu.Lock()
	require.NoError(b, s.d.checkpoint(ctx, s, "TRUNCATE"))
	s.appendMu.Unlock()
	var pages, size int64
	require.NoError(b, s.r.QueryRowContext(ctx, `PRAGMA page_count`).Scan(&pages))
	require.NoError(b, s.r.QueryRowContext(ctx, `PRAGMA page_size`).Scan(&size))
	return pages * size, rows
}

// procWriteBytes returns the bytes this process has passed to write(2)
// (Linux /proc/self/io wchar), or -1 where unavailable.
func procWriteBytes() int64 {
	f, err := os.Open("/proc/self/io")
	if err != nil {
		return -1
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "wchar: "); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return -1
			}
			return n
		}
	}
	return -1
}

// BenchmarkSQLPrune deletes a minute of expired per-second buckets of
// every series per iteration, what Run does once a minute on a server in
// steady state. It reports rows deleted per second, and the time per
// pruneChunkRows rows deleted: about how long one prune transaction holds
// the writer, and so the longest an Append waits behind a prune.
func BenchmarkSQLPrune(b *testing.B) {
	for _, db := range []struct {
		name string
		url  func(testing.TB) string
	}{{"sqlite", sqliteTestURL}, {"postgres", postgresTestURL}} {
		b.Run("db="+db.name+"/series=1000", func(b *testing.B) {
			const n = 1000
			s, clock := newTestSQL(b, SQLConfig{URL: db.url(b), Retention: Retention{time.Minute, time.Hour, time.Hour}})
			ctx := context.Background()
			names := benchNames(n)
			var (
				entries []Entry
				seq     uint64
				sec     int64
				deleted int64
			)
			fill := func() {
				// A minute of readings, past retention once the clock moves
				// on by two minutes.
				for end := sec + 60; sec < end; sec++ {
					entries = entries[:0]
					for i := range names {
						tMs := t0.UnixMilli() + sec*1000 + int64(i%1000)
						bk := rollup.Bucket{StartMs: rollup.Floor(tMs, 1000)}
						bk.Add(tMs, 1)
						entries = append(entries, Entry{Series: names[i], Tier: rollup.Tier1s, Bucket: bk})
					}
					seq++
					require.NoError(b, s.Append(ctx, Batch{Writer: 0, Seq: seq, Entries: entries}))
				}
			}
			b.ReportAllocs()
			for b.Loop() {
				b.StopTimer()
				fill()
				clock.Advance(time.Minute)
				before := benchCountRows(b, s)
				b.StartTimer()
				require.NoError(b, s.Prune(ctx))
				b.StopTimer()
				deleted += before - benchCountRows(b, s)
				b.StartTimer()
			}
			b.ReportMetric(float64(deleted)/b.Elapsed().Seconds(), "rows/s")
			b.ReportMetric(b.Elapsed().Seconds()*1000/(float64(deleted)/pruneChunkRows), "ms/chunk")
		})
	}
}

func benchCountRows(b *testing.B, s *SQL) int64 {
	var n int64
	require.NoError(b, s.r.QueryRow(`SELECT count(*) FROM rollups`).Scan(&n))
	return n
}
