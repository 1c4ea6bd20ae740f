package web

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/gofiber/fiber/v2"
)

// proxies are the reverse proxies trusted to say, in X-Forwarded-For, whom
// they forward for. Without them every request comes from its peer's
// address, and behind a proxy every client shares the proxy's login limit.
type proxies []netip.Prefix

// parseProxies reads addresses and CIDR prefixes (IPv4 or IPv6).
func parseProxies(list []string) (proxies, error) {
	var ps proxies
	for _, s := range list {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if p, err := netip.ParsePrefix(s); err == nil {
			ps = append(ps, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("trusted proxy %q: want an IP address or a CIDR prefix", s)
		}
		a = a.Unmap()
		ps = append(ps, netip.PrefixFrom(a, a.BitLen()))
	}
	return ps, nil
}

func (ps proxies) trusted(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// clientIP is the address a request came from. From a trusted proxy it is
// the rightmost address in X-Forwarded-For that is not itself a trusted
// proxy: each proxy appends whom it heard from, so the entries to the
// left of that one are whatever the client chose to send. A malformed
// entry ends the search at the proxy that passed it on.
func (ps proxies) clientIP(c *fiber.Ctx) string {
	peer, ok := netip.AddrFromSlice(c.Context().RemoteIP())
	if !ok {
		return c.Context().RemoteIP().String()
	}
	peer = peer.Unmap()
	if len(ps) == 0 || !ps.trusted(peer) {
		return peer.String()
	}
	var entries []string
	for _, h := range c.Request().Header.PeekAll(fiber.HeaderXForwardedFor) {
		entries = append(entries, strings.Split(string(h), ",")...)
	}
	from := peer
	for i := len(entries) - 1; i >= 0; i-- {
		a, ok := parseForwarded(strings.TrimSpace(entries[i]))
		if !ok {
			break
		}
		from = a
		if !ps.trusted(a) {
			break
		}
	}
	return from.String()
}

// parseForwarded reads one X-Forwarded-For entry: an address, perhaps
// with a port ("192.0.2.1:4711", "[2001:db8::1]:4711").
func parseForwarded(s string) (netip.Addr, bool) {
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap(), true
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap(), true
	}
	return netip.Addr{}, false
}
