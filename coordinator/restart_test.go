package coordinator

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fedzip/fedzip/dataset"
	"github.com/fedzip/fedzip/gradient"
	"github.com/fedzip/fedzip/round"
	"github.com/fedzip/fedzip/transport"
)

// freeAddr returns a 127.0.0.1 address with a port in [20000, 26000),
// free now and not handed out before in this process: below Linux's
// ephemeral range, so that no ":0" listener of a parallel test binary can
// take it between the pick and a node's bind (cmd/fedzip's tests pick
// from [26000, 32000)).
func freeAddr(t testing.TB) string {
	t.Helper()
	freeMu.Lock()
	defer freeMu.Unlock()
	for range 1000 {
		p := 20000 + rand.IntN(6000)
		if freeUsed[p] {
			continue
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(p))
		l, err := net.Listen("tcp", addr)
		if err != nil {
			continue
		}
		l.Close()
		freeUsed[p] = true
		return addr
	}
	t.Fatal("no free port in [20000, 26000)")
	return ""
}

var (
	freeMu   sync.Mutex
	freeUsed = map[int]bool{}
)

// TestRestartResumesFromDisk runs a single node on its bolt log and file
// snapshots, accepts part of a round, closes the node and opens it again on
// the same directory: the round, the accepted updates and the model are
// all still there.
func TestRestartResumesFromDisk(t *testing.T) {
	fed, _ := dataset.Synthetic(1, 1, 5, 3)
	dir := t.TempDir()
	addr := freeAddr(t)
	run := testRun(0)
	open := func() *Node {
		n, err := Open(Config{ID: "solo", Dir: dir, RaftAddr: addr, Bootstrap: true, Run: run, Raft: fastRaft, Tick: 10 * time.Millisecond, JoinSecret: "s3cret"})
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	n := open()
	leader := leaderOf(t, []*Node{n})
	waitFor(t, "init", func() bool { return leader.FSM().View().Initialised })
	clients := registerClients(t, leader, fed, 5)
	driveRound(t, func() []*Node { return []*Node{n} }, clients, fed)
	var v View
	waitFor(t, "round 2", func() bool { v = n.FSM().View(); return v.Phase == round.Collecting && v.Round == 2 })
	model, _ := n.FSM().Model()
	payload := clientPayload(t, n.FSM(), v.Round, make([]float32, len(model)))
	if _, err := n.Submit(v.Pending[0], v.Round, 7, 0, payload); err != nil {
		t.Fatal(err)
	}
	if err := n.Raft().Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	// One more accepted update after the snapshot: it lives only in the log.
	if _, err := n.Submit(v.Pending[1], v.Round, 7, 0, payload); err != nil {
		t.Fatal(err)
	}
	// A client registered after the snapshot: its registration lives only
	// in the log.
	late, token, err := n.Register("late", "s3cret", 7)
	if err != nil {
		t.Fatal(err)
	}
	hash := n.FSM().ModelHash()
	n.Close()

	n2 := open()
	defer n2.Close()
	// Until the restarted node has replayed the log it must not tell the
	// late client that it is unknown (Unauthenticated makes a client
	// register again under a new ID, one the open round did not select:
	// "invalid token" right after a restart in TestEndToEnd). It answers
	// Unavailable, which clients retry, then accepts the token.
	svc := NewService(n2, transport.LimitsFor(len(model), 0))
	waitFor(t, "the restarted node to know the late client", func() bool {
		err := svc.Authenticate(context.Background(), uint64(late), token)
		if err != nil && status.Code(err) != codes.Unavailable {
			t.Fatalf("restarted node, before replay: %v, want Unavailable or success", err)
		}
		return err == nil
	})
	waitFor(t, "replay", func() bool { return n2.FSM().View().Applied >= v.Applied+2 })
	v2 := n2.FSM().View()
	if v2.Round != 2 || v2.Phase != round.Collecting || n2.FSM().ModelHash() != hash {
		t.Fatalf("after restart: round %d phase %v, model changed: %v", v2.Round, v2.Phase, n2.FSM().ModelHash() != hash)
	}
	if want := v.Pending[2:]; !slices.Equal(v2.Pending, want) {
		t.Fatalf("pending after restart %v, want %v (accepted updates lost)", v2.Pending, want)
	}
	leaderOf(t, []*Node{n2})
	// A restarted leader answers ErrCatchingUp (clients retry) until it
	// has applied what was committed before its term.
	var r round.Receipt
	waitFor(t, "the restarted leader to judge updates", func() bool {
		r, err = n2.Submit(v.Pending[0], v.Round, 7, 0, payload)
		return !errors.Is(err, ErrCatchingUp)
	})
	if err != nil || !r.Duplicate {
		t.Fatalf("resubmission after restart: %+v %v", r, err)
	}
}

// TestSnapshotRestoreRoundTrip snapshots an FSM mid-round, after a round
// that updated the strategy's server state, and restores it into a fresh
// one; finishing the round on both gives the same model bits.
func TestSnapshotRestoreRoundTrip(t *testing.T) {
	for _, strategy := range []string{"fedavg", "fedavgm", "fedadam", "median", "trimmed-mean,reputation=1,reputation-min=1", "fedavg,quorum=2,quorum-block=1", "fedavgm,anneal=3,lr-end=0.5", "fedavgm,lr=3,momentum=0,anneal=200,bound=auto,bound-growth=2", "cclip,iters=1,reject=4,same=0.99,growth=2,reputation=1,reputation-min=1"} {
		t.Run(strategy, func(t *testing.T) {
			a := NewFSM()
			idx := uint64(0)
			apply := func(f *FSM, c command) any {
				idx++
				return f.Apply(&raft.Log{Index: idx, Type: raft.LogCommand, Data: c.encode()})
			}
			raw := []byte(fmt.Sprintf(`{"model":"mlp:","input_dim":3,"classes":2,"init_seed":1,"strategy":%q,"round":{"PerRound":3,"Seed":1},"task_seed":1,"local_epochs":1,"batch_size":1,"lr":0.1,"upload_codec":"none"}`, strategy))
			if err, ok := apply(a, command{Type: cmdInit, Config: raw}).(error); ok && err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 3; i++ {
				apply(a, command{Type: cmdRegister, Name: "c", TokenHash: []byte{1}})
			}
			n := a.n
			upd := func(v float32) []byte {
				d := make([]float32, n)
				for i := range d {
					d[i] = v * float32(i+1)
				}
				return gradient.AppendFloat32s(nil, d)
			}
			cands := []round.ClientID{1, 2, 3}
			o := apply(a, command{Type: cmdOpen, Candidates: cands}).(round.Opened)
			for i, id := range o.Selected {
				v := 0.1 * float32(i+1)
				if strings.Contains(strategy, "reputation") && i == 2 {
					v = -v // disagrees: the reputation, in the snapshot, excludes it next round
				}
				apply(a, command{Type: cmdSubmit, Round: 1, Client: id, Examples: 3, Payload: upd(v)})
			}
			if _, ok := apply(a, command{Type: cmdClose}).(round.Closed); !ok {
				t.Fatal("round 1 did not close")
			}
			o = apply(a, command{Type: cmdOpen, Candidates: cands}).(round.Opened)
			if r, ok := apply(a, command{Type: cmdSubmit, Round: 2, Client: o.Selected[0], Examples: 3, Payload: upd(0.25)}).(round.Receipt); !ok || r.Received != 1 {
				t.Fatal("first update not accepted")
			}
			snap, err := a.Snapshot()
			if err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			if err := snap.Persist(&memSink{Buffer: &buf}); err != nil {
				t.Fatal(err)
			}
			b := NewFSM()
			if err := b.Restore(io.NopCloser(&buf)); err != nil {
				t.Fatal(err)
			}
			for i, id := range o.Selected[1:] {
				c := command{Type: cmdSubmit, Round: 2, Client: id, Examples: 5, Payload: upd(-0.5 * float32(i+1))}
				apply(a, c)
				apply(b, c)
			}
			apply(a, command{Type: cmdClose})
			apply(b, command{Type: cmdClose})
			if a.ModelHash() != b.ModelHash() || a.View().Version != 2 || b.View().Version != 2 {
				t.Fatal("restored FSM diverged")
			}
		})
	}
}

type memSink struct{ *bytes.Buffer }

func (memSink) ID() string    { return "mem" }
func (memSink) Cancel() error { return nil }
func (memSink) Close() error  { return nil }

// TestCorruptSnapshotRefused flips a byte of a node's only snapshot: the
// node refuses to start from it (raft checks the snapshot's CRC-64) rather
// than load a wrong state.
func TestCorruptSnapshotRefused(t *testing.T) {
	fed, _ := dataset.Synthetic(1, 1, 4, 3)
	dir := t.TempDir()
	addr := freeAddr(t)
	open := func() (*Node, error) {
		return Open(Config{ID: "solo", Dir: dir, RaftAddr: addr, Bootstrap: true, Run: testRun(0), Raft: fastRaft, Tick: 10 * time.Millisecond, JoinSecret: "s3cret"})
	}
	n, err := open()
	if err != nil {
		t.Fatal(err)
	}
	leaderOf(t, []*Node{n})
	waitFor(t, "init", func() bool { return n.FSM().View().Initialised })
	registerClients(t, n, fed, 4)
	if err := n.Raft().Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	n.Close()
	states, _ := filepath.Glob(filepath.Join(dir, "snapshots", "*", "state.bin"))
	if len(states) != 1 {
		t.Fatalf("snapshots: %v", states)
	}
	b, err := os.ReadFile(states[0])
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0xff
	if err := os.WriteFile(states[0], b, 0o600); err != nil {
		t.Fatal(err)
	}
	n2, err := open()
	if err == nil {
		n2.Close()
		t.Fatal("a node started from a corrupt snapshot")
	}
	if !strings.Contains(err.Error(), "snapshot") {
		t.Fatalf("error does not say what failed: %v", err)
	}
}
