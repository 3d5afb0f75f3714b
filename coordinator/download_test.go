package coordinator

import (
	"bytes"
	"encoding/gob"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/fedzip/fedzip/dataset"
	"github.com/fedzip/fedzip/gradient"
	"github.com/fedzip/fedzip/round"
	"github.com/fedzip/fedzip/runspec"
	"github.com/fedzip/fedzip/transport"
)

// downloadLog is the log of a run with a download codec: init, three
// clients, and rounds of three dense updates each. It returns the entries
// of each round separately (the first element holds init and the
// registrations).
func downloadLog(t *testing.T, codec string, maxLag, rounds int) (raw []byte, parts [][]*raft.Log) {
	t.Helper()
	cfg := RunConfig{Spec: runspec.Spec{Model: "mlp:8", InputDim: 6, Classes: 3, InitSeed: 3, Strategy: "fedavg",
		Round: round.Config{PerRound: 3, MinClients: 1, Seed: 2}, TaskSeed: 9, LocalEpochs: 1, BatchSize: 1, LR: 0.1,
		UploadCodec: "none", DownloadCodec: codec, DownloadMaxLag: maxLag}}
	raw, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	f := NewFSM()
	if err := f.init(raw); err != nil {
		t.Fatal(err)
	}
	n := f.n
	idx := uint64(0)
	entry := func(c command) *raft.Log {
		idx++
		return &raft.Log{Index: idx, Type: raft.LogCommand, Data: c.encode()}
	}
	first := []*raft.Log{entry(command{Type: cmdInit, Config: raw})}
	for i := 0; i < 3; i++ {
		first = append(first, entry(command{Type: cmdRegister, Name: "c", TokenHash: []byte{1}, Examples: 5}))
	}
	parts = append(parts, first)
	cands := []round.ClientID{1, 2, 3}
	for r := 1; r <= rounds; r++ {
		p := []*raft.Log{entry(command{Type: cmdOpen, Candidates: cands})}
		for _, id := range cands {
			d := make([]float32, n)
			for i := range d {
				// Different in every round and client, and mostly small,
				// so that top-k leaves a residual.
				d[i] = float32(math.Sin(float64(r*1000+int(id)*100+i))) * 0.01
				if (i+r)%17 == 0 {
					d[i] *= 30
				}
			}
			p = append(p, entry(command{Type: cmdSubmit, Round: int64(r), Client: id, Examples: uint64(id), Payload: gradient.AppendFloat32s(nil, d)}))
		}
		p = append(p, entry(command{Type: cmdClose}))
		parts = append(parts, p)
	}
	return raw, parts
}

func applyAll(t *testing.T, f *FSM, logs []*raft.Log, batch bool) {
	t.Helper()
	var res []any
	if batch {
		res = f.ApplyBatch(logs)
	} else {
		for _, l := range logs {
			res = append(res, f.Apply(l))
		}
	}
	for i, r := range res {
		if err, ok := r.(error); ok {
			t.Fatalf("entry %d: %v", logs[i].Index, err)
		}
	}
}

// noModel keys, in downloads, the answer to a client that holds no model.
const noModel = math.MaxUint64 - 1

// downloads returns every download a's clients can ask for, by the
// version they hold: 0 (the initial model) to one past the current

// applyRound applies a round's log entries p to a one at a time and to b
// in batches, and to c (restored from a's snapshot, nil before) in
// batches. With snap, a is snapshotted after the open and one update of
// the round and c restored from it (its downloads checked against a's);
// it returns c.
func applyRound(t *testing.T, a, b, c *FSM, p []*raft.Log, snap bool) *FSM {
	t.Helper()
	if snap {
		applyAll(t, a, p[:2], false)
		s, err := a.Snapshot()
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		if err := s.Persist(&memSink{Buffer: &buf}); err != nil {
			t.Fatal(err)
		}
		c = NewFSM()
		if err := c.Restore(io.NopCloser(&buf)); err != nil {
			t.Fatal(err)
		}
		sameDownloads(t, "restored mid-round", downloads(a), downloads(c))
		applyAll(t, a, p[2:], false)
		applyAll(t, c, p[2:], false)
	} else {
		applyAll(t, a, p, false)
		if c != nil {
			applyAll(t, c, p, true)
		}
	}
	applyAll(t, b, p, true)
	return c
}

