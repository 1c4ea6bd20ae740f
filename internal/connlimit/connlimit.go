// Package connlimit counts open connections per client address, for the
// listeners' per-address limits (MQTT and HTTP).
package connlimit

import (
	"net"
	"net/netip"
	"sync"
)

// Limiter counts connections per address. IPv6 addresses count by their
// /64, the block one subscriber or host typically gets, so that an attacker
// cannot step around the limit within it. Exempt peers (such as loopback:
// the simulators, a gateway or a reverse proxy on the same host, which
// would otherwise cap everything behind it) are not counted. Safe for
// concurrent use.
type Limiter struct {
	max    int // <0: no limit
	exempt func(netip.Addr) bool

	mu    sync.Mutex // guards perIP
	perIP map[netip.Addr]int
}

// New returns a limiter of max connections per address (negative: no
// limit). exempt, when set, says which addresses are not counted.
func New(max int, exempt func(netip.Addr) bool) *Limiter {
	return &Limiter{max: max, exempt: exempt, perIP: make(map[netip.Addr]int)}
}

// Loopback is an exempt function for loopback peers.
func Loopback(a netip.Addr) bool { return a.IsLoopback() }

// Max returns the limit (negative: none).
func (l *Limiter) Max() int { return l.max }

// Acquire counts a connection from addr; it reports false, counting
// nothing, when that address is at its limit. The key it returns is for
// Release (the zero Addr for a connection not counted) and names the
// address in logs.
func (l *Limiter) Acquire(addr net.Addr) (netip.Addr, bool) {
	key, counted := l.key(addr)
	if !counted {
		return netip.Addr{}, true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.perIP[key] >= l.max {
		return key, false
	}
	l.perIP[key]++
	return key, true
}

// Release uncounts a connection Acquire counted.
func (l *Limiter) Release(key netip.Addr) {
	if !key.IsValid() {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.perIP[key] <= 1 {
		delete(l.perIP, key)
		return
	}
	l.perIP[key]--
}

// Count returns the connections counted against a key.
func (l *Limiter) Count(key netip.Addr) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.perIP[key]
}

// Len returns how many keys have connections counted.
func (l *Limiter) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.perIP)
}

// key returns the address a connection counts against, and whether it
// counts at all.
func (l *Limiter) key(addr net.Addr) (netip.Addr, bool) {
	if l.max < 0 || addr == nil {
		return netip.Addr{}, false
	}
	ap, err := netip.ParseAddrPort(addr.String())
	if err != nil {
		return netip.Addr{}, false // not an IP connection (a pipe, a test)
	}
	ip := ap.Addr().Unmap()
	if l.exempt != nil && l.exempt(ip) {
		return netip.Addr{}, false
	}
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		ip = p.Addr()
	}
	return ip, true
}
