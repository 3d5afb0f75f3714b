package coordinator

import (
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/fedzip/fedzip/dataset"
	"github.com/fedzip/fedzip/round"
)

// diskNode is a node on its bolt log and a TCP transport on 127.0.0.1,
// restartable on the same directory and address. With tls set, Raft runs
// peer TLS and the node is advertised as localhost:PORT.
type diskNode struct {
	id, dir, addr, adv string
	tls                *tls.Config
	node               *Node
}

// diskRaftPlain runs disk clusters' Raft over plain TCP instead of peer
// TLS, to compare them: FEDZIP_RAFT_PLAIN=1 go test -bench ...
var diskRaftPlain = os.Getenv("FEDZIP_RAFT_PLAIN") != ""

func (d *diskNode) open(t testing.TB, run *RunConfig, bootstrap bool, tune func(*raft.Config)) {
	t.Helper()
	n, err := Open(Config{ID: d.id, Dir: d.dir, RaftAddr: d.addr, RaftAdvertise: d.adv, RaftTLS: d.tls, Bootstrap: bootstrap, Run: run, Raft: tune,
		Tick: 10 * time.Millisecond, JoinSecret: "s3cret", ApplyTimeout: 2 * time.Second,
		RegisterRate: 1e6, RegisterBurst: 1 << 20}) // BenchmarkIngest registers 1000 clients at once
	if err != nil {
		t.Fatal(err)
	}
	d.node = n
}

// diskCluster starts n nodes: the first bootstraps, the others are added
// as voters.
func diskCluster(t testing.TB, n int, run *RunConfig, tune func(*raft.Config)) []*diskNode {
	t.Helper()
	base := t.TempDir()
	ds := make([]*diskNode, n)
	var peer *tls.Config
	if !diskRaftPlain {
		peer = peerTLS(t, devPKI(t))
	}
	for i := range ds {
		ds[i] = &diskNode{id: fmt.Sprintf("d%d", i), dir: filepath.Join(base, fmt.Sprint(i)), addr: freeAddr(t), tls: peer}
		if peer != nil {
			_, port, _ := net.SplitHostPort(ds[i].addr)
			ds[i].adv = "localhost:" + port
		}
	}
	ds[0].open(t, run, true, tune)
	for _, d := range ds[1:] {
		d.open(t, run, false, tune)
		// With test timeouts a leader that waits for the new voter's first
		// (TLS) connection may step down; add it through the next one.
		waitFor(t, "a voter added", func() bool { return leaderOfDisk(t, ds).AddVoter(d.id, d.node.Address()) == nil })
	}
	t.Cleanup(func() {
		for _, d := range ds {
			if d.node != nil {
				d.node.Close()
			}
		}
	})
	return ds
}

func liveNodes(ds []*diskNode) []*Node {
	var out []*Node
	for _, d := range ds {
		if d.node != nil {
			out = append(out, d.node)
		}
	}
	return out
}

func leaderOfDisk(t testing.TB, ds []*diskNode) *Node {
	t.Helper()
	deadline := time.Now().Add(time.Minute) // elections churn on a starved machine
	for time.Now().Before(deadline) {
		for _, n := range liveNodes(ds) {
			if n.IsLeader() {
				return n
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatal("no leader")
	return nil
}

// TestRollingRestart restarts every node of a 3-node cluster in turn, on
// its disk state, while rounds go on. Every round completes, and at the end
// all replicas hold the same model.
func TestRollingRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("disk cluster in -short mode")
	}
	fed, _ := dataset.Synthetic(1, 1, 6, 3)
	ds := diskCluster(t, 3, testRun(0), fastRaft)
	// Under -race on a starved machine the fast Raft timeouts make
	// elections churn: every write goes through whoever leads then.
	waitFor(t, "init", func() bool { return leaderOfDisk(t, ds).FSM().View().Initialised })
	clients := registerClientsVia(t, func() *Node { return leaderOfDisk(t, ds) }, fed, 6)
	nodes := func() []*Node { return liveNodes(ds) }
	driveRound(t, nodes, clients, fed)
	for _, d := range ds {
		d.node.Close()
		d.node = nil
		driveRound(t, nodes, clients, fed)
		d.open(t, nil, false, fastRaft)
		driveRound(t, nodes, clients, fed)
	}
	// 1 round, then 2 around each of the 3 restarts.
	const want = 7
	waitFor(t, "every replica at version 7 with the same model", func() bool {
		l := leaderOfDisk(t, ds)
		for _, n := range nodes() {
			if n.FSM().View().Version != want || n.FSM().ModelHash() != l.FSM().ModelHash() {
				return false
			}
		}
		return true
	})
}

// BenchmarkFailover measures, with raft's default timeouts on loopback,
// the time from stopping the leader to the next committed update through
// a new leader, over 10 kills; it reports the median (ms/failover).
//
//	go test -run x -bench Failover -benchtime 1x ./coordinator/
func BenchmarkFailover(b *testing.B) {
	fed, _ := dataset.Synthetic(1, 1, 6, 3)
	for i := 0; i < b.N; i++ {
		ds := diskCluster(b, 3, testRun(0), nil)
		leader := leaderOfDisk(b, ds)
		waitFor(b, "init", func() bool { return leader.FSM().View().Initialised })
		clients := registerClients(b, leader, fed, 6)
		var ids []round.ClientID
		for id := range clients {
			ids = append(ids, id)
		}
		slices.Sort(ids)
		model, _ := leader.FSM().Model()
		zero := make([]float32, len(model))
		var times []float64
		for kill := 0; kill < 10; kill++ {
			var v View
			waitFor(b, "an open round", func() bool {
				l := leaderOfDisk(b, ds)
				for _, id := range ids { // the clients keep polling the leader
					l.touch(id)
				}
				v = l.FSM().View()
				return v.Phase == round.Collecting && len(v.Pending) > 0
			})
			var dead *diskNode
			l := leaderOfDisk(b, ds)
			for _, d := range ds {
				if d.node == l {
					dead = d
				}
			}
			t0 := time.Now()
			dead.node.Close()
			dead.node = nil
			id := v.Pending[0]
			payload := clientPayload(b, leader.FSM(), v.Round, zero)
			for {
				nl := leaderOfDisk(b, ds)
				if _, err := nl.Submit(id, v.Round, 10, 0, payload); err == nil {
					break
				}
				time.Sleep(time.Millisecond)
			}
			times = append(times, float64(time.Since(t0).Milliseconds()))
			dead.open(b, nil, false, nil)
			waitFor(b, "catch up", func() bool {
				return dead.node.FSM().View().Applied >= leaderOfDisk(b, ds).FSM().View().Applied
			})
		}
		sort.Float64s(times)
		b.ReportMetric((times[4]+times[5])/2, "ms/failover")
		b.ReportMetric(times[9], "max-ms")
	}
}