// version, garbage, and none (noModel).
func downloads(f *FSM) map[uint64]Download {
	out := map[uint64]Download{}
	v := f.Progress().Version
	for _, have := range append([]uint64{1 << 40, math.MaxUint64}, func() []uint64 {
		var hs []uint64
		for h := uint64(0); h <= v+1; h++ {
			hs = append(hs, h)
		}
		return hs
	}()...) {
		d, ok := f.ServeDownload(have, true)
		if !ok {
			panic("not initialised")
		}
		out[have] = d
	}
	out[noModel], _ = f.ServeDownload(0, false)
	return out
}

func sameDownloads(t *testing.T, what string, a, b map[uint64]Download) {
	t.Helper()
	for have, da := range a {
		db := b[have]
		if !bytes.Equal(da.Payload, db.Payload) || da.Delta != db.Delta || da.Base != db.Base || da.Version != db.Version ||
			da.ModelCRC != db.ModelCRC || da.PayloadCRC != db.PayloadCRC || da.Codec != db.Codec {
			t.Fatalf("%s: have %d: %d bytes (delta %v) vs %d bytes (delta %v)", what, have, len(da.Payload), da.Delta, len(db.Payload), db.Delta)
		}
	}
}

// detCodec draws random coordinates and rounds stochastically, so that
// replicas agree only if they seed the draws alike.
const detCodec = "randk=0.2,bits=4,stochastic=on"

// TestDownloadDeterministicAcrossReplicas feeds the same log to two FSMs,
// one entry at a time and in batches, and to a third restored from a
// snapshot of the first taken mid-round: after every round all three serve
// identical bytes for every held version, and the deltas applied to what a
// client held reproduce the served client model bit for bit.
func TestDownloadDeterministicAcrossReplicas(t *testing.T) {
	const rounds, maxLag = 7, 3
	_, parts := downloadLog(t, detCodec, maxLag, rounds)
	a, b := NewFSM(), NewFSM()
	applyAll(t, a, parts[0], false)
	applyAll(t, b, parts[0], true)
	var c *FSM
	// held[v] is the client model at version v, as a client keeps it.
	held := map[uint64][]float32{}
	m0, _ := a.ClientModel()
	held[0] = m0
	for r := 1; r <= rounds; r++ {
		p := parts[r]
		c = applyRound(t, a, b, c, p, r == 4)
		da := downloads(a)
		if again, _ := a.ServeDownload(0, false); &again.Payload[0] != &da[noModel].Payload[0] {
			t.Fatalf("round %d: a second whole-model download serialised the model again", r)
		}
		sameDownloads(t, fmt.Sprintf("round %d, replicas", r), da, downloads(b))
		if c != nil {
			sameDownloads(t, fmt.Sprintf("round %d, restored", r), da, downloads(c))
			if a.ModelHash() != c.ModelHash() {
				t.Fatalf("round %d: restored global model diverged", r)
			}
			mc, _ := c.ClientModel()
			ma, _ := a.ClientModel()
			if !slices.Equal(ma, mc) {
				t.Fatalf("round %d: restored client model diverged", r)
			}
		}
		cm, v := a.ClientModel()
		if v != uint64(r) {
			t.Fatalf("round %d: version %d", r, v)
		}
		global, _ := a.Model()
		if slices.Equal(global, cm) {
			t.Fatalf("round %d: the client model is the global model: the codec sent everything", r)
		}
		held[v] = cm
		for have, d := range da {
			wantDelta := have <= v && v-have <= maxLag // noModel > v
			if d.Delta != wantDelta || d.Version != v {
				t.Fatalf("round %d: have %d: delta %v version %d, want delta %v", r, have, d.Delta, d.Version, wantDelta)
			}
			if d.ModelCRC != gradient.ModelCRC(cm) || d.PayloadCRC != transport.Checksum(d.Payload) {
				t.Fatalf("round %d: have %d: model crc %08x, payload crc %08x", r, have, d.ModelCRC, d.PayloadCRC)
			}
			if !d.Delta {
				if got := decodeFloat32s(d.Payload); !slices.Equal(got, cm) {
					t.Fatalf("round %d: have %d: the whole model is not the client model", r, have)
				}
				continue
			}
			if d.Base != have || d.Codec != detCodec || (have == v) != (len(d.Payload) == 0) {
				t.Fatalf("round %d: have %d: base %d codec %q, %d bytes", r, have, d.Base, d.Codec, len(d.Payload))
			}
			m := slices.Clone(held[have])
			got, err := gradient.ApplyDownload(m, int(have), d.Payload, gradient.Limits{MaxParams: len(m)})
			if err != nil || uint64(got) != v || !slices.Equal(m, cm) {
				t.Fatalf("round %d: have %d: applied to version %d (%v), equal %v", r, have, got, err, slices.Equal(m, cm))
			}
			if len(d.Payload) >= 4*len(cm) {
				t.Fatalf("round %d: have %d: delta of %d bytes for a model of %d", r, have, len(d.Payload), 4*len(cm))
			}
		}
	}
}

