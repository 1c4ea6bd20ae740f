package dashboard

import (
	"crypto/rand"
	"encoding/binary"
	"strconv"
	"strings"
)

// A cursor names a position in the hub's frame sequence: "{epoch}-{seq}",
// both base 36. The epoch is random per hub, so a cursor from another server
// run (or another cluster node) is recognised as foreign and answered with a
// reset rather than misread. Clients treat cursors as opaque.

// newEpoch returns a random epoch string.
func newEpoch() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return strconv.FormatUint(binary.LittleEndian.Uint64(b[:])>>16, 36)
}

func formatCursor(epoch string, seq uint64) string {
	return epoch + "-" + strconv.FormatUint(seq, 36)
}

// parseCursor splits a cursor. A malformed cursor is CodeInvalid.
func parseCursor(s string) (epoch string, seq uint64, err error) {
	epoch, num, ok := strings.Cut(s, "-")
	if !ok || len(epoch) == 0 || len(epoch) > 16 || !base36(epoch) || len(num) == 0 || len(num) > 13 || !base36(num) {
		return "", 0, Errorf(CodeInvalid, "malformed cursor %.40q", s)
	}
	seq, perr := strconv.ParseUint(num, 36, 64)
	if perr != nil {
		return "", 0, Errorf(CodeInvalid, "malformed cursor %.40q", s)
	}
	return epoch, seq, nil
}

func base36(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z') {
			return false
		}
	}
	return true
}

// ValidCursor reports whether s is a well-formed cursor (known or not).
func ValidCursor(s string) bool {
	_, _, err := parseCursor(s)
	return err == nil
}
