package membership

import (
	"crypto/sha256"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/hashicorp/memberlist.(*Memberlist).triggerFunc"))
}

var key = []byte("0123456789abcdef0123456789abcdef")

func start(t *testing.T, name string, k []byte, meta Meta, join []string, onLeave func(Member)) *Members {
	t.Helper()
	m, err := Start(Config{Name: name, BindAddr: "127.0.0.1:0", Key: k, Meta: meta, Join: join, OnLeave: onLeave, Fast: true})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestAliveAndDead gossips a coordinator and two clients, kills one client
// without leaving, and expects it to be reported dead and gone from the
// alive set.
func TestAliveAndDead(t *testing.T) {
	left := make(chan Member, 4)
	coord := start(t, "coord", key, Meta{Role: RoleCoordinator, NodeID: "n1", GRPC: "127.0.0.1:7070"}, nil, func(m Member) { left <- m })
	defer coord.Close()
	c1 := start(t, "c1", key, Meta{Role: RoleClient, ClientID: 1, Examples: 600, Codecs: []string{"topk1"}}, []string{coord.Addr()}, nil)
	defer c1.Close()
	c2 := start(t, "c2", key, Meta{Role: RoleClient}, []string{coord.Addr()}, nil)
	if err := c2.SetMeta(Meta{Role: RoleClient, ClientID: 2}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "both clients alive with metadata", func() bool { a := coord.AliveClients(); return a[1] && a[2] })
	for _, m := range coord.Alive() {
		if m.Name == "c1" && (m.Meta.Examples != 600 || m.Meta.Codecs[0] != "topk1") {
			t.Fatalf("metadata not gossiped: %+v", m.Meta)
		}
	}
	c2.Kill()
	select {
	case m := <-left:
		if m.Meta.ClientID != 2 {
			t.Fatalf("reported dead: %+v", m)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("dead client not reported")
	}
	if coord.AliveClients()[2] {
		t.Fatal("dead client still alive")
	}
}

// TestKeyRequired: a member without the key, or with another key, cannot
// join.
func TestKeyRequired(t *testing.T) {
	coord := start(t, "coord", key, Meta{Role: RoleCoordinator}, nil, nil)
	defer coord.Close()
	for name, k := range map[string][]byte{"no key": nil, "wrong key": []byte("fedcba9876543210fedcba9876543210")} {
		m, err := Start(Config{Name: "intruder", BindAddr: "127.0.0.1:0", Key: k, Meta: Meta{Role: RoleClient, ClientID: 9}, Join: []string{coord.Addr()}, Fast: true})
		if err == nil {
			m.Close()
			t.Errorf("%s: joined", name)
		}
	}
	if coord.AliveClients()[9] {
		t.Fatal("intruder is a member")
	}
	if _, err := Start(Config{Name: "x", BindAddr: "127.0.0.1:0", Key: []byte("short")}); err != ErrKey {
		t.Fatalf("short key: %v", err)
	}
}

// TestClientProof: a proof verifies for its token hash, member name and
// client ID only, and the metadata with a proof and every codec still
// fits memberlist's limit.
func TestClientProof(t *testing.T) {
	h := sha256.Sum256([]byte("token"))
	p := TokenProof("token", "client-a", 7)
	if !VerifyClientProof(h[:], "client-a", 7, p) {
		t.Fatal("the proof does not verify")
	}
	other := sha256.Sum256([]byte("other"))
	for name, ok := range map[string]bool{
		"another name":             VerifyClientProof(h[:], "client-b", 7, p),
		"another ID":               VerifyClientProof(h[:], "client-a", 8, p),
		"another token":            VerifyClientProof(other[:], "client-a", 7, p),
		"no proof":                 VerifyClientProof(h[:], "client-a", 7, nil),
		"no token hash":            VerifyClientProof(nil, "client-a", 7, ClientProof(nil, "client-a", 7)),
		"name and ID run together": VerifyClientProof(h[:], "client-a\x00", 7, p),
	} {
		if ok {
			t.Errorf("%s: verifies", name)
		}
	}
	meta := Meta{Role: RoleClient, ClientID: 1 << 63, Examples: 1 << 40, Capacity: 1, Proof: p,
		Codecs: []string{"none", "topk1", "topk10", "stc", "stcm", "dgc", "qsgd8", "qsgd4", "signsgd", "powersgd"}}
	if _, err := encodeMeta(meta); err != nil {
		t.Fatal(err)
	}
}

// TestSetMetaReachesJoinMembersWithoutGossip: a client's new metadata (its
// ID and proof, set once it registered) reaches the coordinator it joined
// even when no gossip datagram does. Here neither member probes, gossips
// or exchanges state on its own, as when a starved coordinator misses the
// few UDP retransmissions; the coordinator must still learn the ID, or it
// never selects the client and ignores its death.
func TestSetMetaReachesJoinMembersWithoutGossip(t *testing.T) {
	quiet := func(c *memberlist.Config) {
		c.ProbeInterval = time.Hour
		c.GossipNodes = 0
		c.PushPullInterval = 0
	}
	coord, err := Start(Config{Name: "coord", BindAddr: "127.0.0.1:0", Key: key, Meta: Meta{Role: RoleCoordinator}, Fast: true, tune: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer coord.Close()
	c, err := Start(Config{Name: "c", BindAddr: "127.0.0.1:0", Key: key, Meta: Meta{Role: RoleClient}, Join: []string{coord.Addr()}, Fast: true, tune: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	waitFor(t, "the client to join", func() bool { return len(coord.Alive()) == 2 })
	if err := c.SetMeta(Meta{Role: RoleClient, ClientID: 4, Proof: []byte("p")}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the coordinator to hold the client's ID", func() bool { return coord.AliveClients()[4] })
}
