// Package testutil holds what the packages' tests share.
package testutil

import (
	"testing"
	"time"
)

// Poll calls check until it returns nil or timeout passes, and returns its
// last error. The waits between calls are a poll interval with a deadline,
// not a synchronisation sleep: tests wait on conditions, never on time.
func Poll(timeout time.Duration, check func() error) error {
	deadline := time.Now().Add(timeout)
	wait := time.Millisecond
	for {
		err := check()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(wait)
		wait = min(2*wait, 20*time.Millisecond)
	}
}

// Eventually polls check until it returns nil, or fails the test with its
// last error once timeout passes (nats checkFor).
func Eventually(t testing.TB, timeout time.Duration, check func() error) {
	t.Helper()
	if err := Poll(timeout, check); err != nil {
		t.Fatalf("not true after %s: %v", timeout, err)
	}
}
