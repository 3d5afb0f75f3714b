package coordinator

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"

	"github.com/fedzip/fedzip/client"
	"github.com/fedzip/fedzip/dataset"
	"github.com/fedzip/fedzip/round"
)

// soloState is a single node on a state directory, reopened as the tests
// damage it.
type soloState struct {
	dir, addr string
	tune      func(*raft.Config)
	logs      *bytes.Buffer
}

func newSolo(t *testing.T, tune func(*raft.Config)) *soloState {
	return &soloState{dir: t.TempDir(), addr: freeAddr(t), tune: tune}
}

func (s *soloState) config(recover bool) Config {
	s.logs = &bytes.Buffer{}
	return Config{ID: "solo", ClusterID: "c1", Dir: s.dir, RaftAddr: s.addr, Bootstrap: true, Run: testRun(0), Raft: s.tune,
		Tick: 10 * time.Millisecond, JoinSecret: "s3cret", Recover: recover,
		Logger: slog.New(slog.NewTextHandler(s.logs, &slog.HandlerOptions{Level: slog.LevelWarn}))}
}

func (s *soloState) open(recover bool) (*Node, error) { return Open(s.config(recover)) }

func (s *soloState) mustOpen(t *testing.T, recover bool) *Node {
	t.Helper()
	n, err := s.open(recover)
	if err != nil {
		t.Fatal(err)
	}
	leaderOf(t, []*Node{n})
	waitFor(t, "init", func() bool { return n.FSM().View().Initialised })
	return n
}

func (s *soloState) path(name string) string { return filepath.Join(s.dir, name) }

// build runs a node through registrations and rounds; with snapshot, it
// snapshots after the first round and goes on after it, so that the log
// holds entries the snapshot does not. It returns the applied index and
// the clients.
func (s *soloState) build(t *testing.T, snapshot bool) (uint64, map[round.ClientID]*simClient) {
	t.Helper()
	fed, _ := dataset.Synthetic(1, 1, 4, 3)
	n := s.mustOpen(t, false)
	clients := registerClients(t, n, fed, 4)
	nodes := func() []*Node { return []*Node{n} }
	driveRound(t, nodes, clients, fed)
	if snapshot {
		if err := n.Raft().Snapshot().Error(); err != nil {
			t.Fatal(err)
		}
	}
	driveRound(t, nodes, clients, fed)
	applied := n.Raft().AppliedIndex()
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	return applied, clients
}

// refused opens the directory and requires a refusal that wraps want, in
// one line that names what to do, also logged, and that raft.db was not
// created or changed.
func (s *soloState) refused(t *testing.T, recover bool, want error) error {
	t.Helper()
	before, _ := os.ReadFile(s.path(logFile))
	_, statErr := os.Stat(s.path(logFile))
	n, err := s.open(recover)
	if err == nil {
		v := n.FSM().View()
		n.Close()
		t.Fatalf("started (round %d, %d clients) instead of refusing with %v", v.Round, len(n.FSM().ClientIDs()), want)
	}
	if !errors.Is(err, want) {
		t.Fatalf("error %q does not wrap %q", err, want)
	}
	if msg := err.Error(); strings.Contains(msg, "\n") || !strings.Contains(msg, s.dir) {
		t.Fatalf("want one line naming the directory, got %q", msg)
	}
	if !strings.Contains(s.logs.String(), "level=ERROR") {
		t.Fatalf("refusal not logged: %q", s.logs.String())
	}
	after, _ := os.ReadFile(s.path(logFile))
	_, statErr2 := os.Stat(s.path(logFile))
	if !bytes.Equal(before, after) || (statErr == nil) != (statErr2 == nil) {
		t.Fatal("the refusal changed or created raft.db")
	}
	t.Log(err)
	return err
}

func readMarkerT(t *testing.T, dir string) marker {
	t.Helper()
	m, err := readMarker(dir)
	if err != nil || m == nil {
		t.Fatalf("marker: %v %v", m, err)
	}
	return *m
}

