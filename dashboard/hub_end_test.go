package dashboard

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// TestHubEnd: End stops one viewer's live delivery with a final closing
// event giving the reason; other viewers are untouched, and ending a closed
// viewer does nothing.
func TestHubEnd(t *testing.T) {
	h, _ := newTestHub(t, HubConfig{})
	v, _ := subscribe(t, h, SubscribeOptions{Transport: "sse"}, "dev1/#")
	w, _ := subscribe(t, h, SubscribeOptions{Transport: "sse"}, "dev1/#")
	publishFrame(t, h, rd("dev1/a", t0.UnixMilli(), 1))
	h.End(v, "credentials revoked")
	select {
	case <-v.Done():
	default:
		t.Fatal("End did not end the viewer")
	}
	require.Equal(t, "credentials revoked", v.Reason())
	publishFrame(t, h, rd("dev1/a", t0.UnixMilli()+1, 2))
	evs := v.Next(nil)
	require.Equal(t, []EventKind{EventSubscribed, EventPoints, EventClosing}, kinds(evs), "nothing after End, the closing event last")
	require.Equal(t, "credentials revoked", evs[2].Reason)
	require.Len(t, points(w.Next(nil)), 2, "the other viewer still gets every point")
	v.Close()
	h.End(v, "again") // closed: a no-op
	require.Equal(t, "credentials revoked", v.Reason())
}