// TestDownloadDenseUnchanged checks that without a download codec every
// download is the global model as little-endian float32, whatever version
// the client says it holds, and that the run's JSON does not mention
// downloads (logs written before download codecs existed decode alike).
func TestDownloadDenseUnchanged(t *testing.T) {
	for _, codec := range []string{"", "none"} {
		raw, parts := downloadLog(t, codec, 0, 2)
		if codec == "" && strings.Contains(string(raw), "download") {
			t.Fatalf("run config %s mentions downloads", raw)
		}
		f := NewFSM()
		for _, p := range parts {
			applyAll(t, f, p, false)
		}
		global, v := f.Model()
		cm, _ := f.ClientModel()
		if !slices.Equal(global, cm) || v != 2 {
			t.Fatal("without a download codec clients must train from the global model")
		}
		want := gradient.AppendFloat32s(nil, global)
		for have, d := range downloads(f) {
			if d.Delta || d.Version != v || d.Codec != "float32" || !bytes.Equal(d.Payload, want) {
				t.Fatalf("codec %q, have %d: delta %v, %d bytes", codec, have, d.Delta, len(d.Payload))
			}
		}
		if f.Progress().Config.TaskDownloadCodec() != "" {
			t.Fatalf("codec %q: task carries a download codec", codec)
		}
	}
}

// TestRunConfigDownloadCodec checks the validation of the download codec.
func TestRunConfigDownloadCodec(t *testing.T) {
	for _, tc := range []struct {
		codec string
		lag   int
		ok    bool
	}{
		{"", 0, true}, {"none", 0, true}, {"topk=0.1,bits=8", 0, true}, {"stc", 5, true}, {"topk=0.1,bits=8", runspec.MaxDownloadMaxLag, true},
		{"topk=0.1,momentum=0.9", 0, false}, {"dgc", 0, false}, {"nonsense", 0, false}, {"topk=0.1", -1, false}, {"topk=0.1", runspec.MaxDownloadMaxLag + 1, false},
		{"none", -1, false},
	} {
		run := testRun(1)
		run.DownloadCodec, run.DownloadMaxLag = tc.codec, tc.lag
		if err := run.Validate(); (err == nil) != tc.ok {
			t.Errorf("codec %q lag %d: %v, want ok %v", tc.codec, tc.lag, err, tc.ok)
		}
	}
}