// TestMissingLogRefused: raft.db truncated to 0 bytes or deleted, with and
// without snapshots, is refused; before markers the node started a new run
// at round 0 (no snapshot) or silently went back to its snapshot.
func TestMissingLogRefused(t *testing.T) {
	for _, snapshot := range []bool{false, true} {
		for _, how := range []string{"truncate", "delete"} {
			t.Run(fmt.Sprintf("%s/snapshot=%v", how, snapshot), func(t *testing.T) {
				s := newSolo(t, fastRaft)
				applied, _ := s.build(t, snapshot)
				if m := readMarkerT(t, s.dir); m.Applied < applied || m.NodeID != "solo" || m.ClusterID != "c1" {
					t.Fatalf("marker %+v after applying %d", m, applied)
				}
				if how == "truncate" {
					if err := os.Truncate(s.path(logFile), 0); err != nil {
						t.Fatal(err)
					}
				} else if err := os.Remove(s.path(logFile)); err != nil {
					t.Fatal(err)
				}
				err := s.refused(t, false, ErrStateMissing)
				if !strings.Contains(err.Error(), "--recover") {
					t.Fatalf("error does not say how to recover: %v", err)
				}
			})
		}
	}
}

// TestRolledBackLogRefused replaces raft.db with an older copy of itself:
// refused, with and without a snapshot between the copy and the end.
func TestRolledBackLogRefused(t *testing.T) {
	for _, snapshot := range []bool{false, true} {
		t.Run(fmt.Sprintf("snapshot=%v", snapshot), func(t *testing.T) {
			fed, _ := dataset.Synthetic(1, 1, 4, 3)
			s := newSolo(t, fastRaft)
			n := s.mustOpen(t, false)
			clients := registerClients(t, n, fed, 4)
			n.Close()
			old, err := os.ReadFile(s.path(logFile))
			if err != nil {
				t.Fatal(err)
			}
			n = s.mustOpen(t, false)
			nodes := func() []*Node { return []*Node{n} }
			driveRound(t, nodes, clients, fed)
			if snapshot {
				if err := n.Raft().Snapshot().Error(); err != nil {
					t.Fatal(err)
				}
			}
			driveRound(t, nodes, clients, fed)
			n.Close()
			if err := os.WriteFile(s.path(logFile), old, 0o600); err != nil {
				t.Fatal(err)
			}
			s.refused(t, false, ErrStateRolledBack)
		})
	}
}

// boltPage returns the offset of a page of raft.db of the given type
// ("leaf", "branch"), the middle one of them.
func boltPage(t *testing.T, path, typ string) int64 {
	t.Helper()
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true, PreLoadFreelist: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var offs []int64
	err = db.View(func(tx *bbolt.Tx) error {
		for id := 2; ; {
			p, err := tx.Page(id)
			if err != nil {
				return err
			}
			if p == nil {
				return nil
			}
			if p.Type == typ {
				offs = append(offs, int64(id)*int64(db.Info().PageSize))
			}
			// The pages of a large value follow its first one.
			id += 1 + p.OverflowCount
		}
	})
	if err != nil || len(offs) == 0 {
		t.Fatalf("no %s page: %v", typ, err)
	}
	return offs[len(offs)/2]
}

// TestCorruptLogRefused damages raft.db in the middle: a leaf page's
// header (before: a panic inside raft), keys of a leaf page, or the file
// cut short. Each is a one-line error.
func TestCorruptLogRefused(t *testing.T) {
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, path string, b []byte)
	}{
		{"leaf header", func(t *testing.T, path string, b []byte) {
			off := boltPage(t, path, "leaf")
			copy(b[off+8:off+16], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}) // flags, count
		}},
		{"leaf body", func(t *testing.T, path string, b []byte) {
			off := boltPage(t, path, "leaf")
			for i := off + 16; i < off+256; i++ {
				b[i] ^= 0x5a
			}
		}},
		{"cut short", func(t *testing.T, path string, b []byte) {
			if err := os.Truncate(path, int64(len(b)/2)); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSolo(t, fastRaft)
			s.build(t, false)
			b, err := os.ReadFile(s.path(logFile))
			if err != nil {
				t.Fatal(err)
			}
			tc.damage(t, s.path(logFile), b)
			if tc.name != "cut short" {
				if err := os.WriteFile(s.path(logFile), b, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			s.refused(t, false, ErrStateCorrupt)
		})
	}
}

