package main

import (
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestProcessCPUSeconds reads this process's CPU time from /proc, the way
// the benchmark reads the NATS server's; it only grows.
func TestProcessCPUSeconds(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc")
	}
	before, err := processCPUSeconds(os.Getpid())
	require.NoError(t, err)
	for deadline := time.Now().Add(100 * time.Millisecond); time.Now().Before(deadline); {
	}
	after, err := processCPUSeconds(os.Getpid())
	require.NoError(t, err)
	require.GreaterOrEqual(t, after, before)
	require.Positive(t, after)
	_, err = processCPUSeconds(-1)
	require.Error(t, err)
}