// TestRestoreRefusesMissingDownloadState: a snapshot of a run with a
// download codec but no encoder state would make the replica serve other
// bytes than its peers; it is refused.
func TestRestoreRefusesMissingDownloadState(t *testing.T) {
	_, parts := downloadLog(t, "topk=0.1,bits=8", 2, 2)
	a := NewFSM()
	for _, p := range parts {
		applyAll(t, a, p, false)
	}
	snap, err := a.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	snap.(*snapshot).Download = nil
	var buf bytes.Buffer
	if err := snap.Persist(&memSink{Buffer: &buf}); err != nil {
		t.Fatal(err)
	}
	if err := NewFSM().Restore(io.NopCloser(&buf)); err == nil {
		t.Fatal("restored a snapshot without the download encoder's state")
	}
	snap, _ = a.Snapshot()
	snap.(*snapshot).Download.History[0][10] ^= 1
	buf.Reset()
	snap.Persist(&memSink{Buffer: &buf})
	if err := NewFSM().Restore(io.NopCloser(&buf)); err == nil {
		t.Fatal("restored a damaged download encoder state")
	}
}

func decodeFloat32s(b []byte) []float32 {
	out, err := gradient.DecodeFloat32s(nil, b)
	if err != nil {
		return nil
	}
	return out
}

// TestLatticeDownloadAcrossRestore runs a log with the lattice download
// codec through an FSM applying entry by entry, one applying batches and
// one restored from a snapshot taken mid-round: after every round all
// three serve the same bytes for every version a client may hold. A
// client that holds a model always gets one message, never the whole
// model: from its version while the deltas are kept, else from version 0
// (also from a version from the future); its replica, kept since the
// version it held, then holds the served client model bit for bit. Only a
// client that holds nothing gets the whole model.
func TestLatticeDownloadAcrossRestore(t *testing.T) {
	const rounds, maxLag = 6, 2
	_, parts := downloadLog(t, "lattice", maxLag, rounds)
	a, b := NewFSM(), NewFSM()
	applyAll(t, a, parts[0], false)
	applyAll(t, b, parts[0], true)
	init, _ := a.ClientModel()
	var c *FSM
	// replicas[v] is a client's replica at version v.
	replicas := map[uint64]*gradient.Replica{}
	rep0, err := gradient.NewReplica(init)
	if err != nil {
		t.Fatal(err)
	}
	replicas[0] = rep0
	fromZero := 0
	for r := 1; r <= rounds; r++ {
		p := parts[r]
		c = applyRound(t, a, b, c, p, r == 4)
		da := downloads(a)
		sameDownloads(t, fmt.Sprintf("round %d, replicas", r), da, downloads(b))
		if c != nil {
			sameDownloads(t, fmt.Sprintf("round %d, restored", r), da, downloads(c))
		}
		cm, v := a.ClientModel()
		for have, d := range da {
			if have == noModel {
				if d.Delta || !slices.Equal(decodeFloat32s(d.Payload), cm) {
					t.Fatalf("round %d: a client holding nothing: delta %v", r, d.Delta)
				}
				continue
			}
			if !d.Delta || d.Version != v || d.ModelCRC != gradient.ModelCRC(cm) || d.Codec != "lattice" {
				t.Fatalf("round %d: have %d: delta %v version %d codec %q", r, have, d.Delta, d.Version, d.Codec)
			}
			kept := have <= v && v-have <= maxLag && have > 0
			switch {
			case have == v && len(d.Payload) != 0:
				t.Fatalf("round %d: %d bytes to a client at the current version", r, len(d.Payload))
			case have != v && kept && d.Base != have, have != v && !kept && d.Base != 0:
				t.Fatalf("round %d: have %d: a sync from version %d", r, have, d.Base)
			}
			if d.Base == 0 && have > 0 && have != v {
				fromZero++
			}
			rep, ok := replicas[have]
			if !ok {
				continue
			}
			// Apply to a replica restored from the held one's state file.
			rep, err := gradient.ReadReplica(init, rep.AppendBinary(nil), gradient.Limits{MaxParams: len(init)})
			if err != nil {
				t.Fatal(err)
			}
			got, err := rep.Apply(d.Payload, gradient.Limits{MaxParams: len(init)})
			if err != nil || uint64(got) != v || !slices.Equal(rep.Model(), cm) {
				t.Fatalf("round %d: have %d: applied to version %d (%v), equal %v", r, have, got, err, slices.Equal(rep.Model(), cm))
			}
			if have == v-1 {
				replicas[v] = rep
			}
		}
	}
	if fromZero == 0 {
		t.Fatal("no sync from version 0 to a client behind: the test does not cover it")
	}
	if cm, _ := a.ClientModel(); slices.Equal(cm, init) {
		t.Fatal("the lattice codec never moved the client model")
	}
}