// smallTrail keeps few log entries behind a snapshot, so that the log
// alone cannot rebuild the state: what raft does with a snapshot it cannot
// use (before: panic "log not found").
func smallTrail(c *raft.Config) {
	fastRaft(c)
	c.TrailingLogs = 2
}

// TestCorruptSnapshotMetaRefused damages the newest snapshot's meta.json:
// unreadable, or readable but naming another index, or another size. raft
// skips a snapshot whose meta it cannot read, and then panicked on the
// compacted log.
func TestCorruptSnapshotMetaRefused(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func([]byte) []byte
	}{
		{"unreadable", func(b []byte) []byte { return b[:len(b)/2] }},
		{"other index", func(b []byte) []byte {
			return []byte(strings.Replace(string(b), `"Index":`, `"Index":1`, 1))
		}},
		{"other size", func(b []byte) []byte {
			return []byte(strings.Replace(string(b), `"Size":`, `"Size":9`, 1))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSolo(t, smallTrail)
			s.build(t, true)
			metas, _ := filepath.Glob(filepath.Join(s.dir, snapshotsDir, "*", "meta.json"))
			if len(metas) != 1 {
				t.Fatalf("snapshots: %v", metas)
			}
			b, err := os.ReadFile(metas[0])
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(metas[0], tc.edit(b), 0o600); err != nil {
				t.Fatal(err)
			}
			err = s.refused(t, false, ErrStateCorrupt)
			if !strings.Contains(err.Error(), "snapshot") {
				t.Fatalf("error does not say the snapshot is bad: %v", err)
			}
		})
	}
}

// TestCorruptSnapshotStateRefused flips a byte of the newest snapshot's
// state.bin while an older, good one is there: refused (raft would have
// gone back to the older one; with a compacted log that panicked).
func TestCorruptSnapshotStateRefused(t *testing.T) {
	s := newSolo(t, smallTrail)
	fed, _ := dataset.Synthetic(1, 1, 4, 3)
	n := s.mustOpen(t, false)
	clients := registerClients(t, n, fed, 4)
	for i := 0; i < 2; i++ {
		driveRound(t, func() []*Node { return []*Node{n} }, clients, fed)
		if err := n.Raft().Snapshot().Error(); err != nil {
			t.Fatal(err)
		}
	}
	n.Close()
	flipNewestState(t, s.dir)
	s.refused(t, false, ErrStateCorrupt)
}

func flipNewestState(t *testing.T, dir string) {
	t.Helper()
	snaps, err := listSnapshots(dir)
	if err != nil || len(snaps) < 1 {
		t.Fatalf("snapshots: %v %v", snaps, err)
	}
	p := filepath.Join(dir, snapshotsDir, snaps[0].id, "state.bin")
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0xff
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestForeignStateRefused points a node at another node's directory, or
// at its own with another cluster ID: refused, also with --recover, and
// nothing is moved.
func TestForeignStateRefused(t *testing.T) {
	s := newSolo(t, fastRaft)
	s.build(t, false)
	for _, tc := range []struct{ id, cluster string }{{"other", "c1"}, {"solo", "c2"}} {
		for _, recover := range []bool{false, true} {
			cfg := s.config(recover)
			cfg.ID, cfg.ClusterID = tc.id, tc.cluster
			n, err := Open(cfg)
			if err == nil {
				n.Close()
				t.Fatalf("node %s of cluster %s started on the directory of solo of c1", tc.id, tc.cluster)
			}
			if !errors.Is(err, ErrStateForeign) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("error: %v", err)
			}
		}
	}
	if ents, _ := filepath.Glob(filepath.Join(s.dir, "damaged-*")); len(ents) != 0 {
		t.Fatalf("moved aside: %v", ents)
	}
	s.mustOpen(t, false).Close()
}

