package coordinator

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fedzip/fedzip/client"
	"github.com/fedzip/fedzip/client/remote"
	"github.com/fedzip/fedzip/internal/syncbuf"
	"github.com/fedzip/fedzip/round"
	"github.com/fedzip/fedzip/transport"
	"github.com/fedzip/fedzip/transport/fedzippb"
)

// fakeClock is a clock tests move by hand.
type fakeClock struct{ ns atomic.Int64 }

func newFakeClock() *fakeClock {
	c := &fakeClock{}
	c.ns.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	return c
}

func (c *fakeClock) Now() time.Time            { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) Advance(d time.Duration)   { c.ns.Add(int64(d)) }
func (c *fakeClock) Set(cfg *Config)           { cfg.Now = c.Now }
func withClock(c *fakeClock) func(cfg *Config) { return c.Set }

// TestRegistrationFloodBounded is finding 5 of issue 12: 100,000
// registrations in 44 s, each kept forever. On a clock that does not move
// a flood gets exactly the burst through, then ResourceExhausted; as time
// passes the rate lets more in, up to the cap, and the cap holds.
func TestRegistrationFloodBounded(t *testing.T) {
	clock := newFakeClock()
	node := openSolo(t, Config{JoinSecret: "s3cret", Now: clock.Now, MaxClients: 40, RegisterRate: 10, RegisterBurst: 25})
	api, _ := serveGRPC(t, node)
	ctx := context.Background()
	flood := func(n int) (accepted int) {
		for range n {
			_, err := api.Register(ctx, &fedzippb.RegisterRequest{JoinSecret: "s3cret"})
			switch status.Code(err) {
			case codes.OK:
				accepted++
			case codes.ResourceExhausted:
			default:
				t.Fatalf("register: %v", err)
			}
		}
		return accepted
	}
	if got := flood(100); got != 25 {
		t.Fatalf("a flood at one instant: %d registrations accepted, want the burst of 25", got)
	}
	clock.Advance(time.Second) // 10 more tokens
	if got := flood(100); got != 10 {
		t.Fatalf("one second later: %d accepted, want 10", got)
	}
	clock.Advance(3 * time.Second) // a full burst again, but only 5 places
	if got := flood(100); got != 5 {
		t.Fatalf("at the cap: %d accepted, want 5", got)
	}
	if c := node.FSM().Progress().Clients; c != 40 {
		t.Fatalf("%d clients registered, cap 40", c)
	}
}

