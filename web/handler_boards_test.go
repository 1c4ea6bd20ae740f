package web

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/telegauge/telegauge/dashboard"
)

func boardRequest(t testing.TB, method, url, body string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func decodeBoard(t testing.TB, resp *http.Response) dashboard.Board {
	t.Helper()
	var b dashboard.Board
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&b))
	return b
}

// TestBoardsCRUD walks a dashboard through create, list, get, replace and
// delete, as the app does.
func TestBoardsCRUD(t *testing.T) {
	ts := newTestServer(t)
	base := ts.url + "/api/v1/dashboards"

	resp := boardRequest(t, http.MethodGet, base, "")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var list struct{ Dashboards []dashboard.BoardSummary }
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&list))
	require.Empty(t, list.Dashboards)

	resp = boardRequest(t, http.MethodPost, base, `{"name":"  Boiler room ","panels":[{"title":"Temps","series":["+/temperature","boiler-1/#","+/temperature"]},{"series":["#"],"range":"7d"}]}`)
	require.Equal(t, http.StatusCreated, resp.StatusCode)
	created := decodeBoard(t, resp)
	require.NotEmpty(t, created.ID)
	require.Equal(t, "/api/v1/dashboards/"+created.ID, resp.Header.Get("Location"))
	require.Equal(t, "Boiler room", created.Name, "name trimmed")
	require.Equal(t, []string{"+/temperature", "boiler-1/#"}, created.Panels[0].Series, "patterns canonical")
	require.Equal(t, "1h", created.Panels[0].Range, "default range")
	require.Equal(t, "7d", created.Panels[1].Range)
	require.Equal(t, ts.clock.Now().UnixMilli(), created.Updated)

	resp = boardRequest(t, http.MethodGet, base+"/"+created.ID, "")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, created, decodeBoard(t, resp))

	resp = boardRequest(t, http.MethodPut, base+"/"+created.ID, `{"name":"Boilers","panels":[]}`)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	replaced := decodeBoard(t, resp)
	require.Equal(t, created.ID, replaced.ID)
	require.Equal(t, "Boilers", replaced.Name)
	require.Empty(t, replaced.Panels)

	resp = boardRequest(t, http.MethodGet, base, "")
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&list))
	require.Equal(t, []dashboard.BoardSummary{{ID: created.ID, Name: "Boilers", Updated: replaced.Updated}}, list.Dashboards)

	resp = boardRequest(t, http.MethodDelete, base+"/"+created.ID, "")
	require.Equal(t, http.StatusNoContent, resp.StatusCode)
	requireJSONError(t, http.StatusNotFound, boardRequest(t, http.MethodGet, base+"/"+created.ID, ""))
	requireJSONError(t, http.StatusNotFound, boardRequest(t, http.MethodDelete, base+"/"+created.ID, ""))
}

func TestBoardsErrors(t *testing.T) {
	ts := newTestServer(t)
	base := ts.url + "/api/v1/dashboards"
	big := `{"name":"x","panels":[{"series":["#"],"title":"` + strings.Repeat("a", 70<<10) + `"}]}`
	for _, tc := range []struct {
		name, method, path, body string
		status                   int
		msg                      string
	}{
		{"not JSON", http.MethodPost, "", `name=x`, 400, "JSON dashboard"},
		{"no name", http.MethodPost, "", `{"panels":[]}`, 400, "name"},
		{"long name", http.MethodPost, "", `{"name":"` + strings.Repeat("n", 101) + `"}`, 400, "name"},
		{"bad pattern", http.MethodPost, "", `{"name":"x","panels":[{"series":["a/b/c"]}]}`, 400, "panel 1"},
		{"no series", http.MethodPost, "", `{"name":"x","panels":[{"series":[]}]}`, 400, "panel 1"},
		{"bad range", http.MethodPost, "", `{"name":"x","panels":[{"series":["#"],"range":"forever"}]}`, 400, "range"},
		{"range too long", http.MethodPost, "", `{"name":"x","panels":[{"series":["#"],"range":"1000d"}]}`, 400, "range"},
		{"too large", http.MethodPost, "", big, 413, "too large"},
		{"unknown id", http.MethodGet, "/zzzz", "", 404, "no dashboard"},
		{"garbage id", http.MethodGet, "/..%2f..", "", 404, "no dashboard"},
		{"replace unknown", http.MethodPut, "/zzzz", `{"name":"x"}`, 404, "no dashboard"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			msg := requireJSONError(t, tc.status, boardRequest(t, tc.method, base+tc.path, tc.body))
			require.Contains(t, msg, tc.msg)
		})
	}
	// Nothing was saved by the refused requests.
	resp := boardRequest(t, http.MethodGet, base, "")
	body := new(bytes.Buffer)
	_, _ = body.ReadFrom(resp.Body)
	require.JSONEq(t, `{"dashboards":[]}`, body.String())
}

// TestTransportsSwitch: a disabled transport answers 404 with a JSON error
// (a WebSocket upgrade is refused), the others keep working.
func TestTransportsSwitch(t *testing.T) {
	ts := newTestServer(t, withWeb(func(c *Config) { c.Transports = []string{"longpoll"} }))
	for _, path := range []string{"/api/v1/stream?series=%23", "/api/v1/ws?series=%23"} {
		req, err := http.NewRequest(http.MethodGet, ts.url+path, nil)
		require.NoError(t, err)
		req.Header.Set("Connection", "Upgrade")
		req.Header.Set("Upgrade", "websocket")
		req.Header.Set("Sec-WebSocket-Version", "13")
		req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		require.Contains(t, requireJSONError(t, http.StatusNotFound, resp), "disabled")
	}
	resp := boardRequest(t, http.MethodGet, ts.url+"/api/v1/poll?series=%23", "")
	require.Equal(t, http.StatusOK, resp.StatusCode)

	q, err := dashboard.NewQuerier(dashboard.QueryConfig{Source: ts.agg, History: ts.store}, nil)
	require.NoError(t, err)
	_, err = New(Config{Hub: ts.hub, Querier: q, Devices: ts.agg, Transports: []string{"carrier-pigeon"}, Addr: "127.0.0.1:0"}, nil)
	require.ErrorContains(t, err, "unknown transport")
}
