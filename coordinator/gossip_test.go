package coordinator

import (
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/fedzip/fedzip/gradient"
	"github.com/fedzip/fedzip/membership"
	"github.com/fedzip/fedzip/round"
)

var gossipKey = []byte("0123456789abcdef0123456789abcdef")

// startMember starts a gossip member with memberlist's LAN timeouts
// (several seconds of suspicion, in which a starved member refutes): with
// the fast local ones, a starved machine (-race, 2 busy cores) had the
// coordinator declare a live member dead.
func startMember(t *testing.T, name string, meta membership.Meta, join []string, onLeave func(membership.Member)) *membership.Members {
	t.Helper()
	m, err := membership.Start(membership.Config{Name: name, BindAddr: "127.0.0.1:0", Key: gossipKey, Meta: meta, Join: join, OnLeave: onLeave})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestGossipCannotEvictHonestClient is finding 6 of issue 12: any holder
// of the gossip key announced a member claiming another client's ID, then
// left, and the leader dropped the real client from the open round. Over
// real memberlist on 127.0.0.1: a member with no proof, and one replaying
// the honest client's proof under its own name, join and leave; a "dead"
// about the honest client's own member, which it refutes by staying
// alive, comes too. The honest client stays in the round and its update
// is accepted, while a client that really died is dropped.
//
// Every member runs memberlist's LAN timeouts: with the fast ones, a
// starved machine had the coordinator declare the honest member itself
// dead, a real leave that no proof check can refuse (the evil members
// leave gracefully, and the doomed one is found dead within seconds
// either way).
func TestGossipCannotEvictHonestClient(t *testing.T) {
	var nodeRef atomic.Pointer[Node]
	leaves := make(chan string, 16)
	coord := startMember(t, "coordinator-n0", membership.Meta{Role: membership.RoleCoordinator, NodeID: "n0"}, nil, func(m membership.Member) {
		// As `fedzip coordinator` wires it.
		if c, ok := MemberClaim(m); ok {
			if n := nodeRef.Load(); n != nil {
				n.MemberLeft(c)
			}
		}
		leaves <- m.Name
	})
	defer coord.Close()
	run := testRun(0)
	// One update suffices, so that dropping the dead client leaves a
	// round that can close (it is not aborted); the node sees no client
	// alive until both gossip, so that the round selects both.
	run.Round.PerRound, run.Round.MinClients, run.Round.Deadline = 2, 1, 0
	var ready atomic.Bool
	node := openSolo(t, Config{JoinSecret: "s3cret", Run: run, DropGrace: 2 * time.Second, Alive: func() []ClientClaim {
		if !ready.Load() {
			return nil
		}
		var out []ClientClaim
		for _, m := range coord.Alive() {
			if c, ok := MemberClaim(m); ok {
				out = append(out, c)
			}
		}
		return out
	}})
	nodeRef.Store(node)

	honestID, honestTok, err := node.Register("honest", "s3cret", 10)
	if err != nil {
		t.Fatal(err)
	}
	doomedID, doomedTok, err := node.Register("doomed", "s3cret", 10)
	if err != nil {
		t.Fatal(err)
	}
	clientMeta := func(name string, id round.ClientID, tok string) membership.Meta {
		return membership.Meta{Role: membership.RoleClient, ClientID: uint64(id), Proof: membership.TokenProof(tok, name, uint64(id)), Codecs: gradient.PresetNames()}
	}
	honest := startMember(t, "client-honest", clientMeta("client-honest", honestID, honestTok), []string{coord.Addr()}, nil)
	defer honest.Close()
	doomed := startMember(t, "client-doomed", clientMeta("client-doomed", doomedID, doomedTok), []string{coord.Addr()}, nil)
	waitFor(t, "both clients to gossip", func() bool { a := coord.AliveClients(); return a[uint64(honestID)] && a[uint64(doomedID)] })
	ready.Store(true)
	waitFor(t, "a round selecting both gossiping clients", func() bool {
		v := node.FSM().Progress()
		return v.Phase == round.Collecting && node.FSM().Awaits(honestID) && node.FSM().Awaits(doomedID)
	})

	// The attack: members that claim the honest client's ID, one without
	// a proof, one with the honest member's proof copied, join and leave.
	stolen := clientMeta("client-honest", honestID, honestTok)
	for name, meta := range map[string]membership.Meta{
		"evil-noproof": {Role: membership.RoleClient, ClientID: uint64(honestID)},
		"evil-replay":  stolen,
	} {
		evil := startMember(t, name, meta, []string{coord.Addr()}, nil)
		waitFor(t, name+" to be seen", func() bool {
			for _, m := range coord.Alive() {
				if m.Name == name {
					return true
				}
			}
			return false
		})
		evil.Close()
		waitFor(t, name+" to leave", func() bool {
			for {
				select {
				case got := <-leaves:
					if got == name {
						return true
					}
				default:
					return false
				}
			}
		})
	}
	// A forged "dead" about the honest member itself, which is alive.
	node.MemberLeft(ClientClaim{ID: honestID, Member: "client-honest", Proof: stolen.Proof})
	// The doomed client dies for real, after the forgeries: once it is
	// dropped, the forged leaves have had their grace too.
	doomed.Kill()
	waitFor(t, "the dead client to be dropped", func() bool { return !node.FSM().Awaits(doomedID) })
	if !node.FSM().Awaits(honestID) {
		t.Fatal("gossip forgeries dropped the honest client from the open round")
	}
	v := node.FSM().Progress()
	payload := clientPayload(t, node.FSM(), v.Round, make([]float32, node.FSM().Params()))
	r, err := node.Submit(honestID, v.Round, 10, 0.5, payload)
	if err != nil || r.Duplicate || r.Received != 1 {
		t.Fatalf("the honest client's update: %+v, %v", r, err)
	}
}

// TestDropSurvivesLeaderChange: gossip told a follower, not the leader,
// that a selected client died (each coordinator's memberlist decides on its
// own), and the follower then became the leader. The new leader drops the
// client once the grace has passed, instead of the round waiting for a
// deadline: a follower used to forget the leave at the grace's end. The
// clock runs ahead on demand so that the grace ends without waiting.
func TestDropSurvivesLeaderChange(t *testing.T) {
	var skew atomic.Int64
	now := func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	var dead atomic.Pointer[ClientClaim]
	var claims atomic.Pointer[[]ClientClaim]
	claims.Store(&[]ClientClaim{})
	run := testRun(0)
	run.Round.PerRound, run.Round.MinClients, run.Round.Deadline = 3, 2, 0
	nodes, _ := inmemClusterTrans(t, 3, run, fastRaft, func(c *Config) {
		c.Now, c.DropGrace = now, time.Minute
		c.Alive = func() []ClientClaim {
			var out []ClientClaim
			for _, cl := range *claims.Load() {
				if d := dead.Load(); d == nil || d.ID != cl.ID {
					out = append(out, cl)
				}
			}
			return out
		}
	})
	leader := leaderOf(t, nodes)
	waitFor(t, "init", func() bool { return leader.FSM().Progress().Initialised })
	var cl []ClientClaim
	for _, name := range []string{"client-a", "client-b", "client-c"} {
		retryLeader(t, "register", func() *Node { return leaderOf(t, nodes) }, func(l *Node) error {
			id, tok, err := l.Register(name, "s3cret", 10)
			if err == nil {
				cl = append(cl, ClientClaim{ID: id, Member: name, Proof: membership.TokenProof(tok, name, uint64(id))})
			}
			return err
		})
	}
	leader = leaderOf(t, nodes)
	claims.Store(&cl)
	waitFor(t, "a round selecting the three clients", func() bool { return leader.FSM().Progress().NumSelected == 3 })
	var follower *Node
	for _, n := range nodes {
		if n != leader {
			follower = n
			break
		}
	}
	waitFor(t, "the follower to apply the round", func() bool { return follower.FSM().Awaits(cl[0].ID) })
	dead.Store(&cl[0])
	follower.MemberLeft(cl[0])
	waitFor(t, "the follower to queue the leave", func() bool { return len(follower.left) == 0 })
	skew.Store(int64(2 * time.Minute)) // the grace has passed
	// Two passes: the second began after the clock moved.
	passes := follower.dropPasses.Load()
	waitFor(t, "the follower to weigh the leave", func() bool { return follower.dropPasses.Load() >= passes+2 })
	// Hand leadership to the follower, through whoever leads: on a starved
	// machine elections churn, and a transfer from a node that has just
	// lost leadership fails ("node is not the leader").
	waitFor(t, "the follower to lead", func() bool {
		if l := leaderOf(t, nodes); l != follower {
			_ = l.Raft().LeadershipTransferToServer(raft.ServerID(follower.cfg.ID), raft.ServerAddress(follower.Address())).Error()
		}
		return follower.IsLeader()
	})
	waitFor(t, "the new leader to drop the dead client", func() bool {
		p := leaderOf(t, nodes).FSM().Progress()
		return p.Round == 1 && p.NumSelected == 3 && p.Received == 0 && p.NumPending == 2 && !follower.FSM().Awaits(cl[0].ID)
	})
}

// TestDropBelowMinClientsReopens: a round selected exactly MinClients
// clients (gossip, on a starved machine, briefly saw no more alive) and one
// of them died. The dropped client's update would be refused, so the round
// can never reach MinClients: the leader aborts it at once and opens the
// round again with the clients alive by then, instead of waiting for the
// deadline (here an hour).
func TestDropBelowMinClientsReopens(t *testing.T) {
	var claims atomic.Pointer[[]ClientClaim]
	claims.Store(&[]ClientClaim{})
	run := testRun(0)
	run.Round.PerRound, run.Round.MinClients, run.Round.Deadline = 3, 2, time.Hour
	node := openSolo(t, Config{JoinSecret: "s3cret", Run: run, DropGrace: time.Millisecond, Alive: func() []ClientClaim { return *claims.Load() }})
	var cl []ClientClaim
	for _, name := range []string{"client-a", "client-b", "client-c"} {
		id, tok, err := node.Register(name, "s3cret", 10)
		if err != nil {
			t.Fatal(err)
		}
		cl = append(cl, ClientClaim{ID: id, Member: name, Proof: membership.TokenProof(tok, name, uint64(id))})
	}
	two := cl[:2] // c is not alive yet
	claims.Store(&two)
	waitFor(t, "a round of the two alive clients", func() bool { return node.FSM().Progress().NumSelected == 2 })
	all := slices.Clone(cl)
	all = slices.Delete(all, 1, 2) // b dies, c comes
	claims.Store(&all)
	node.MemberLeft(cl[1])
	waitFor(t, "the round to open again with a and c", func() bool {
		return node.FSM().Awaits(cl[0].ID) && node.FSM().Awaits(cl[2].ID) && !node.FSM().Awaits(cl[1].ID)
	})
	if p := node.FSM().Progress(); p.Round != 1 || p.NumSelected != 2 || p.NumPending != 2 {
		t.Fatalf("after the abort: %+v", p)
	}
}

// TestPollingIsAliveUntilGossipSaysLeft: with gossip on, a client that
// polls but does not gossip is alive (issue 13, newcomer item 1: rounds
// never opened), and a poller that gossip says left is not, until it
// polls again.
func TestPollingIsAliveUntilGossipSaysLeft(t *testing.T) {
	node := openSolo(t, Config{JoinSecret: "s3cret", Alive: func() []ClientClaim { return nil }})
	waitFor(t, "init", func() bool { return node.FSM().Progress().Initialised })
	id, tok, err := node.Register("poller", "s3cret", 10)
	if err != nil {
		t.Fatal(err)
	}
	if got := node.aliveClients(time.Now()); len(got) != 0 {
		t.Fatalf("alive before any poll: %v", got)
	}
	node.touch(id) // what WaitTask does on each poll
	if got := node.aliveClients(time.Now()); !slices.Equal(got, []round.ClientID{id}) {
		t.Fatalf("a polling client is not alive with gossip on: %v", got)
	}
	node.MemberLeft(ClientClaim{ID: id, Member: "client-poller", Proof: membership.TokenProof(tok, "client-poller", uint64(id))})
	if got := node.aliveClients(time.Now()); len(got) != 0 {
		t.Fatalf("alive after gossip said it left: %v", got)
	}
	time.Sleep(time.Millisecond) // a later poll, on a coarse clock too
	node.touch(id)
	if got := node.aliveClients(time.Now()); !slices.Equal(got, []round.ClientID{id}) {
		t.Fatalf("not alive after polling again: %v", got)
	}
}