// TestRegisteredButSilentNotSelected: a registration counted as a sign of
// life for 30 s, so a round could select fake clients (finding 5). A
// client that registered and never polled is not selected; one that polls
// is.
func TestRegisteredButSilentNotSelected(t *testing.T) {
	run := testRun(0)
	run.Round.PerRound, run.Round.MinClients = 3, 2
	node := openSolo(t, Config{JoinSecret: "s3cret", Run: run})
	var ids []round.ClientID
	for range 3 {
		id, _, err := node.Register("c", "s3cret", 10)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	if alive := node.aliveClients(time.Now()); len(alive) != 0 {
		t.Fatalf("clients %v are alive without ever polling", alive)
	}
	// Two of them poll; the round opens with those two only.
	for _, id := range ids[:2] {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
		node.WaitTask(ctx, id)
		cancel()
	}
	waitFor(t, "a round", func() bool { return node.FSM().Progress().Phase == round.Collecting })
	if sel := node.FSM().View().Selected; !slices.Equal(sel, ids[:2]) && !slices.Equal(sel, []round.ClientID{ids[1], ids[0]}) {
		t.Fatalf("selected %v, want the two polling clients %v", sel, ids[:2])
	}
}

// TestExpiryReplicated: registered clients that are never seen are
// forgotten through the log, identically on every replica and in
// snapshots, except those the open round selected; an expired client's
// token no longer authenticates, so its runtime registers again.
//
// Expiry is the leader's judgement: only it saw which clients polled, and
// it counts the time before its own election as seen. If leadership moves
// during the scenario (the tests' fast Raft timeouts churn elections on a
// starved machine), the new leader rightly keeps every client for a fresh
// TTL, and the scenario's expectations no longer hold: it runs again on a
// new cluster.
func TestExpiryReplicated(t *testing.T) {
	for attempt := 1; !expiryScenario(t); attempt++ {
		if attempt == 5 {
			t.Fatalf("leadership moved during each of %d attempts", attempt)
		}
		t.Logf("attempt %d: leadership moved; again on a new cluster", attempt)
	}
}

// steadyRaft has Raft timeouts 20 times fastRaft's: under the burners of
// a starved machine fastRaft moved leadership during each of 5 attempts
// of expiryScenario. The first election costs 1–2 s.
func steadyRaft(c *raft.Config) {
	c.HeartbeatTimeout = time.Second
	c.ElectionTimeout = time.Second
	c.LeaderLeaseTimeout = time.Second
	c.CommitTimeout = 5 * time.Millisecond
}

// expiryScenario runs TestExpiryReplicated's scenario on a new cluster. It
// returns false if leadership moved before it could tell.
func expiryScenario(t *testing.T) bool {
	run := testRun(0)
	run.Round.PerRound, run.Round.MinClients, run.Round.Deadline = 1, 1, 0
	clock := newFakeClock()
	nodes, _ := inmemClusterTrans(t, 3, run, steadyRaft, withClock(clock), func(c *Config) { c.ClientTTL, c.FirstPollTTL = time.Hour, time.Minute })
	defer func() {
		for _, n := range nodes {
			n.Close()
		}
	}()
	leader := leaderOf(t, nodes)
	waitFor(t, "init", func() bool { return leader.FSM().Progress().Initialised })
	type reg struct {
		id    round.ClientID
		token string
	}
	var regs []reg
	for range 4 {
		// Through whoever leads: a starved machine can move leadership.
		retryLeader(t, "register", func() *Node { return leaderOf(t, nodes) }, func(l *Node) error {
			id, tok, err := l.Register("c", "s3cret", 10)
			if err == nil {
				regs = append(regs, reg{id, tok})
			}
			return err
		})
	}
	// From here on the scenario needs one leader, caught up (so that it
	// has started counting) in the term it was seen in.
	leader = leaderOf(t, nodes)
	term := leader.Raft().CurrentTerm()
	moved := false
	wait := func(what string, cond func() bool) {
		waitFor(t, what, func() bool {
			if moved = !leader.IsLeader() || leader.Raft().CurrentTerm() != term; moved {
				return true
			}
			return leader.readyTerm.Load() == term && cond()
		})
	}
	wait("the leader to catch up", func() bool { return true })
	if moved {
		return false
	}
	polled, selected, silent := regs[0], regs[1], regs[2:]
	leader.touch(selected.id)
	wait("a round selecting one client", func() bool { return leader.FSM().Progress().Phase == round.Collecting })
	if moved {
		return false
	}
	if !leader.FSM().Awaits(selected.id) {
		t.Fatalf("the round selected %v, want %d", leader.FSM().View().Selected, selected.id)
	}
	leader.touch(polled.id)
	replicasHold := func(want ...round.ClientID) func() bool {
		return func() bool {
			for _, n := range nodes {
				if !slices.Equal(n.FSM().ClientIDs(), want) {
					return false
				}
			}
			return true
		}
	}
	clock.Advance(time.Minute + time.Second)
	wait("the never-polling clients to expire on every replica", replicasHold(polled.id, selected.id))
	if moved {
		return false
	}
	for _, s := range silent {
		if err := nodes[2].FSM().Authenticate(s.id, s.token); err == nil {
			t.Fatalf("expired client %d still authenticates", s.id)
		}
	}
	// An hour later the polling client is gone too; the selected one stays
	// while its round is open.
	clock.Advance(time.Hour)
	wait("the idle client to expire on every replica", replicasHold(selected.id))
	if moved {
		return false
	}
	// Snapshots carry the registry: a replica restored from one holds the
	// same clients.
	snap, err := nodes[1].FSM().Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := snap.Persist(&memSink{Buffer: &buf}); err != nil {
		t.Fatal(err)
	}
	restored := NewFSM()
	if err := restored.Restore(io.NopCloser(&buf)); err != nil {
		t.Fatal(err)
	}
	if got := restored.ClientIDs(); !slices.Equal(got, []round.ClientID{selected.id}) {
		t.Fatalf("restored registry %v", got)
	}
	// Over gRPC, an expired token is refused as Unauthenticated: the
	// client runtime's cue to register again.
	svc := NewService(leader, transport.LimitsFor(1000, 0))
	err = svc.Authenticate(context.Background(), uint64(polled.id), polled.token)
	if !errors.Is(err, ErrUnknownClient) {
		if !leader.IsLeader() || leader.Raft().CurrentTerm() != term {
			return false // a node that no longer leads does not judge
		}
		t.Fatalf("expired token: %v, want ErrUnknownClient", err)
	}
	return true
}

// BenchmarkRegisterFlood registers b.N clients as fast as one caller can
// on a node with its bolt log on disk: with the bounds off (what the red
// team measured) and with the defaults (DefaultMaxClients, the rate). It
// reports the registrations accepted, the live heap they added (after a
// GC) and the heap per accepted client.
//
//	go test -run '^$' -bench RegisterFlood -benchtime 20000x ./coordinator/
func BenchmarkRegisterFlood(b *testing.B) {
	for _, bc := range []struct {
		name string
		cfg  func(*Config)
	}{
		{"bounds=off", func(c *Config) { c.MaxClients, c.RegisterRate, c.RegisterBurst = 1<<30, 1e9, 1<<30 }},
		{"bounds=default", func(*Config) {}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			cfg := Config{ID: "d0", Dir: b.TempDir(), RaftAddr: freeAddr(b), Bootstrap: true, Run: testRun(0), Raft: fastRaft,
				Tick: 10 * time.Millisecond, JoinSecret: "s3cret", ApplyTimeout: 2 * time.Second}
			bc.cfg(&cfg)
			n, err := Open(cfg)
			if err != nil {
				b.Fatal(err)
			}
			defer n.Close()
			waitFor(b, "init", func() bool { return n.IsLeader() && n.FSM().Progress().Initialised })
			heap := func() uint64 {
				var ms runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&ms)
				return ms.HeapAlloc
			}
			before := heap()
			b.ResetTimer()
			accepted := 0
			for range b.N {
				if _, _, err := n.Register("c", "s3cret", 10); err == nil {
					accepted++
				} else if !errors.Is(err, ErrRateLimited) && !errors.Is(err, ErrTooManyClients) {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			grown := float64(heap()) - float64(before)
			b.ReportMetric(float64(accepted), "accepted")
			b.ReportMetric(grown/1e6, "heap-MB")
			if accepted > 0 {
				b.ReportMetric(grown/float64(accepted), "heap-B/client")
			}
		})
	}
}

// TestExpiredClientRegistersAgain: the client runtime, whose registration
// expired, is refused as Unauthenticated and registers again under a new
// ID instead of failing.
func TestExpiredClientRegistersAgain(t *testing.T) {
	run := testRun(0)
	run.Round.MinClients = 2 // one client: no round opens
	node := openSolo(t, Config{JoinSecret: "s3cret", Run: run})
	addr := serveAt(t, node)
	ids := make(chan uint64, 4)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := remote.Run(ctx, remote.Config{Addrs: []string{addr}, Insecure: true, Name: "c", JoinSecret: "s3cret", StateDir: t.TempDir(),
			Examples: 10, MaxBackoff: 50 * time.Millisecond, OnIdentity: func(id uint64, _ string) { ids <- id },
			NewTrainer: func(*fedzippb.Task) (client.Trainer, error) { return nil, errors.New("no task expected") }})
		done <- err
	}()
	first := round.ClientID(<-ids)
	waitFor(t, "the client to poll", func() bool {
		node.mu.Lock()
		defer node.mu.Unlock()
		_, ok := node.alive[first]
		return ok
	})
	if _, err := node.apply(command{Type: cmdExpire, Now: time.Now().UnixNano(), Candidates: []round.ClientID{first}}); err != nil {
		t.Fatal(err)
	}
	select {
	case second := <-ids:
		if round.ClientID(second) == first || !slices.Contains(node.FSM().ClientIDs(), round.ClientID(second)) {
			t.Fatalf("registered again as %d (was %d); registry %v", second, first, node.FSM().ClientIDs())
		}
	case err := <-done:
		t.Fatalf("the client stopped: %v", err)
	case <-time.After(time.Minute):
		t.Fatal("the client did not register again")
	}
	cancel()
	<-done
}

