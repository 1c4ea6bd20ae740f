package web

import (
	"strconv"
	"strings"

	"github.com/gofiber/fiber/v2"

	"github.com/telegauge/telegauge/dashboard"
)

// maxSeriesParams caps the series parameters of one request, before they
// are validated one by one.
const maxSeriesParams = 1000

// seriesParams returns the request's series parameters, repeated or
// comma-separated.
func seriesParams(c *fiber.Ctx) ([]string, error) {
	var out []string
	for _, raw := range c.Context().QueryArgs().PeekMulti("series") {
		for part := range strings.SplitSeq(string(raw), ",") {
			if part = strings.TrimSpace(part); part != "" {
				out = append(out, part)
			}
			if len(out) > maxSeriesParams {
				return nil, dashboard.Errorf(dashboard.CodeInvalid, "too many series parameters (limit %d)", maxSeriesParams)
			}
		}
	}
	return out, nil
}

// patternParams parses the series parameters as a live subscription.
func patternParams(c *fiber.Ctx) (dashboard.Patterns, error) {
	list, err := seriesParams(c)
	if err != nil {
		return dashboard.Patterns{}, err
	}
	if len(list) == 0 {
		return dashboard.Patterns{}, dashboard.Errorf(dashboard.CodeInvalid, "no series given: add series=dev1/temperature, series=dev1/# or series=#")
	}
	return dashboard.ParsePatterns(list)
}

type deviceJSON struct {
	ID               string            `json:"id"`
	Online           bool              `json:"online"`
	LastSeen         int64             `json:"lastSeen"`
	Metrics          []string          `json:"metrics"`
	Rate             float64           `json:"rate"`
	Rejected         uint64            `json:"rejected"`
	RejectedByReason map[string]uint64 `json:"rejectedByReason"`
	ThrottledSeconds float64           `json:"throttledSeconds"`
}

func (s *Server) handleDevices(c *fiber.Ctx) error {
	devs := s.cfg.Devices.Devices()
	out := make([]deviceJSON, len(devs))
	for i, d := range devs {
		metrics := d.Metrics
		if metrics == nil {
			metrics = []string{}
		}
		out[i] = deviceJSON{
			ID: d.ID, Online: d.Online, LastSeen: d.LastSeenMs, Metrics: metrics,
			Rate: d.Rate, Rejected: d.Rejected, RejectedByReason: d.RejectedByReason,
			ThrottledSeconds: d.Throttled.Seconds(),
		}
	}
	c.Set(fiber.HeaderCacheControl, "no-store")
	return c.JSON(fiber.Map{"devices": out})
}

func (s *Server) handleQuery(c *fiber.Ctx) error {
	series, err := seriesParams(c)
	if err != nil {
		return err
	}
	now := s.cfg.Hub.Clock().Now()
	req := dashboard.QueryRequest{Series: series}
	from, to := c.Query("from", "-1h"), c.Query("to", "now")
	if req.FromMs, err = dashboard.ParseTime(from, now); err != nil {
		return err
	}
	if req.ToMs, err = dashboard.ParseTime(to, now); err != nil {
		return err
	}
	if to == "now" {
		req.ToMs++ // include readings stamped at this very millisecond
	}
	if req.StepMs, req.Raw, err = dashboard.ParseStep(c.Query("step")); err != nil {
		return err
	}
	if mp := c.Query("maxPoints"); mp != "" {
		n, perr := strconv.Atoi(mp)
		if perr != nil || n <= 0 {
			return dashboard.Errorf(dashboard.CodeInvalid, "maxPoints must be a positive integer")
		}
		req.MaxPoints = n
	}
	data, err := s.cfg.Querier.Query(c.UserContext(), req)
	if err != nil {
		return err
	}
	c.Set(fiber.HeaderCacheControl, "no-store")
	return c.JSON(fiber.Map{"series": data})
}
