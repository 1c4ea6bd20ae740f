package web

import (
	"bufio"
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/telegauge/telegauge/dashboard"
)

// handleExport serves GET /api/v1/export?series=ID&from=T&to=T&step=S&format=csv|json:
// rollups streamed as CSV (default) or a JSON array of rows. Parameters are
// checked, and the first page read, before the response starts, so mistakes
// are a 4xx with a JSON error; a failure after that ends the stream with an
// error line (CSV: a "# error:" comment; JSON: an {"error"} element).
func (s *Server) handleExport(c *fiber.Ctx) error {
	series, err := seriesParams(c)
	if err != nil {
		return err
	}
	if len(series) == 0 {
		return dashboard.Errorf(dashboard.CodeInvalid, "no series given: add series=dev1/temperature")
	}
	now := s.cfg.Hub.Clock().Now()
	fromMs, err := dashboard.ParseTime(c.Query("from", "-24h"), now)
	if err != nil {
		return err
	}
	toMs, err := dashboard.ParseTime(c.Query("to", "now"), now)
	if err != nil {
		return err
	}
	if c.Query("to", "now") == "now" {
		toMs++
	}
	stepMs, raw, err := dashboard.ParseStep(c.Query("step", "1m"))
	if err != nil {
		return err
	}
	if raw || stepMs == 0 {
		return dashboard.Errorf(dashboard.CodeInvalid, "export needs a step such as 1s, 1m or 1h")
	}
	format := c.Query("format", "csv")
	if format != "csv" && format != "json" {
		return dashboard.Errorf(dashboard.CodeInvalid, "format must be csv or json")
	}
	if toMs <= fromMs {
		return dashboard.Errorf(dashboard.CodeInvalid, "empty range: to must be after from")
	}
	// Clamp to the times the server can hold (as Query does), so that the
	// page arithmetic below cannot overflow, and bound the work: an export
	// pages through its whole range, even where there is no data.
	fromMs, toMs = max(fromMs, -dashboard.MaxQueryMs), min(toMs, dashboard.MaxQueryMs)
	if toMs <= fromMs {
		return dashboard.Errorf(dashboard.CodeInvalid, "range outside the times the server holds")
	}
	if stepMs > dashboard.MaxQueryMs {
		return dashboard.Errorf(dashboard.CodeInvalid, "step too long")
	}
	buckets := (toMs - fromMs + stepMs - 1) / stepMs
	if buckets > maxExportBuckets/int64(len(series)) {
		return dashboard.Errorf(dashboard.CodeInvalid,
			"export too large: at most %d buckets in all (series × range ÷ step); use a coarser step or a shorter range", maxExportBuckets)
	}
	pageBuckets := min(int64(s.cfg.ExportPageBuckets), buckets)
	pageMs := stepMs * pageBuckets // at most the range and a step: no overflow
	page := func(ctx context.Context, id string, lo int64) (dashboard.SeriesData, error) {
		d, err := s.cfg.Querier.Query(ctx, dashboard.QueryRequest{
			Series: []string{id}, FromMs: lo, ToMs: min(lo+pageMs, toMs),
			StepMs: stepMs, MaxPoints: int(pageBuckets),
		})
		if err != nil {
			return dashboard.SeriesData{}, err
		}
		return d[0], nil
	}
	// Every series must exist before anything is sent.
	first := make([]dashboard.SeriesData, len(series))
	for i, id := range series {
		if first[i], err = page(c.UserContext(), id, fromMs); err != nil {
			return err
		}
	}

	name := "telegauge-export." + format
	c.Set(fiber.HeaderContentDisposition, `attachment; filename="`+name+`"`)
	c.Set(fiber.HeaderCacheControl, "no-store")
	if format == "csv" {
		c.Set(fiber.HeaderContentType, "text/csv; charset=utf-8")
	} else {
		c.Set(fiber.HeaderContentType, fiber.MIMEApplicationJSON)
	}
	ctx := context.WithoutCancel(c.UserContext())
	log := s.log
	// fasthttp has no write timeout here (live streams and long polls set
	// their own), so a client that stops reading would hold the export,
	// and the connection, for ever. Each write that makes progress moves the
	// connection's write deadline; one that makes none for WriteTimeout
	// fails, fasthttp closes the connection, and the writer below sees its
	// next write fail. The deadline would outlive this response, so the
	// connection closes after it.
	conn := c.Context().Conn()
	dl := &writeDeadline{timeout: s.cfg.WriteTimeout}
	if _, err := dl.extend(conn.SetWriteDeadline); err != nil {
		return fmt.Errorf("set the export's write deadline: %w", err)
	}
	c.Context().SetConnectionClose()
	exports := s.metrics.exports
	exports.Inc()
	c.Context().SetBodyStreamWriter(func(bw *bufio.Writer) {
		defer exports.Dec()
		w := deadlineWriter{bw: bw, set: conn.SetWriteDeadline, dl: dl}
		var b []byte
		rows := 0
		if format == "csv" {
			b = append(b, "series,time,time_ms,min,max,avg,count,last\n"...)
		} else {
			b = append(b, "[\n"...)
		}
		fail := func(err error) {
			log.Error("export failed mid-stream", "err", err)
			if format == "csv" {
				b = append(b, "# error: export stopped early\n"...)
			} else {
				if rows > 0 {
					b = append(b, ",\n"...)
				}
				b = append(b, `{"error":"export stopped early"}`...)
				b = append(b, "\n]\n"...)
			}
			_, _ = w.Write(b)
			_ = w.Flush()
		}
		for i, id := range series {
			d := first[i]
			for lo := fromMs; lo < toMs; lo += pageMs {
				if lo != fromMs {
					var err error
					if d, err = page(ctx, id, lo); err != nil {
						fail(err)
						return
					}
				}
				for j := range d.T {
					if format == "csv" {
						b = appendCSVRow(b, id, d, j)
					} else {
						if rows > 0 {
							b = append(b, ",\n"...)
						}
						b = appendJSONRow(b, id, d, j)
					}
					rows++
					if len(b) > 32<<10 {
						if _, err := w.Write(b); err != nil {
							return // the client went away
						}
						b = b[:0]
					}
				}
			}
			if err := w.Flush(); err != nil {
				return
			}
		}
		if format == "json" {
			b = append(b, "\n]\n"...)
		}
		_, _ = w.Write(b)
		_ = w.Flush()
	})
	return nil
}

