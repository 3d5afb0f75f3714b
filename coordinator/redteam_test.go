package coordinator

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fedzip/fedzip/transport/fedzippb"
)

// Red-team attacks on the merged fixes of issue 12, kept as regression
// tests. Each runs on real sockets on 127.0.0.1 in seconds.

// TestRedteamRaftHandshakeFlood: an attacker on another address
// (127.0.0.2) opens more silent connections to the Raft port than the
// node handshakes at once, and opens a new one whenever one is cut, some
// sending a partial TLS record first. A real node dialling from
// 127.0.0.1 must still get through. Before the per-address cap the
// attacker's connections filled all 64 handshake places and every new
// peer connection was closed at once, for as long as the attacker kept
// reconnecting: a node that restarted or lost its pooled connection could
// not rejoin.
func TestRedteamRaftHandshakeFlood(t *testing.T) {
	pki := devPKI(t)
	s, err := listenRaft(raftListen{bind: "127.0.0.1:0", tls: peerTLS(t, pki), timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}, Timeout: 5 * time.Second}
	var silent []net.Conn
	defer func() {
		for _, c := range silent {
			c.Close()
		}
	}()
	for i := 0; i < 2*maxRaftHandshakes; i++ {
		c, err := d.Dial("tcp", s.ln.Addr().String())
		if err != nil {
			t.Skipf("cannot dial from 127.0.0.2: %v", err)
		}
		if i%2 == 0 {
			c.Write([]byte{0x16, 0x03, 0x01, 0x02, 0x00}) // a TLS record header promising 512 bytes, then nothing
		}
		silent = append(silent, c)
	}
	// The flood has reached the node: it refused some of it.
	waitFor(t, "the node to refuse part of the flood", func() bool { return s.refused.Load() > 0 })

	peer, err := listenRaft(raftListen{bind: "127.0.0.1:0", tls: peerTLS(t, pki)})
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	accepted := make(chan error, 1)
	go func() {
		c, err := s.Accept()
		if err == nil {
			c.Close()
		}
		accepted <- err
	}()
	c, err := peer.Dial(raft.ServerAddress(s.ln.Addr().String()), 5*time.Second)
	if err != nil {
		t.Fatalf("a real node could not connect during the flood: %v", err)
	}
	c.Close()
	if err := <-accepted; err != nil {
		t.Fatal(err)
	}
}

// TestRedteamBlankSecrets: a secret of only white space (a YAML value of
// spaces, an environment variable set to " ") is no secret: anyone
// guesses it. Over real gRPC, a node configured with blank cluster and
// join secrets must refuse cluster add, remove and registration with the
// same blank secret. Before the fix each was accepted: the attacker
// registered, and added a dead voter that cost the node its leadership.
func TestRedteamBlankSecrets(t *testing.T) {
	for _, blank := range []string{" ", "   ", "\t\n"} {
		node := openSolo(t, Config{ClusterSecret: blank, JoinSecret: blank})
		api, cluster := serveGRPC(t, node)
		ctx := context.Background()
		if res, err := api.Register(ctx, &fedzippb.RegisterRequest{JoinSecret: blank, Name: "mallory"}); status.Code(err) != codes.Unauthenticated {
			t.Errorf("register with the blank secret %q: id %d, %v; want Unauthenticated", blank, res.GetClientId(), err)
		}
		if _, err := cluster.Remove(ctx, &fedzippb.RemoveRequest{ClusterId: "test", ClusterSecret: blank, NodeId: "nobody"}); status.Code(err) != codes.Unauthenticated {
			t.Errorf("remove with the blank secret %q: %v; want Unauthenticated", blank, err)
		}
		if _, err := cluster.Join(ctx, &fedzippb.JoinRequest{ClusterId: "test", ClusterSecret: blank, NodeId: "dead", RaftAddress: "127.0.0.1:1"}); status.Code(err) != codes.Unauthenticated {
			t.Errorf("add with the blank secret %q: %v; want Unauthenticated", blank, err)
		}
		if v := voters(t, node); v != 1 {
			t.Fatalf("%d voters after blank-secret requests", v)
		}
		node.Close()
	}
}
