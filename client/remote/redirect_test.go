package remote

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/fedzip/fedzip/client"
	"github.com/fedzip/fedzip/transport"
	"github.com/fedzip/fedzip/transport/fedzippb"
)

// selfRedirect is a coordinator node that names itself as the leader on
// every call (a misconfigured or hostile peer, or a node during a
// leadership change).
type selfRedirect struct {
	fedzippb.UnimplementedCoordinatorServer
	addr  string
	calls atomic.Int64
}

func (s *selfRedirect) Register(ctx context.Context, _ *fedzippb.RegisterRequest) (*fedzippb.RegisterResponse, error) {
	s.calls.Add(1)
	return nil, transport.NotLeaderError(ctx, s.addr)
}

// TestClientBacksOffRepeatedRedirects checks that a client redirected
// again and again, here by a node to itself, waits between the attempts
// instead of redialling in a tight loop: it followed every redirect at
// once, thousands of calls a second.
func TestClientBacksOffRepeatedRedirects(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &selfRedirect{addr: lis.Addr().String()}
	gs := grpc.NewServer()
	fedzippb.RegisterCoordinatorServer(gs, srv)
	go func() { _ = gs.Serve(lis) }()
	defer gs.Stop()

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err = Run(ctx, Config{Addrs: []string{srv.addr}, Insecure: true, StateDir: t.TempDir(), MaxBackoff: 400 * time.Millisecond,
		NewTrainer: func(*fedzippb.Task) (client.Trainer, error) { return nil, errors.New("no task expected") }})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Run: %v, want the context's deadline", err)
	}
	// With backoff (100 ms doubling to 400 ms, halved at worst by the
	// jitter) two seconds hold about ten attempts; a tight loop makes
	// hundreds even on a starved machine.
	if n := srv.calls.Load(); n > 40 {
		t.Errorf("%d Register calls in 2 s of redirects to the same node, want a backoff between them", n)
	}
}
