package remote

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/fedzip/fedzip/client"
	"github.com/fedzip/fedzip/internal/fakecoord"
	"github.com/fedzip/fedzip/transport"
	"github.com/fedzip/fedzip/transport/fedzippb"
)

// TestUnknownAuthoritySaysCA runs a client over TLS against a coordinator
// whose certificate another CA signed: Run returns at once, and its error
// tells the user to pass the cluster's CA with --ca. With the cluster's CA
// the same client reaches the coordinator and asks for tasks.
func TestUnknownAuthoritySaysCA(t *testing.T) {
	cluster, other := t.TempDir(), t.TempDir()
	s, err := fakecoord.StartDev(cluster)
	if err != nil {
		t.Fatal(err)
	}
	if err := transport.GenerateDevCerts(other, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	config := func(ca string) Config {
		tlsCfg, err := transport.ClientTLSConfig(ca, "", "")
		if err != nil {
			t.Fatal(err)
		}
		return Config{Addrs: []string{s.Addr}, TLS: tlsCfg, Name: "c", StateDir: t.TempDir(), MaxBackoff: 30 * time.Millisecond,
			NewTrainer: func(*fedzippb.Task) (client.Trainer, error) { return divergingTrainer{}, nil }}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	_, err = Run(ctx, config(transport.DevCertFiles(other).CA))
	if !errors.Is(err, transport.ErrUnknownAuthority) || !strings.Contains(err.Error(), "--ca FILE") || ctx.Err() != nil {
		t.Fatalf("Run with another CA: %v", err)
	}
	t.Log(err)

	ctx2, cancel2 := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		_, err := Run(ctx2, config(transport.DevCertFiles(cluster).CA))
		done <- err
	}()
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(10 * time.Millisecond) {
		if polls, _, _ := s.Counts(); polls > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the client with the cluster's CA never asked for a task")
		}
	}
	cancel2()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run with the cluster's CA: %v", err)
	}
}
