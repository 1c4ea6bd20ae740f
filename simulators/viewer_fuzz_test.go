package simulators

import (
	"bufio"
	"io"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// FuzzParseSSE checks that the SSE parser never panics and that where a
// stream is split into reads (nats' split-in-half trick) does not change
// what it parses.
func FuzzParseSSE(f *testing.F) {
	for _, tc := range sseCases {
		f.Add(tc.in)
	}
	f.Add("data: {\"cursor\":\"a-1\",\"points\":[{\"s\":\"d/m\",\"t\":1,\"v\":2}]}\r\n\r\n")
	f.Fuzz(func(t *testing.T, in string) {
		parse := func(r io.Reader) ([]sseWant, string, error) {
			p := &sseParser{MaxLine: 1 << 10}
			got, err := parseAllSSE(bufio.NewReaderSize(r, 16), p)
			return got, string(p.LastID), err
		}
		whole, wholeID, wholeErr := parse(strings.NewReader(in))
		half := len(in) / 2
		split, splitID, splitErr := parse(io.MultiReader(strings.NewReader(in[:half]), strings.NewReader(in[half:])))
		require.Equal(t, whole, split)
		require.Equal(t, wholeID, splitID)
		require.Equal(t, wholeErr, splitErr)
		for _, ev := range whole {
			require.NotContains(t, ev.typ, "\n")
			require.NotContains(t, ev.id, "\n")
		}
	})
}

// FuzzDecodeLive checks that the live decoders never panic on any input.
func FuzzDecodeLive(f *testing.F) {
	for _, s := range []string{
		`{"type":"points","cursor":"a-2","points":[{"s":"dev1/temperature","t":1700000000123,"v":21.5}]}`,
		`{"type":"gap","from":10,"to":20}`,
		`{"cursor":"a-2","points":[],"gap":{"from":3,"to":9},"reset":false}`,
		`{"cursor":"c-1","points":null}`,
		`[1,2]`,
		`{"type":"points","points":[{"s":"a","t":1e400,"v":1}]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var d liveDecoder
		var m wsMessage
		var a pollAnswer
		_ = d.ws(data, &m)
		_ = d.poll(data, &a)
		_, _, _ = d.frame(data, nil)
		_, _ = d.gap(data)
		_ = d.cursorOf(data)
	})
}