// TestStateInUseRefused: a second node on a directory in use waits for
// raft.db's lock, then refuses, also with --recover, and moves nothing.
func TestStateInUseRefused(t *testing.T) {
	s := newSolo(t, fastRaft)
	n := s.mustOpen(t, false)
	defer n.Close()
	for _, recover := range []bool{false, true} {
		cfg := s.config(recover)
		cfg.RaftAddr = freeAddr(t)
		n2, err := Open(cfg)
		if err == nil {
			n2.Close()
			t.Fatal("two nodes on one directory")
		}
		if !errors.Is(err, ErrStateInUse) {
			t.Fatalf("error: %v", err)
		}
	}
	if ents, _ := filepath.Glob(filepath.Join(s.dir, "damaged-*")); len(ents) != 0 {
		t.Fatalf("moved aside: %v", ents)
	}
}

// TestMarkerFollowsApplied: the marker's applied index grows while the node
// runs, without a Close.
func TestMarkerFollowsApplied(t *testing.T) {
	fed, _ := dataset.Synthetic(1, 1, 4, 3)
	s := newSolo(t, fastRaft)
	n := s.mustOpen(t, false)
	defer n.Close()
	registerClients(t, n, fed, 4)
	want := n.Raft().AppliedIndex()
	waitFor(t, "the marker to record the applied index", func() bool {
		m, err := readMarker(s.dir)
		return err == nil && m != nil && m.Applied >= want && len(m.Servers) == 1 && m.Servers[0] == "solo"
	})
}

// checkRecovered requires the node to lead, hold the clients, and finish a
// round with them.
func checkRecovered(t *testing.T, n *Node, clients map[round.ClientID]*simClient) {
	t.Helper()
	fed, _ := dataset.Synthetic(1, 1, 4, 3)
	leaderOf(t, []*Node{n})
	waitFor(t, "the clients", func() bool { return len(n.FSM().ClientIDs()) == len(clients) })
	driveRound(t, func() []*Node { return []*Node{n} }, clients, fed)
}

func damaged(t *testing.T, dir, name string) []string {
	t.Helper()
	got, _ := filepath.Glob(filepath.Join(dir, "damaged-*", name))
	return got
}

// TestRecoverSingleNodeFromSnapshot: a single node whose raft.db was wiped
// restarts with --recover from its snapshot: raft.db is kept aside, the
// loss is logged, and the node runs; a later plain restart works.
func TestRecoverSingleNodeFromSnapshot(t *testing.T) {
	for _, how := range []string{"truncate", "corrupt"} {
		t.Run(how, func(t *testing.T) {
			s := newSolo(t, fastRaft)
			_, clients := s.build(t, true)
			applied := readMarkerT(t, s.dir).Applied
			snaps, _ := listSnapshots(s.dir)
			if how == "truncate" {
				os.Truncate(s.path(logFile), 0)
			} else {
				b, _ := os.ReadFile(s.path(logFile))
				off := boltPage(t, s.path(logFile), "leaf")
				copy(b[off+8:off+16], bytes.Repeat([]byte{0xff}, 8))
				os.WriteFile(s.path(logFile), b, 0o600)
			}
			want := ErrStateMissing
			if how == "corrupt" {
				want = ErrStateCorrupt
			}
			s.refused(t, false, want)
			n, err := s.open(true)
			if err != nil {
				t.Fatal(err)
			}
			if len(damaged(t, s.dir, logFile)) != 1 {
				t.Fatal("raft.db was not kept aside")
			}
			if lost := fmt.Sprintf("lost=%d..%d", snaps[0].index+1, applied); !strings.Contains(s.logs.String(), lost) {
				t.Fatalf("the rollback is not logged with its range: %q", s.logs.String())
			}
			checkRecovered(t, n, clients)
			n.Close()
			s.mustOpen(t, false).Close()
		})
	}
}

