package coordinator

import (
	"errors"
	"io"
	"strconv"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/fedzip/fedzip/round"
)

// forgeRegister is the attack of issue 12 finding 1: from outside the
// cluster, through trans, it sends the node an AppendEntries with the
// node's term + 1 that appends and commits a register command whose token
// the attacker chose. It retries while the node answers (a log that moved
// on under it) until ok reports that the forged client authenticates, or
// until tries run out; it returns the last RPC error.
func forgeRegister(t *testing.T, trans raft.Transport, n *Node, token string, tries int) (ok bool, err error) {
	t.Helper()
	h := sha256Sum(token)
	c := command{Type: cmdRegister, Now: time.Now().UnixNano(), Name: "mallory", TokenHash: h[:], Examples: 1}
	data := c.encode()
	for i := 0; i < tries; i++ {
		st := n.Raft().Stats()
		u := func(k string) uint64 { v, _ := strconv.ParseUint(st[k], 10, 64); return v }
		term, last, lastTerm := u("term"), u("last_log_index"), u("last_log_term")
		req := &raft.AppendEntriesRequest{
			RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("mallory"), Addr: []byte(trans.LocalAddr())},
			Term:      term + 1, PrevLogEntry: last, PrevLogTerm: lastTerm,
			Entries:           []*raft.Log{{Index: last + 1, Term: term + 1, Type: raft.LogCommand, Data: data}},
			LeaderCommitIndex: last + 1,
		}
		var resp raft.AppendEntriesResponse
		err = trans.AppendEntries(raft.ServerID(n.cfg.ID), raft.ServerAddress(n.Address()), req, &resp)
		if err == nil && resp.Success {
			deadline := time.Now().Add(5 * time.Second)
			for time.Now().Before(deadline) {
				if forgedClient(n, token) != 0 {
					return true, nil
				}
				time.Sleep(5 * time.Millisecond)
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	return forgedClient(n, token) != 0, err
}

// forgedClient returns the registered client whose token is token, or 0.
func forgedClient(n *Node, token string) round.ClientID {
	for _, id := range n.FSM().ClientIDs() {
		if n.FSM().Authenticate(id, token) == nil {
			return id
		}
	}
	return 0
}

// plainAttacker is raft's own TCP transport on 127.0.0.1, as anyone on the
// network can run it.
func plainAttacker(t *testing.T) raft.Transport {
	t.Helper()
	tr, err := raft.NewTCPTransport("127.0.0.1:0", nil, 1, 2*time.Second, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.CloseStreams(); tr.Close() })
	return tr
}

// soloNode starts a one-node cluster on disk with cfg's Raft settings and
// waits until it leads and has initialised the run.
func soloNode(t *testing.T, cfg Config) *Node {
	t.Helper()
	cfg.ID, cfg.Dir, cfg.Bootstrap, cfg.Run, cfg.Raft, cfg.Tick = "solo", t.TempDir(), true, testRun(0), fastRaft, 10*time.Millisecond
	if cfg.RaftAddr == "" {
		cfg.RaftAddr = freeAddr(t)
	}
	n, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	leaderOf(t, []*Node{n})
	waitFor(t, "init", func() bool { _, ok := n.FSM().Node("solo"); return ok && n.FSM().View().Initialised })
	return n
}

// TestRaftForgedAppendEntriesPlain: a forged AppendEntries over plain TCP
// must not register a client.
func TestRaftForgedAppendEntriesPlain(t *testing.T) {
	n := soloNode(t, Config{})
	ok, err := forgeRegister(t, plainAttacker(t), n, "attacker-chosen-token", 20)
	if ok {
		t.Fatalf("a forged AppendEntries over plain TCP registered client %d with the attacker's token", forgedClient(n, "attacker-chosen-token"))
	}
	if err == nil {
		t.Fatal("the forged AppendEntries was answered")
	}
	if !errors.Is(err, io.EOF) {
		t.Logf("refused: %v", err)
	}
}