// maxExportBuckets bounds one export: series × buckets of the range. At
// 1 s that is about 115 days of one series, some 800 MB of CSV, read in
// pages of ExportPageBuckets.
const maxExportBuckets = 10_000_000

func appendCSVRow(b []byte, id string, d dashboard.SeriesData, j int) []byte {
	b = append(b, id...) // series ids have no commas or quotes
	b = append(b, ',')
	b = time.UnixMilli(d.T[j]).UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, ',')
	b = strconv.AppendInt(b, d.T[j], 10)
	for _, v := range []float64{d.Min[j], d.Max[j], d.Avg[j]} {
		b = append(b, ',')
		b = strconv.AppendFloat(b, v, 'g', -1, 64)
	}
	b = append(b, ',')
	b = strconv.AppendInt(b, d.Count[j], 10)
	b = append(b, ',')
	b = strconv.AppendFloat(b, d.Last[j], 'g', -1, 64)
	return append(b, '\n')
}

func appendJSONRow(b []byte, id string, d dashboard.SeriesData, j int) []byte {
	b = append(b, `{"series":"`...)
	b = append(b, id...)
	b = append(b, `","t":`...)
	b = strconv.AppendInt(b, d.T[j], 10)
	b = append(b, `,"min":`...)
	b = strconv.AppendFloat(b, d.Min[j], 'g', -1, 64)
	b = append(b, `,"max":`...)
	b = strconv.AppendFloat(b, d.Max[j], 'g', -1, 64)
	b = append(b, `,"avg":`...)
	b = strconv.AppendFloat(b, d.Avg[j], 'g', -1, 64)
	b = append(b, `,"count":`...)
	b = strconv.AppendInt(b, d.Count[j], 10)
	b = append(b, `,"last":`...)
	b = strconv.AppendFloat(b, d.Last[j], 'g', -1, 64)
	return append(b, '}')
}

// deadlineWriter moves the connection's write deadline before each write
// into fasthttp's stream, which blocks once the connection stops taking
// bytes (fasthttp's pipe holds a few chunks at most).
type deadlineWriter struct {
	bw  *bufio.Writer
	set func(time.Time) error
	dl  *writeDeadline
}

func (w deadlineWriter) Write(b []byte) (int, error) {
	if _, err := w.dl.extend(w.set); err != nil {
		return 0, err
	}
	return w.bw.Write(b)
}

func (w deadlineWriter) Flush() error {
	if _, err := w.dl.extend(w.set); err != nil {
		return err
	}
	return w.bw.Flush()
}