// TestRestoreOldDownloadSnapshot restores a snapshot written before the
// download encoder's state had the lattice's fields (encoded with the old
// type): it restores, and serves the same bytes as the FSM it was taken
// from.
func TestRestoreOldDownloadSnapshot(t *testing.T) {
	_, parts := downloadLog(t, detCodec, 3, 3)
	a := NewFSM()
	for _, p := range parts {
		applyAll(t, a, p, false)
	}
	snap, err := a.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	s := snap.(*snapshot)
	// The snapshot type and gradient.ServerState as they were.
	type oldServerState struct {
		Version int
		Model   []float32
		History [][]byte
	}
	type oldSnapshot struct {
		Config     []byte
		Clients    []clientRecord
		NextID     round.ClientID
		Applied    uint64
		Machine    round.State
		Accepted   []command
		LastClosed round.Closed
		Strategy   []byte
		Nodes      []NodeInfo
		Download   *oldServerState
	}
	old := oldSnapshot{Config: s.Config, Clients: s.Clients, NextID: s.NextID, Applied: s.Applied, Machine: s.Machine, Accepted: s.Accepted,
		LastClosed: s.LastClosed, Strategy: s.Strategy, Nodes: s.Nodes,
		Download: &oldServerState{Version: s.Download.Version, Model: s.Download.Model, History: s.Download.History}}
	var buf bytes.Buffer
	if err := gob.NewEncoder(&buf).Encode(old); err != nil {
		t.Fatal(err)
	}
	c := NewFSM()
	if err := c.Restore(io.NopCloser(&buf)); err != nil {
		t.Fatal(err)
	}
	sameDownloads(t, "restored from the old encoding", downloads(a), downloads(c))
	if a.ModelHash() != c.ModelHash() {
		t.Fatal("the restored global model differs")
	}
}

// TestLatticeRestartFromDisk runs a single node with the lattice download
// codec on its bolt log and file snapshots, takes a snapshot after round
// 2, closes the node after round 3 and opens it again on the same
// directory: restored from the snapshot and the log after it, it serves
// the same bytes for every version a client may hold.
func TestLatticeRestartFromDisk(t *testing.T) {
	fed, _ := dataset.Synthetic(1, 1, 4, 3)
	dir := t.TempDir()
	addr := freeAddr(t)
	run := testRun(0)
	run.DownloadCodec, run.DownloadMaxLag = "lattice", 1
	open := func() *Node {
		n, err := Open(Config{ID: "solo", Dir: dir, RaftAddr: addr, Bootstrap: true, Run: run, Raft: fastRaft, Tick: 10 * time.Millisecond, JoinSecret: "s3cret"})
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	n := open()
	waitFor(t, "init", func() bool { return leaderOf(t, []*Node{n}).FSM().View().Initialised })
	clients := registerClients(t, n, fed, 4)
	for r := 1; r <= 3; r++ {
		driveRound(t, func() []*Node { return []*Node{n} }, clients, fed)
		waitFor(t, fmt.Sprintf("round %d to close", r), func() bool { return n.FSM().Progress().Version >= uint64(r) })
		if r == 2 {
			if err := n.Raft().Snapshot().Error(); err != nil {
				t.Fatal(err)
			}
		}
	}
	before := downloads(n.FSM())
	applied := n.FSM().Progress().Applied
	n.Close()

	n2 := open()
	defer n2.Close()
	waitFor(t, "replay", func() bool { return n2.FSM().Progress().Applied >= applied })
	sameDownloads(t, "restarted", before, downloads(n2.FSM()))
	if d := before[1]; !d.Delta || d.Base != 0 || len(d.Payload) == 0 {
		t.Fatalf("a client at version 1 of 3 with a lag of 1: delta %v from version %d, %d bytes; want a sync from version 0", d.Delta, d.Base, len(d.Payload))
	}
}