// TestRecoverWithoutSnapshotRefused: with no snapshot, a wiped single node
// has nothing to recover from; --recover says so and moves nothing.
func TestRecoverWithoutSnapshotRefused(t *testing.T) {
	s := newSolo(t, fastRaft)
	s.build(t, false)
	os.Truncate(s.path(logFile), 0)
	err := s.refused(t, true, ErrNoRecovery)
	if !strings.Contains(err.Error(), "move") {
		t.Fatalf("error does not say how to start anew: %v", err)
	}
	if ents, _ := filepath.Glob(filepath.Join(s.dir, "damaged-*")); len(ents) != 0 {
		t.Fatalf("moved aside: %v", ents)
	}
}

// TestRecoverAcceptsRollback: a single node on an intact older raft.db
// accepts the rollback with --recover, logs it, and then restarts plainly.
func TestRecoverAcceptsRollback(t *testing.T) {
	fed, _ := dataset.Synthetic(1, 1, 4, 3)
	s := newSolo(t, fastRaft)
	n := s.mustOpen(t, false)
	clients := registerClients(t, n, fed, 4)
	n.Close()
	old, _ := os.ReadFile(s.path(logFile))
	n = s.mustOpen(t, false)
	driveRound(t, func() []*Node { return []*Node{n} }, clients, fed)
	n.Close()
	os.WriteFile(s.path(logFile), old, 0o600)
	s.refused(t, false, ErrStateRolledBack)
	n, err := s.open(true)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(s.logs.String(), "accepting the rollback") {
		t.Fatalf("not logged: %q", s.logs.String())
	}
	checkRecovered(t, n, clients)
	n.Close()
	s.mustOpen(t, false).Close()
}

// TestRecoverCorruptNewestSnapshot: --recover moves the corrupt newest
// snapshot aside and starts from the one before it and the log, losing
// nothing.
func TestRecoverCorruptNewestSnapshot(t *testing.T) {
	s := newSolo(t, fastRaft)
	fed, _ := dataset.Synthetic(1, 1, 4, 3)
	n := s.mustOpen(t, false)
	clients := registerClients(t, n, fed, 4)
	for i := 0; i < 2; i++ {
		driveRound(t, func() []*Node { return []*Node{n} }, clients, fed)
		if err := n.Raft().Snapshot().Error(); err != nil {
			t.Fatal(err)
		}
	}
	hash, version := n.FSM().ModelHash(), n.FSM().View().Version
	n.Close()
	flipNewestState(t, s.dir)
	s.refused(t, false, ErrStateCorrupt)
	n, err := s.open(true)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if len(damaged(t, s.dir, filepath.Join(snapshotsDir, "*", "state.bin"))) != 1 {
		t.Fatal("the snapshot was not kept aside")
	}
	waitFor(t, "replay", func() bool { return n.FSM().View().Version == version })
	if n.FSM().ModelHash() != hash {
		t.Fatal("model changed")
	}
}

// TestRecoverUnreadableMarker: a marker that does not parse is refused,
// and --recover moves it aside and writes a new one.
func TestRecoverUnreadableMarker(t *testing.T) {
	s := newSolo(t, fastRaft)
	_, clients := s.build(t, false)
	os.WriteFile(s.path(markerFile), []byte("{\"format\":1,"), 0o600)
	s.refused(t, false, ErrStateCorrupt)
	n, err := s.open(true)
	if err != nil {
		t.Fatal(err)
	}
	leaderOf(t, []*Node{n})
	waitFor(t, "replay", func() bool { return len(n.FSM().ClientIDs()) == len(clients) })
	n.Close()
	if m := readMarkerT(t, s.dir); m.Applied == 0 || len(damaged(t, s.dir, markerFile)) != 1 {
		t.Fatalf("marker %+v, not rewritten or not kept aside", m)
	}
}

