package dashboard

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/require"
)

// FuzzNormalizeBoard checks saved dashboards from clients: any JSON
// document (deeply nested, huge, not UTF-8, of the wrong shape) decoded as
// the web tier decodes it either fails to decode or normalises to a board
// within the limits, or is refused with a short CodeInvalid error. A
// normalised board is a fixed point, and survives a JSON round trip (what
// the store and the API do to it) unchanged.
func FuzzNormalizeBoard(f *testing.F) {
	for _, s := range []string{
		`{"name":"Greenhouse","panels":[{"title":"Temperature","series":["+/temperature"],"range":"6h"}]}`,
		`{"name":"  padded  ","panels":[{"title":" t ","series":["dev1/#","dev1/#","#"],"range":""}]}`,
		`{"name":"Empty"}`,
		`{"name":"","panels":[]}`,
		`{"name":"x","panels":[{"series":[]}]}`,
		`{"name":"x","panels":[{"series":["dev1/#/x"]}]}`,
		`{"name":"x","panels":[{"series":["a/b"],"range":"401d"}]}`,
		`{"name":"x","panels":[{"series":["a/b"],"range":"-1h"}]}`,
		`{"name":"x","panels":[{"series":["a/b"],"range":"NaN"}]}`,
		`{"name":"\xff\xfe","panels":[{"title":"\xc3","series":["a/b"]}]}`,
		`{"name":"\u0000\ud800","panels":null}`,
		`{"name":"` + strings.Repeat("é", 101) + `"}`,
		`{"name":"x","panels":[` + strings.Repeat(`{"series":["a/b"]},`, 50) + `{"series":["a/b"]}]}`,
		`{"name":"x","panels":[{"series":[` + strings.Repeat(`"a/b",`, 50) + `"a/c"]}]}`,
		`{"name":{"nested":` + strings.Repeat(`{"a":`, 200) + `1` + strings.Repeat(`}`, 200) + `}}`,
		strings.Repeat(`[`, 20000) + strings.Repeat(`]`, 20000),
		`{"name":"x","panels":[{"series":"a/b"}]}`,
		`{"name":1e999}`,
		`[]`,
		`null`,
		``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var in struct {
			Name   string  `json:"name"`
			Panels []Panel `json:"panels"`
		}
		if json.Unmarshal(body, &in) != nil {
			return // the web tier answers 400 before normalising
		}
		b, err := NormalizeBoard(Board{Name: in.Name, Panels: in.Panels})
		if err != nil {
			requireInvalid(t, err)
			return
		}
		require.True(t, utf8.ValidString(b.Name))
		require.NotEmpty(t, b.Name)
		require.LessOrEqual(t, utf8.RuneCountInString(b.Name), MaxBoardNameLen)
		require.NotNil(t, b.Panels)
		require.LessOrEqual(t, len(b.Panels), MaxBoardPanels)
		for _, p := range b.Panels {
			require.True(t, utf8.ValidString(p.Title))
			require.NotEmpty(t, p.Series)
			require.LessOrEqual(t, len(p.Series), MaxPanelSeries)
			ps, err := ParsePatterns(p.Series)
			require.NoError(t, err)
			require.Equal(t, ps.List(), p.Series, "canonical patterns")
			d, err := ParseDuration(p.Range)
			require.NoError(t, err)
			require.Positive(t, d)
		}

		again, err := NormalizeBoard(b)
		require.NoError(t, err)
		require.Equal(t, b, again, "normalising is idempotent")

		js, err := json.Marshal(b)
		require.NoError(t, err)
		var back Board
		require.NoError(t, json.Unmarshal(js, &back))
		require.Equal(t, b, back, "JSON round trip")
	})
}
