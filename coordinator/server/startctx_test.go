package server

import (
	"context"
	"errors"
	"net"
	"os"
	"testing"
)

// TestStartWithEndedContext: a start whose context has ended (Ctrl-C
// while the evaluation set loads) opens nothing: no port is bound, and
// no state directory is made and bootstrapped, which the next start
// would take for an earlier run's.
func TestStartWithEndedContext(t *testing.T) {
	var logs logBuffer
	cfg := testConfig(t, testRun(1, 1), &logs)
	cfg.ListenAddr, cfg.RaftAddr, cfg.UIAddr = freeAddr(t), freeAddr(t), freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	s, err := Start(ctx, cfg)
	if err == nil {
		s.Close()
		t.Fatal("Start with an ended context succeeded")
	}
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Start: %v, want context.Canceled", err)
	}
	if _, err := os.Stat(cfg.StateDir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the state directory was made: %v", err)
	}
	for _, a := range []string{cfg.ListenAddr, cfg.RaftAddr, cfg.UIAddr} {
		l, err := net.Listen("tcp", a)
		if err != nil {
			t.Fatalf("%s is bound: %v", a, err)
		}
		l.Close()
	}
}