// TestRecoverClusterMember: a follower of a 3-node cluster loses raft.db.
// It is refused; the documented steps (remove it on the leader, restart it
// with --recover, add it back) bring it back empty, and the leader's
// snapshot and log bring it to the same model.
func TestRecoverClusterMember(t *testing.T) {
	fed, _ := dataset.Synthetic(1, 1, 6, 3)
	ds := diskCluster(t, 3, testRun(0), fastRaft)
	leader := leaderOfDisk(t, ds)
	waitFor(t, "init", func() bool { return leader.FSM().View().Initialised })
	// With test timeouts on a busy machine the first leader may step
	// down: register through whichever node leads.
	clients := map[round.ClientID]*simClient{}
	for k := 0; k < 6; k++ {
		waitFor(t, "a registration", func() bool {
			id, tok, err := leaderOfDisk(t, ds).Register(fmt.Sprintf("c%d", k), "s3cret", uint64(len(fed.TrainParts[k])))
			if err == nil {
				clients[id] = &simClient{id: id, token: tok, tr: client.DataTrainer{X: fed.Train.X, Y: fed.Train.Y, Index: fed.TrainParts[k]}}
			}
			return err == nil
		})
	}
	nodes := func() []*Node { return liveNodes(ds) }
	driveRound(t, nodes, clients, fed)
	leader = leaderOfDisk(t, ds)
	var f *diskNode
	for _, d := range ds {
		if d.node != leader {
			f = d
		}
	}
	waitFor(t, "the follower to apply", func() bool { return f.node.Raft().AppliedIndex() >= leader.Raft().AppliedIndex() })
	f.node.Close()
	f.node = nil
	if err := os.Truncate(filepath.Join(f.dir, logFile), 0); err != nil {
		t.Fatal(err)
	}
	cfg := Config{ID: f.id, Dir: f.dir, RaftAddr: f.addr, RaftAdvertise: f.adv, RaftTLS: f.tls, Tick: 10 * time.Millisecond, Raft: fastRaft, JoinSecret: "s3cret"}
	if n, err := Open(cfg); !errors.Is(err, ErrStateMissing) {
		if n != nil {
			n.Close()
		}
		t.Fatalf("wiped follower: %v", err)
	}
	// 1. On the leader: remove the node.
	waitFor(t, "the node removed", func() bool {
		return leaderOfDisk(t, ds).Raft().RemoveServer(raft.ServerID(f.id), 0, 5*time.Second).Error() == nil
	})
	driveRound(t, nodes, clients, fed)
	// 2. Restart it with --recover (Bootstrap as fedzip coordinator's
	// default: it must not bootstrap a cluster of its own).
	cfg.Recover, cfg.Bootstrap = true, true
	n, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	f.node = n
	if len(damaged(t, f.dir, logFile)) != 1 || len(damaged(t, f.dir, markerFile)) != 1 {
		t.Fatal("the old state was not kept aside")
	}
	if c := n.Raft().GetConfiguration(); c.Error() != nil || len(c.Configuration().Servers) != 0 {
		t.Fatalf("the recovered node bootstrapped a cluster of its own: %+v", c.Configuration())
	}
	// Restarted before it is added back, without --recover, it still
	// does not bootstrap.
	n.Close()
	cfg.Recover = false
	if n, err = Open(cfg); err != nil {
		t.Fatal(err)
	}
	f.node = n
	if c := n.Raft().GetConfiguration(); c.Error() != nil || len(c.Configuration().Servers) != 0 {
		t.Fatalf("restarted before it was added back, the node bootstrapped: %+v", c.Configuration())
	}
	// 3. On the leader: add it back.
	leader = leaderOfDisk(t, ds)
	waitFor(t, "the node added back", func() bool { return leaderOfDisk(t, ds).AddVoter(f.id, n.Address()) == nil })
	driveRound(t, nodes, clients, fed)
	waitFor(t, "the recovered node to catch up", func() bool {
		l := leaderOfDisk(t, ds)
		return n.FSM().View().Version == l.FSM().View().Version && n.FSM().ModelHash() == l.FSM().ModelHash()
	})
	// Its marker records the cluster again, and a plain restart works.
	waitFor(t, "the marker", func() bool {
		m, err := readMarker(f.dir)
		return err == nil && m != nil && len(m.Servers) == 3 && m.Applied > 0
	})
	n.Close()
	f.node = nil
	if f.node, err = Open(cfg); err != nil {
		t.Fatal(err)
	}
}

