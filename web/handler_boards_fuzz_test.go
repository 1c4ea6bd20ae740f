package web

import (
	"encoding/json"
	"net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/telegauge/telegauge/dashboard"
)

// FuzzBoardBody fuzzes saved dashboards through the API: POST and PUT
// bodies (deeply nested, huge, not UTF-8, of the wrong shape) and ids in
// the path. Every answer keeps the error contract; a board that is created
// reads back as created, is replaced by the same body unchanged, and is
// deleted.
func FuzzBoardBody(f *testing.F) {
	ts := newTestServer(f)
	for _, s := range []struct{ body, id string }{
		{`{"name":"Greenhouse","panels":[{"title":"Temperature","series":["+/temperature"],"range":"6h"}]}`, "abc"},
		{`{"name":"  padded  ","panels":[{"title":" t ","series":["dev1/#","dev1/#","#"],"range":""}]}`, ""},
		{`{"name":"x","panels":[{"series":["dev1/#/x"]}]}`, "zzzzzzzzzzzzzzzz"},
		{`{"name":"x","panels":[{"series":["a/b"],"range":"401d"}]}`, "zzzzzzzzzzzzzzzzz"},
		{`{"name":"\xff\xfe","panels":[{"title":"\xc3","series":["a/b"]}]}`, "%ff"},
		{`{"name":"` + strings.Repeat("é", 101) + `"}`, "..%2f..%2fetc"},
		{`{"name":{"nested":` + strings.Repeat(`{"a":`, 200) + `1` + strings.Repeat(`}`, 200) + `}}`, "A"},
		{strings.Repeat(`[`, 20000) + strings.Repeat(`]`, 20000), "1"},
		{`{"name":"big","panels":[{"series":["a/b"],"title":"` + strings.Repeat("x", 70<<10) + `"}]}`, "1"},
		{`{"name":"x","panels":"nope"}`, "1"},
		{`null`, "1"},
		{``, "1"},
	} {
		f.Add([]byte(s.body), s.id)
	}
	base := "/api/v1/dashboards"
	f.Fuzz(func(t *testing.T, body []byte, id string) {
		requireAPIAnswer(t, fuzzDo(ts.srv, "GET", base+"/"+url.PathEscape(id), nil), "get "+id)
		requireAPIAnswer(t, fuzzDo(ts.srv, "PUT", base+"/"+url.PathEscape(id), body), "put "+id)

		resp := fuzzDo(ts.srv, "POST", base, body)
		if requireAPIAnswer(t, resp, "post") != 201 {
			return
		}
		var created dashboard.Board
		require.NoError(t, json.Unmarshal(resp.Body(), &created))
		require.True(t, dashboard.ValidBoardID(created.ID))
		path := base + "/" + created.ID

		resp = fuzzDo(ts.srv, "GET", path, nil)
		require.Equal(t, 200, requireAPIAnswer(t, resp, "get created"))
		var got dashboard.Board
		require.NoError(t, json.Unmarshal(resp.Body(), &got))
		require.Equal(t, created, got)

		resp = fuzzDo(ts.srv, "PUT", path, body)
		require.Equal(t, 200, requireAPIAnswer(t, resp, "put the same"))
		require.NoError(t, json.Unmarshal(resp.Body(), &got))
		require.Equal(t, created, got, "the same body gives the same board")

		require.Equal(t, 204, requireAPIAnswer(t, fuzzDo(ts.srv, "DELETE", path, nil), "delete"))
		require.Equal(t, 404, requireAPIAnswer(t, fuzzDo(ts.srv, "GET", path, nil), "get deleted"))
	})
}