// TestDeadlineAbortIsLogged: a round that reaches its deadline with fewer
// than MinClients updates is aborted, and the leader says so (it used to
// abort silently: a round that never closed left nothing in the log to
// say why).
func TestDeadlineAbortIsLogged(t *testing.T) {
	clock := newFakeClock()
	run := testRun(0)
	run.Round.PerRound, run.Round.MinClients, run.Round.Deadline = 2, 2, time.Minute
	var logs syncbuf.Buffer
	node := openSolo(t, Config{JoinSecret: "s3cret", Run: run, Now: clock.Now, Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	waitFor(t, "init", func() bool { return node.FSM().Progress().Initialised })
	for range 2 {
		id, _, err := node.Register("c", "s3cret", 10)
		if err != nil {
			t.Fatal(err)
		}
		node.touch(id)
	}
	waitFor(t, "a round", func() bool { return node.FSM().Progress().Phase == round.Collecting })
	clock.Advance(time.Minute)
	defer func() {
		if t.Failed() {
			t.Log(logs.String())
		}
	}()
	waitFor(t, "the abort to be logged", func() bool {
		l := logs.String()
		return strings.Contains(l, `"msg":"round aborted: deadline passed with too few updates"`) && strings.Contains(l, `"round":1,"received":0,"min_clients":2}`)
	})
	if v := node.FSM().Progress(); v.Version != 0 {
		t.Fatalf("an aborted round changed the model: version %d", v.Version)
	}
}
