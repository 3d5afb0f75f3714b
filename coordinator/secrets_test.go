package coordinator

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fedzip/fedzip/transport"
	"github.com/fedzip/fedzip/transport/fedzippb"
)

// openSolo starts a one-node cluster on raft's in-memory transport with
// cfg (ID, stores and transport filled in) and waits until it leads and
// has initialised the run.
func openSolo(t *testing.T, cfg Config) *Node {
	t.Helper()
	addr, tr := raft.NewInmemTransport("solo")
	logs, snaps := raft.NewInmemStore(), raft.NewInmemSnapshotStore()
	rc := raft.DefaultConfig()
	rc.LocalID = "n0"
	if err := raft.BootstrapCluster(rc, logs, logs, snaps, tr, raft.Configuration{Servers: []raft.Server{{ID: "n0", Address: addr}}}); err != nil {
		t.Fatal(err)
	}
	cfg.ID, cfg.Transport, cfg.Logs, cfg.Stable, cfg.Snapshots = "n0", tr, logs, logs, snaps
	if cfg.Run == nil {
		cfg.Run = testRun(0)
	}
	if cfg.Raft == nil {
		cfg.Raft = fastRaft
	}
	if cfg.Tick == 0 {
		cfg.Tick = 10 * time.Millisecond
	}
	if cfg.ClusterID == "" {
		cfg.ClusterID = "test"
	}
	n, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	waitFor(t, "init", func() bool { return n.IsLeader() && n.FSM().Progress().Initialised })
	return n
}

// serveGRPC serves node's Coordinator and Cluster services on a real
// 127.0.0.1 socket, as `fedzip coordinator` does, and returns an
// unauthenticated connection's two clients.
func serveGRPC(t *testing.T, node *Node) (fedzippb.CoordinatorClient, fedzippb.ClusterClient) {
	t.Helper()
	addr := serveAt(t, node)
	conn, err := transport.Dial(context.Background(), []string{addr}, transport.ClientConfig{Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return fedzippb.NewCoordinatorClient(conn), fedzippb.NewClusterClient(conn)
}

// serveAt serves node's services on 127.0.0.1 and returns the address.
// Task polls last 200 ms.
func serveAt(t *testing.T, node *Node) string {
	t.Helper()
	svc := NewService(node, transport.LimitsFor(1000, 0))
	svc.LongPoll = 200 * time.Millisecond
	srv := transport.NewServer(transport.ServerConfig{Insecure: true, Authenticator: svc, Limits: svc.Limits, PublicMethods: ClusterMethods})
	fedzippb.RegisterCoordinatorServer(srv, svc)
	fedzippb.RegisterClusterServer(srv, NewClusterService(svc))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(lis)
	t.Cleanup(func() { transport.Shutdown(srv, time.Second) })
	return lis.Addr().String()
}

func voters(t *testing.T, n *Node) int {
	t.Helper()
	f := n.Raft().GetConfiguration()
	if err := f.Error(); err != nil {
		t.Fatal(err)
	}
	return len(f.Configuration().Servers)
}

// TestEmptyClusterSecretRefused is finding 2 of issue 12: `cluster add`
// and `cluster remove` with no secret were accepted, because "" equalled
// the empty default, and one dead voter bricked the cluster. Over real
// gRPC, an empty presented secret is refused by a node with a secret, and
// a node without one refuses every secret; the voters stay as they were.
func TestEmptyClusterSecretRefused(t *testing.T) {
	for _, tc := range []struct {
		name       string
		configured string
		presented  []string
	}{
		{"node with a secret", "cs", []string{"", "wrong"}},
		{"node without a secret", "", []string{"", "anything"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			node := openSolo(t, Config{ClusterSecret: tc.configured, JoinSecret: "s3cret"})
			_, cluster := serveGRPC(t, node)
			ctx := context.Background()
			for _, secret := range tc.presented {
				_, err := cluster.Join(ctx, &fedzippb.JoinRequest{ClusterId: "test", ClusterSecret: secret, NodeId: "dead", RaftAddress: "127.0.0.1:1"})
				if status.Code(err) != codes.Unauthenticated {
					t.Errorf("add with secret %q: %v, want Unauthenticated", secret, err)
				}
				_, err = cluster.Remove(ctx, &fedzippb.RemoveRequest{ClusterId: "test", ClusterSecret: secret, NodeId: "n0"})
				if status.Code(err) != codes.Unauthenticated {
					t.Errorf("remove with secret %q: %v, want Unauthenticated", secret, err)
				}
				if err := node.Join("test", secret, "dead", "127.0.0.1:1", ""); !errors.Is(err, ErrBadSecret) {
					t.Errorf("Join with secret %q: %v", secret, err)
				}
			}
			if v := voters(t, node); v != 1 || !node.IsLeader() {
				t.Fatalf("%d voters, leader %v: a refused request changed the cluster", v, node.IsLeader())
			}
		})
	}
}

// TestRegistrationNeedsSecret: a node without a join secret refused
// nothing (finding 2). Now it refuses every registration, empty secret
// included, unless OpenRegistration opens it; a node with a secret
// refuses the empty one.
func TestRegistrationNeedsSecret(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name     string
		cfg      Config
		secret   string
		accepted bool
	}{
		{"no secret configured, none presented", Config{}, "", false},
		{"no secret configured, one presented", Config{}, "guess", false},
		{"secret configured, none presented", Config{JoinSecret: "s3cret"}, "", false},
		{"secret configured, wrong one", Config{JoinSecret: "s3cret"}, "s3cret ", false},
		{"secret configured, right one", Config{JoinSecret: "s3cret"}, "s3cret", true},
		{"open registration", Config{OpenRegistration: true}, "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			node := openSolo(t, tc.cfg)
			api, _ := serveGRPC(t, node)
			res, err := api.Register(ctx, &fedzippb.RegisterRequest{JoinSecret: tc.secret, Name: "c"})
			switch {
			case tc.accepted && err != nil:
				t.Fatalf("refused: %v", err)
			case !tc.accepted && status.Code(err) != codes.Unauthenticated:
				t.Fatalf("got %v (id %d), want Unauthenticated", err, res.GetClientId())
			case !tc.accepted && node.FSM().Progress().Clients != 0:
				t.Fatalf("%d clients registered", node.FSM().Progress().Clients)
			}
		})
	}
}
