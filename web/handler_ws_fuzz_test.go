package web

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/fasthttp/websocket"
	"github.com/stretchr/testify/require"

	"github.com/telegauge/telegauge/dashboard"
)

// FuzzWSMessage fuzzes what WebSocket clients send: two text messages in a
// row (so that subscribe then unsubscribe, or a bad message between good
// ones, is reached), handled as readWS handles them. A message that is not
// a JSON object, or a request that is refused, leaves the subscription as
// it was and is answered with an error event that encodes as one JSON
// object; a subscribe adds its patterns, an unsubscribe removes exactly
// its patterns, and a subscription never exceeds MaxPatterns.
func FuzzWSMessage(f *testing.F) {
	ts := newTestServer(f)
	for _, s := range []struct{ a, b string }{
		{`{"type":"subscribe","series":["dev1/temp"]}`, `{"type":"unsubscribe","series":["dev1/temp"]}`},
		{`{"type":"subscribe","series":["dev1/#","+/hum"],"cursor":"abc-1"}`, `{"type":"subscribe","series":["#"]}`},
		{`{"type":"subscribe","series":["dev1/#/x"]}`, `{"type":"subscribe","series":[]}`},
		{`{"type":"subscribe","series":["` + strings.Repeat(`a/b","`, 256) + `a/c"]}`, `{"type":"ping"}`},
		{`{"type":"subscribe","series":["a/b"],"cursor":"abc"}`, `{"type":"pong"}`},
		{`{"type":"unsubscribe","series":["nothing/here"]}`, `{"type":"unsubscribe"}`},
		{`{"type":"SUBSCRIBE","series":["a/b"]}`, `{"type":"` + strings.Repeat("x", 200) + `"}`},
		{`{"type":"subscribe","series":"a/b"}`, `{"type":1}`},
		{`[]`, `null`},
		{`{"type":"subscribe","series":["\xff/x"]}`, "\xff"},
		{strings.Repeat(`{"a":`, 20000), ``},
	} {
		f.Add([]byte(s.a), []byte(s.b))
	}
	f.Fuzz(func(t *testing.T, a, b []byte) {
		v, _, err := ts.hub.Subscribe(dashboard.Patterns{}, dashboard.SubscribeOptions{Transport: "ws"})
		require.NoError(t, err)
		defer v.Close()
		_ = v.Next(nil)
		for _, msg := range [][]byte{a, b} {
			before := v.Patterns()
			errMsg := ts.srv.wsMessage(v, websocket.TextMessage, msg)
			after := v.Patterns()
			require.LessOrEqual(t, after.Len(), dashboard.MaxPatterns)
			evs := v.Next(nil)
			if errMsg != "" {
				require.Equal(t, before.Key(), after.Key(), "a refused message changes nothing")
				require.LessOrEqual(t, len(errMsg), 400)
				require.Len(t, evs, 1)
				require.Equal(t, dashboard.EventError, evs[0].Kind)
				var out map[string]string
				require.NoError(t, json.Unmarshal(appendWSEvent(nil, &evs[0]), &out))
				require.Equal(t, map[string]string{"type": "error", "message": errMsg}, out)
				continue
			}
			var req wsRequest
			require.NoError(t, json.Unmarshal(msg, &req))
			switch req.Type {
			case "subscribe":
				add, err := dashboard.ParsePatterns(req.Series)
				require.NoError(t, err)
				want, err := before.Union(add)
				require.NoError(t, err)
				require.Equal(t, want.Key(), after.Key())
				require.NotEmpty(t, evs)
				require.Equal(t, dashboard.EventSubscribed, evs[0].Kind)
				require.Equal(t, after.List(), evs[0].Series)
			case "unsubscribe":
				rm, err := dashboard.ParsePatterns(req.Series)
				require.NoError(t, err)
				require.Equal(t, before.Without(rm).Key(), after.Key())
			default:
				require.Equal(t, before.Key(), after.Key())
				require.Empty(t, evs)
			}
		}
	})
}