// TestStateFlipsNeverPanic flips random bytes of raft.db, a snapshot's
// state.bin and meta.json, and the marker, and opens the node: it starts or
// refuses, and never panics. FEDZIP_LONG=1 runs 2000 damaged directories instead of 32.
func TestStateFlipsNeverPanic(t *testing.T) {
	iters := 32
	if os.Getenv("FEDZIP_LONG") == "1" {
		iters = 2000
	}
	s := newSolo(t, smallTrail)
	s.build(t, true)
	files := map[string][]byte{}
	var names []string
	filepath.WalkDir(s.dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			b, _ := os.ReadFile(p)
			rel, _ := filepath.Rel(s.dir, p)
			files[rel] = b
			names = append(names, rel)
		}
		return nil
	})
	rng := rand.New(rand.NewPCG(1, 2))
	refused := 0
	for i := 0; i < iters; i++ {
		dir := filepath.Join(t.TempDir(), "state")
		for name, b := range files {
			os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o700)
			os.WriteFile(filepath.Join(dir, name), b, 0o600)
		}
		name := names[rng.IntN(len(names))]
		b := bytes.Clone(files[name])
		what := ""
		for k := 0; k < 1+rng.IntN(8); k++ {
			if len(b) == 0 {
				break
			}
			at := rng.IntN(len(b))
			// Half the time a run of bytes, to hit a page header.
			n := 1
			if rng.IntN(2) == 0 {
				n = min(len(b)-at, 1+rng.IntN(64))
			}
			for j := at; j < at+n; j++ {
				b[j] ^= byte(1 + rng.IntN(255))
			}
			what += fmt.Sprintf(" %d+%d", at, n)
		}
		os.WriteFile(filepath.Join(dir, name), b, 0o600)
		cfg := s.config(false)
		cfg.Dir = dir
		_, trans := raft.NewInmemTransport("")
		cfg.Transport = trans
		n, err := Open(cfg)
		if err != nil {
			refused++
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("%s%s: error of several lines: %q", name, what, err)
			}
			continue
		}
		// Let it elect itself and apply the log: a damaged entry that
		// still decodes reaches the FSM, which must not panic either.
		deadline := time.Now().Add(2 * time.Second)
		for time.Now().Before(deadline) && (!n.IsLeader() || n.Raft().AppliedIndex() < n.Raft().LastIndex()) {
			time.Sleep(5 * time.Millisecond)
		}
		n.Close()
	}
	t.Logf("%d of %d damaged directories refused", refused, iters)
}

