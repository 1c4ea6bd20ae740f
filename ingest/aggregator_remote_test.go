package ingest

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/telegauge/telegauge/ingest/rollup"
	"github.com/telegauge/telegauge/ingest/store"
)

// TestApplyRemote checks that remote readings reach rollups only when
// persisted, recent readings either way, are not queued for the live
// drain, and skip the per-device series limit without counting rejections.
func TestApplyRemote(t *testing.T) {
	for _, tc := range []struct {
		name    string
		persist bool
	}{{"own history", true}, {"shared history", false}} {
		t.Run(tc.name, func(t *testing.T) {
			st, err := store.NewMemory(store.MemoryConfig{}, nil)
			require.NoError(t, err)
			a, err := New(Config{Store: st, MaxSeriesPerDevice: 1}, nil)
			require.NoError(t, err)
			nowMs := time.Now().UnixMilli()
			rs := []Reading{
				{Series: "d/a", TimeMs: nowMs, Value: 1},
				{Series: "d/b", TimeMs: nowMs + 1, Value: 2}, // over this node's per-device limit: the origin's rules
				{Series: "bad name/x", TimeMs: nowMs, Value: 3},
			}
			got := a.ApplyRemote(rs, nowMs, tc.persist)
			require.Equal(t, RemoteStats{Applied: 2, Dropped: 1}, got)
			require.Equal(t, []string{"d/a", "d/b"}, a.SeriesIDs())
			live, gap := a.DrainReadings(nil)
			require.Empty(t, live, "remote readings reach the hub through its Publish, not the drain")
			require.Nil(t, gap)
			require.Len(t, a.Recent("d/b", 0, nowMs+10), 1)
			devs := a.Devices()
			require.Len(t, devs, 1)
			require.Zero(t, devs[0].Rejected)

			require.NoError(t, a.Flush(context.Background()))
			sel, err := st.Select(context.Background(), []string{"d/a"}, rollup.Tier1s, 0, nowMs+10_000)
			require.NoError(t, err)
			if tc.persist {
				require.Len(t, sel.Buckets[0], 1)
				require.Equal(t, int64(1), sel.Buckets[0][0].Count)
			} else {
				require.Empty(t, sel.Buckets[0])
			}
		})
	}
}
