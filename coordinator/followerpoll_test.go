package coordinator

import (
	"context"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc/test/bufconn"

	"github.com/fedzip/fedzip/round"
	"github.com/fedzip/fedzip/transport"
	"github.com/fedzip/fedzip/transport/fedzippb"
)

// TestFollowerSendsPollsToLeader: only the leader records a polling
// client as alive, so a follower that knows the leader answers a task
// poll with a redirect to it instead of holding the poll. Without it, a
// client that reconnected to a follower after a failover (no gossip) was
// never selected again: with --min-clients every client, no round opened
// until --client-ttl expired it.
func TestFollowerSendsPollsToLeader(t *testing.T) {
	run := testRun(0)
	run.Round.MinClients = 5 // no round opens: the poll would wait
	nodes := inmemCluster(t, 3, run)
	leader := leaderOf(t, nodes)
	waitFor(t, "init", func() bool { return leader.FSM().View().Initialised })
	var id round.ClientID
	var token string
	retryLeader(t, "register", func() *Node { return leaderOf(t, nodes) }, func(n *Node) (err error) {
		id, token, err = n.Register("c", "s3cret", 10)
		return err
	})
	// poll polls n once; clients dial the leader's Raft address (a
	// cluster maps it to the leader's gRPC address) unless unknown.
	// mapTo, when not nil, maps the leader to the address clients are
	// sent to.
	poll := func(n *Node, unknown bool, mapTo ...string) error {
		svc := NewService(n, transport.LimitsFor(16, 0))
		svc.LongPoll = 100 * time.Millisecond
		if !unknown {
			svc.LeaderAddr = nil
		} else {
			svc.LeaderAddr = func(string, string) string { return "" }
		}
		if len(mapTo) > 0 {
			svc.LeaderAddr = func(string, string) string { return mapTo[0] }
		}
		srv := transport.NewServer(transport.ServerConfig{Insecure: true, Authenticator: svc, Limits: svc.Limits, PublicMethods: ClusterMethods})
		fedzippb.RegisterCoordinatorServer(srv, svc)
		lis := bufconn.Listen(1 << 20)
		go srv.Serve(lis)
		defer transport.Shutdown(srv, time.Second)
		conn, err := transport.Dial(context.Background(), []string{"bufnet:0"}, transport.ClientConfig{Insecure: true,
			Credentials: transport.NewTokenCredentials(uint64(id), token),
			Dialer:      func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_, err = fedzippb.NewCoordinatorClient(conn).GetTask(context.Background(), &fedzippb.GetTaskRequest{ClientId: uint64(id)})
		return err
	}
	var follower *Node
	for _, n := range nodes {
		if n != leaderOf(t, nodes) {
			follower = n
			break
		}
	}
	waitFor(t, "the follower to know the client and the leader", func() bool {
		a, _ := follower.Leader()
		return follower.FSM().Authenticate(id, token) == nil && a != ""
	})
	err := poll(follower, false)
	addr, ok := transport.LeaderFromError(err)
	if want, _ := follower.Leader(); !ok || addr != want {
		t.Fatalf("a poll at a follower: %v; want a redirect to the leader %s", err, want)
	}
	// A follower that cannot say where the leader is serves the poll:
	// no round opens, no task.
	if err := poll(follower, true); !transport.IsNoTask(err) {
		t.Fatalf("a poll at a follower that knows no leader address: %v; want no task", err)
	}
	// Nor does one that knows only an address without a host (a leader
	// listening on ":7000" without --advertise): the client would dial
	// its own machine.
	for _, a := range []string{":7000", "0.0.0.0:7000", "[::]:7000"} {
		if err := poll(follower, false, a); !transport.IsNoTask(err) {
			t.Fatalf("a poll at a follower whose leader advertises %s: %v; want no task", a, err)
		}
	}
	// The leader holds the poll (no round opens) and answers no task.
	l := leaderOf(t, nodes)
	if err := poll(l, false); !transport.IsNoTask(err) {
		if _, redirect := transport.LeaderFromError(err); redirect && l.IsLeader() {
			t.Fatalf("the leader redirected a poll: %v", err)
		}
	}
}