// BenchmarkCheckLog measures Open's check of raft.db: 1024 entries of
// 64 KiB (64 MiB), all decoded (no snapshot) or only walked (a snapshot
// holds them all); it reports MB/s of log checked.
//
//	go test -run x -bench CheckLog -benchtime 5x ./coordinator/
func BenchmarkCheckLog(b *testing.B) {
	path := filepath.Join(b.TempDir(), logFile)
	store, err := openBolt(path)
	if err != nil {
		b.Fatal(err)
	}
	const entries, size = 1024, 64 << 10
	data := make([]byte, size)
	for i := 0; i < entries; i += 64 {
		var batch []*raft.Log
		for j := i; j < i+64; j++ {
			batch = append(batch, &raft.Log{Index: uint64(j + 1), Term: 1, Type: raft.LogCommand, Data: data})
		}
		if err := store.StoreLogs(batch); err != nil {
			b.Fatal(err)
		}
	}
	store.Close()
	for _, tc := range []struct {
		name  string
		after uint64
	}{{"decode-all", 0}, {"walk-only", entries}} {
		b.Run(tc.name, func(b *testing.B) {
			b.SetBytes(entries * size)
			for i := 0; i < b.N; i++ {
				if _, err := checkLog(path, tc.after); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// FuzzCheckLog runs Open's raft.db check on arbitrary files, seeded with a
// small real one: it returns an error or a log state, and never panics.
//
//	go test -run x -fuzz FuzzCheckLog ./coordinator/
func FuzzCheckLog(f *testing.F) {
	path := filepath.Join(f.TempDir(), logFile)
	store, err := openBolt(path)
	if err != nil {
		f.Fatal(err)
	}
	for i := uint64(1); i <= 40; i++ {
		if err := store.StoreLog(&raft.Log{Index: i, Term: 1, Type: raft.LogCommand, Data: bytes.Repeat([]byte{byte(i)}, int(i*50))}); err != nil {
			f.Fatal(err)
		}
	}
	store.SetUint64(keyCurrentTerm, 1)
	store.Close()
	seed, err := os.ReadFile(path)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seed, uint64(0))
	f.Add(seed, uint64(20))
	f.Add(seed[:len(seed)/2], uint64(0))
	f.Fuzz(func(t *testing.T, b []byte, after uint64) {
		if len(b) == 0 {
			return // an empty raft.db is Open's case of a missing one
		}
		p := filepath.Join(t.TempDir(), logFile)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		ls, err := checkLog(p, after)
		if err == nil && ls.last != 0 && ls.first > ls.last {
			t.Fatalf("log %d..%d", ls.first, ls.last)
		}
	})
}

// FuzzReadMarker reads arbitrary marker files: an error or a marker of a
// known format, never a panic.
func FuzzReadMarker(f *testing.F) {
	f.Add([]byte(`{"format":1,"cluster_id":"c","node_id":"n","applied":42,"term":3,"servers":["n","m"]}`))
	f.Add([]byte(`{"format":2}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, markerFile), b, 0o600); err != nil {
			t.Fatal(err)
		}
		m, err := readMarker(dir)
		if err == nil && (m == nil || m.Format != markerFormat) {
			t.Fatalf("marker %+v", m)
		}
	})
}

// TestFreeListCountRefused sets the count on raft.db's free-list page to
// 2^40: bbolt would size a copy of the free list by it when it opens the
// file, and the process would die ("fatal error: out of memory", which no
// recover catches). Open refuses it before bbolt maps the file.
func TestFreeListCountRefused(t *testing.T) {
	s := newSolo(t, fastRaft)
	s.build(t, false)
	b, err := os.ReadFile(s.path(logFile))
	if err != nil {
		t.Fatal(err)
	}
	ne := binary.NativeEndian
	ps := uint64(ne.Uint32(b[24:]))
	for _, meta := range []uint64{0, ps} {
		p := ne.Uint64(b[meta+48:]) * ps
		ne.PutUint16(b[p+10:], 0xFFFF) // the count is in the first element
		ne.PutUint64(b[p+16:], 1<<40)
	}
	if err := os.WriteFile(s.path(logFile), b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.refused(t, false, ErrStateCorrupt); !strings.Contains(err.Error(), "free list") {
		t.Fatalf("error does not name the free list: %v", err)
	}
}

// TestLogGapCoveredBySnapshot: a follower that installs a snapshot keeps
// its older trailing entries and continues after the snapshot's index, so
// its log has a gap the snapshot covers (found by TestNemesis: a restarted
// follower was refused with "log entries 285..333 are missing", its
// snapshot at 333). Such a log is Raft's own; a gap after the snapshot is
// not.
func TestLogGapCoveredBySnapshot(t *testing.T) {
	path := filepath.Join(t.TempDir(), "raft.db")
	store, err := raftboltdb.NewBoltStore(path)
	if err != nil {
		t.Fatal(err)
	}
	var logs []*raft.Log
	for _, idx := range []uint64{1, 2, 3, 4, 5, 10, 11, 12} {
		logs = append(logs, &raft.Log{Index: idx, Term: 1, Type: raft.LogCommand, Data: []byte{byte(idx)}})
	}
	if err := store.StoreLogs(logs); err != nil {
		t.Fatal(err)
	}
	if err := store.SetUint64([]byte("CurrentTerm"), 1); err != nil {
		t.Fatal(err)
	}
	store.Close()
	if _, err := checkLog(path, 9); err != nil {
		t.Fatalf("a gap the snapshot at 9 covers: %v", err)
	}
	if _, err := checkLog(path, 8); err == nil || !strings.Contains(err.Error(), "9..9 are missing") {
		t.Fatalf("entry 9 after a snapshot at 8 is missing: %v", err)
	}
}
