package connlimit

import (
	"net"
	"net/netip"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestLimiterKeys(t *testing.T) {
	tcp := func(s string) net.Addr { return net.TCPAddrFromAddrPort(netip.MustParseAddrPort(s)) }
	docs := netip.MustParsePrefix("198.51.100.0/24")
	for _, tc := range []struct {
		name     string
		max      int
		exempt   func(netip.Addr) bool
		addr     net.Addr
		wantKey  string
		counted  bool
		otherKey net.Addr // counts against the same key
	}{
		{"IPv4", 1, Loopback, tcp("192.0.2.7:1000"), "192.0.2.7", true, tcp("192.0.2.7:2000")},
		{"IPv4-mapped IPv6 is IPv4", 1, Loopback, tcp("[::ffff:192.0.2.7]:1000"), "192.0.2.7", true, tcp("192.0.2.7:2000")},
		{"IPv6 by /64", 1, Loopback, tcp("[2001:db8:1:2:aaaa::1]:1000"), "2001:db8:1:2::", true, tcp("[2001:db8:1:2:bbbb::9]:1000")},
		{"loopback exempt", 1, Loopback, tcp("127.0.0.1:1000"), "invalid IP", false, nil},
		{"IPv6 loopback exempt", 1, Loopback, tcp("[::1]:1000"), "invalid IP", false, nil},
		{"loopback counted without exemptions", 1, nil, tcp("127.0.0.1:1000"), "127.0.0.1", true, tcp("127.0.0.1:1001")},
		{"any exemption", 1, docs.Contains, tcp("198.51.100.9:1000"), "invalid IP", false, nil},
		{"no limit", -1, Loopback, tcp("192.0.2.7:1000"), "invalid IP", false, nil},
		{"not an IP connection", 1, Loopback, &net.UnixAddr{Name: "x", Net: "unix"}, "invalid IP", false, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lim := New(tc.max, tc.exempt)
			key, ok := lim.Acquire(tc.addr)
			require.True(t, ok)
			require.Equal(t, tc.wantKey, key.String())
			if !tc.counted {
				require.Zero(t, lim.Len())
				_, ok := lim.Acquire(tc.addr)
				require.True(t, ok, "never refused")
				return
			}
			require.Equal(t, 1, lim.Count(key))
			_, ok = lim.Acquire(tc.otherKey)
			require.False(t, ok, "the second connection of the key is over the limit of 1")
			lim.Release(key)
			require.Zero(t, lim.Len(), "released entries are deleted")
			_, ok = lim.Acquire(tc.otherKey)
			require.True(t, ok)
		})
	}
}
