package web

import (
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/telegauge/telegauge/dashboard"
	"github.com/telegauge/telegauge/ingest"
)

// handlePoll serves GET /api/v1/poll: a long poll (wait > 0) or a short
// poll (wait=0). Between polls the client holds only its cursor; each poll
// is a short-lived viewer that resumes from it, so a poll client gets the
// same every-point-once guarantee as a stream.
func (s *Server) handlePoll(c *fiber.Ctx) error {
	if s.closing.Load() {
		return dashboard.ErrClosed
	}
	ps, err := patternParams(c)
	if err != nil {
		return err
	}
	wait, err := s.waitParam(c.Query("wait"))
	if err != nil {
		return err
	}
	hub := s.cfg.Hub
	c.Set(fiber.HeaderCacheControl, "no-store")
	c.Set(fiber.HeaderContentType, fiber.MIMEApplicationJSON)
	cursor := c.Query("cursor")
	if cursor == "" {
		// No position yet: answer at once with the current one.
		return c.Send(appendPollJSON(nil, hub.Cursor(), nil, nil, false))
	}
	transport := "longpoll"
	if wait == 0 {
		transport = "poll"
	}
	v, _, err := hub.Subscribe(ps, dashboard.SubscribeOptions{Transport: transport, Cursor: cursor})
	if err != nil {
		return err
	}
	defer v.Close()
	who := principalOf(c)
	if !s.auth.track(who, v) { // auth.go: ended when its operator loses access
		return unauthorized(c, "credentials revoked")
	}
	defer s.auth.untrack(v)

	var a pollAnswer
	var evs []dashboard.Event
	var timer <-chan time.Time
	if wait > 0 {
		t := hub.Clock().NewTimer(wait)
		defer t.Stop()
		timer = t.Chan()
	}
wait:
	for {
		evs = a.collect(v.Next(evs[:0]))
		if a.ready() || wait == 0 {
			break
		}
		select {
		case <-v.Ready():
		case <-v.Done():
			break wait
		case <-timer:
			break wait
		}
	}
	// Detach, then drain: every frame up to the returned cursor has been
	// queued to v, so the next poll from it misses nothing.
	next := hub.Detach(v)
	if !s.auth.valid(who) {
		return unauthorized(c, "credentials revoked")
	}
	a.collect(v.Next(evs[:0]))
	s.metrics.frames.WithLabelValues(transport).Inc()
	return c.Send(appendPollJSON(make([]byte, 0, 64+len(a.points)*48), next, a.points, a.gap, a.reset))
}

// waitParam parses wait: a Go duration or a number of seconds, capped.
func (s *Server) waitParam(w string) (time.Duration, error) {
	if w == "" {
		return s.cfg.PollWait, nil
	}
	d, err := dashboard.ParseDuration(w)
	if err != nil || d < 0 {
		return 0, dashboard.Errorf(dashboard.CodeInvalid, "invalid wait %.40q: want a duration like 25s, or 0 for a short poll", w)
	}
	return min(d, s.cfg.MaxPollWait), nil
}

// pollAnswer accumulates what one poll returns.
type pollAnswer struct {
	points  []ingest.Reading
	gap     *dashboard.Gap
	reset   bool
	closing bool
}

func (a *pollAnswer) collect(evs []dashboard.Event) []dashboard.Event {
	for i := range evs {
		e := &evs[i]
		switch e.Kind {
		case dashboard.EventPoints:
			a.points = append(a.points, e.Msg.Points...)
		case dashboard.EventGap:
			if a.gap == nil {
				g := e.Gap
				a.gap = &g
			} else {
				a.gap.FromMs = min(a.gap.FromMs, e.Gap.FromMs)
				a.gap.ToMs = max(a.gap.ToMs, e.Gap.ToMs)
			}
		case dashboard.EventReset:
			a.reset = true
		case dashboard.EventClosing:
			a.closing = true
		}
	}
	return evs
}

// ready reports whether the poll should answer now.
func (a *pollAnswer) ready() bool {
	return len(a.points) > 0 || a.gap != nil || a.reset || a.closing
}

// appendPollJSON appends {"cursor","points","gap","reset"}.
func appendPollJSON(b []byte, cursor string, pts []ingest.Reading, gap *dashboard.Gap, reset bool) []byte {
	b = append(b, `{"cursor":"`...)
	b = append(b, cursor...)
	b = append(b, `","points":`...)
	b = dashboard.AppendPointsArray(b, pts)
	b = append(b, `,"gap":`...)
	if gap == nil {
		b = append(b, "null"...)
	} else {
		b = appendGapJSON(b, "", &dashboard.Event{Gap: *gap, Cursor: cursor})
	}
	b = append(b, `,"reset":`...)
	if reset {
		b = append(b, "true}"...)
	} else {
		b = append(b, "false}"...)
	}
	return b
}
