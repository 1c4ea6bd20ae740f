package simulators

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"
)

// pollSlack is how long past its wait a long poll may take to answer
// before the viewer gives up on it.
const pollSlack = 15 * time.Second

// runPoll polls until a request fails or ctx ends. A session starts without
// a cursor (the server answers at once with the current one) unless the
// viewer has one to resume from. Long polls wait PollWait on the server;
// short polls (wait=0) pause PollInterval between requests.
func (v *viewer) runPoll(ctx context.Context, long bool) error {
	wait := "0"
	if long {
		wait = v.cfg.PollWait.String()
	}
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	first := true
	defer func() {
		if !first {
			v.disconnected()
		}
	}()
	for {
		v.maybeStall(ctx)
		// A disconnect between two polls resets only an idle
		// connection, which the transport would quietly replace: end
		// the session, as a client that lost its network starts over.
		if v.link.cutSince(v.sessionMark) {
			return errViewerCut
		}
		a, err := v.pollOnce(ctx, wait, long)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var se *statusError
			if errors.As(err, &se) && se.code == http.StatusBadRequest && len(v.cursor) > 0 {
				// A cursor the server calls malformed will not get
				// better: start over from the current position.
				v.cursor = v.cursor[:0]
			}
			return err
		}
		if first {
			first = false
			v.connected()
		}
		v.setCursor(a.Cursor)
		v.onPoints(a.Points)
		if a.HasGap {
			v.onGap(a.Gap)
		}
		if a.Reset {
			v.onReset()
		}
		if long {
			continue
		}
		timer.Reset(v.cfg.PollInterval)
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		}
	}
}

// pollOnce makes one poll request from the current cursor.
func (v *viewer) pollOnce(ctx context.Context, wait string, long bool) (*pollAnswer, error) {
	limit := pollSlack
	if long {
		limit += v.cfg.PollWait
	}
	rctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	u := v.endpoint(v.cfg.URL, "poll", "cursor", string(v.cursor), "wait", wait)
	if len(v.cursor) == 0 {
		u = v.endpoint(v.cfg.URL, "poll")
	}
	req, err := v.newRequest(rctx, u)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := v.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("poll: %w", err)
	}
	defer resp.Body.Close()
	v.pollBuf.Reset()
	n, err := v.pollBuf.ReadFrom(io.LimitReader(resp.Body, int64(v.cfg.MaxMessageBytes)+1))
	if err != nil {
		return nil, fmt.Errorf("poll: read answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("poll: %w", &statusError{code: resp.StatusCode, msg: errorMessage(v.pollBuf.Bytes())})
	}
	if n > int64(v.cfg.MaxMessageBytes) {
		return nil, fmt.Errorf("poll: %w", errMessageTooLarge)
	}
	if err := v.dec.poll(v.pollBuf.Bytes(), &v.poll); err != nil {
		return nil, err
	}
	return &v.poll, nil
}
