package gradient

import (
	"encoding/json"
	"errors"
	"slices"
	"testing"
)

// Red team: a hostile coordinator (or a MITM without TLS) crafts lattice
// syncs for a client's Replica. Each must be refused with an error,
// without a panic, leaving the replica intact.

// heldReplica returns a replica of a run with tensors that holds the
// server's version 3 (on the lattice, with steps), and the initial model.
func heldReplica(t *testing.T, n int, tensors []int) (*Replica, []float32) {
	t.Helper()
	run := newLatticeRun(t, "topk=0.05,bits=lattice", n, 5, tensors)
	init := slices.Clone(run.global)
	for range 3 {
		run.publish(t)
	}
	r, err := NewReplica(init)
	if err != nil {
		t.Fatal(err)
	}
	m, _ := run.srv.AppendUpdate(nil, 0)
	if _, err := r.Apply(m, Limits{MaxParams: n}); err != nil {
		t.Fatal(err)
	}
	if r.steps == nil || !slices.Equal(r.tensors, tensors) {
		t.Fatalf("replica holds tensors %v steps %v", r.tensors, r.steps)
	}
	return r, init
}

// TestRedteamSyncWithMoreTensors: a sync from the held version whose
// tensor table has more tensors than the replica's (with other steps)
// used to index the replica's steps out of range: a panic from network
// bytes.
func TestRedteamSyncWithMoreTensors(t *testing.T) {
	const n = 300
	r, _ := heldReplica(t, n, []int{200, 100})
	v0, m0 := r.Version(), slices.Clone(r.Model())
	steps := []float32{r.steps[0] / 2, r.steps[1] / 2, r.steps[1] / 2}
	msg := appendLatticeMessage(nil, n, v0, v0+1, []int{100, 100, 100}, steps, []int32{5}, []int32{1})
	var err error
	func() {
		defer func() {
			if p := recover(); p != nil {
				t.Fatalf("Apply panicked on a sync with 3 tensors to a replica of 2: %v", p)
			}
		}()
		_, err = r.Apply(msg, Limits{MaxParams: n})
	}()
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("a sync with another tensor table: %v, want ErrCorrupt", err)
	}
	if r.Version() != v0 || sameBits(r.Model(), m0) >= 0 {
		t.Fatal("a refused sync changed the replica")
	}
}

// TestRedteamSyncWithMovedTensors: a sync from the held version with the
// replica's steps but another split of the model into tensors would move
// coordinates to another tensor's step without recomputing them: the
// replica's model would no longer be init + step·counts, and would change
// when read back from its file. It must be refused.
func TestRedteamSyncWithMovedTensors(t *testing.T) {
	const n = 300
	r, init := heldReplica(t, n, []int{200, 100})
	v0, m0 := r.Version(), slices.Clone(r.Model())
	msg := appendLatticeMessage(nil, n, v0, v0+1, []int{100, 200}, slices.Clone(r.steps), []int32{5}, []int32{1})
	if _, err := r.Apply(msg, Limits{MaxParams: n}); err == nil {
		back, rerr := ReadReplica(init, r.AppendBinary(nil), Limits{MaxParams: n})
		if rerr != nil {
			t.Fatalf("the replica's own state does not read back: %v", rerr)
		}
		if i := sameBits(back.Model(), r.Model()); i >= 0 {
			t.Fatalf("after a sync that moved tensors the replica's model differs from its state at coordinate %d", i)
		}
		t.Fatal("a sync that splits the model into other tensors was applied")
	}
	if r.Version() != v0 || sameBits(r.Model(), m0) >= 0 {
		t.Fatal("a refused sync changed the replica")
	}
}

// TestRedteamSyncCacheStaleHaves: an authenticated client that asks with
// a different stale have_version on every call (each further behind than
// the kept deltas, or from the future) is sent the same sync from
// version 0. The composed-sync cache must not keep a copy of it per have
// (up to maxSyncCache copies of a message as large as the model's nonzero
// counts), and every such have must be served from the cache.
func TestRedteamSyncCacheStaleHaves(t *testing.T) {
	const n, maxLag, versions = 2000, 3, 80
	run := newLatticeRun(t, "topk=0.05,bits=lattice", n, maxLag, nil)
	for range versions {
		run.publish(t)
	}
	s := run.srv
	from0 := s.sync(0)
	for have := 1; have < versions-maxLag; have++ {
		if b := s.sync(have); &b[0] != &from0[0] {
			t.Fatalf("have %d: a copy of the sync from version 0, not the cached one", have)
		}
	}
	for _, have := range []int{versions + 1, 1 << 40, -5} {
		if b := s.sync(have); &b[0] != &from0[0] {
			t.Fatalf("have %d: a copy of the sync from version 0, not the cached one", have)
		}
	}
	// Every distinct message the cache holds is one a client in reach of
	// the kept deltas (or at version 0) is sent.
	distinct := map[*byte]bool{}
	s.lat.mu.Lock()
	for _, b := range s.lat.cache {
		distinct[&b[0]] = true
	}
	s.lat.mu.Unlock()
	if len(distinct) > maxLag+1 {
		t.Fatalf("the sync cache holds %d distinct messages, want at most %d", len(distinct), maxLag+1)
	}
	// The kept deltas still compose for clients in reach.
	for have := versions - maxLag; have < versions; have++ {
		h, err := ReadHeader(s.sync(have), Limits{MaxParams: n})
		if err != nil || h.Base != have {
			t.Fatalf("have %d: sync from %d (%v), want the composed deltas", have, h.Base, err)
		}
	}
}

// BenchmarkRedteamSyncUncached is the leader's work for one download
// request that misses the sync cache (a client that names a have no other
// client named this version): the composition of the most deltas kept
// (maxLag 20, the default), the sync from version 0, and for scale the
// whole model a client without one is sent, on a model of the 2NN's size.
func BenchmarkRedteamSyncUncached(b *testing.B) {
	const n, maxLag, versions = 199210, 20, 60
	run := newLatticeRun(b, "lattice", n, maxLag, nil)
	for range versions {
		run.publish(b)
	}
	s := run.srv
	for _, c := range []struct {
		name string
		have int
	}{{"compose20", versions - maxLag}, {"compose1", versions - 1}, {"from0", 0}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				s.lat.mu.Lock()
				s.lat.cache = nil
				s.lat.mu.Unlock()
				b.SetBytes(int64(len(s.sync(c.have))))
			}
		})
	}
	b.Run("whole", func(b *testing.B) {
		b.ReportAllocs()
		var dst []byte
		for b.Loop() {
			dst = s.AppendFull(dst[:0])
			b.SetBytes(int64(len(dst)))
		}
	})
}

// TestRedteamSyncCacheFull: with more kept deltas than the cache holds
// (--download-max-lag up to 1000), a client naming a different have in
// reach on every call used to make the leader compose up to maxLag deltas
// per request, without end (BenchmarkRedteamSyncUncached: ~5 ms for 20
// deltas of the 2NN). Once the cache is full, the haves it does not hold
// share the sync from version 0: at most maxSyncCache compositions per
// version, whatever the requests.
func TestRedteamSyncCacheFull(t *testing.T) {
	const n, maxLag, versions = 20000, 150, 160
	run := newLatticeRun(t, "topk=0.001,bits=lattice", n, maxLag, nil)
	for range versions {
		run.publish(t)
	}
	s := run.srv
	from0 := s.sync(0)
	composed := map[*byte]bool{}
	for have := versions - 1; have >= versions-maxLag; have-- {
		b := s.sync(have)
		if &b[0] != &from0[0] {
			composed[&b[0]] = true
		}
	}
	if len(composed) < maxSyncCache/2 {
		t.Fatalf("only %d haves got composed deltas: the test does not reach the cache's bound", len(composed))
	}
	if len(composed) > maxSyncCache {
		t.Fatalf("%d compositions for one version, want at most %d", len(composed), maxSyncCache)
	}
	// What the haves beyond the cache share reconstructs the model.
	r, _ := NewReplica(s.lat.init)
	if _, err := r.Apply(from0, Limits{MaxParams: n}); err != nil {
		t.Fatal(err)
	}
	if sameBits(r.Model(), s.Model()) >= 0 {
		t.Fatal("the sync from version 0 does not give the server's model")
	}
}

// TestRedteamSyncStreamOfManySyncs: a hostile coordinator sends a
// download stream of thousands of tiny lattice syncs from version 0
// (~40 bytes each, within the stream's byte limit): each resets the
// replica to the initial model, O(n) work for a few bytes, O(n²/40) for
// the stream (a CPU bomb; finer steps message after message likewise
// rescale every count). The coordinator sends one sync per download: a
// lattice sync must be alone in its stream, refused otherwise before it
// changes anything.
func TestRedteamSyncStreamOfManySyncs(t *testing.T) {
	const n = 1 << 12
	init := make([]float32, n)
	r, err := NewReplica(init)
	if err != nil {
		t.Fatal(err)
	}
	one := appendLatticeMessage(nil, n, 0, 1, []int{n}, nil, nil, nil)
	var stream []byte
	for len(stream)+len(one) <= 4*n {
		stream = append(stream, one...)
	}
	if len(stream)/len(one) < 100 {
		t.Fatalf("only %d syncs in the stream", len(stream)/len(one))
	}
	if _, err := r.Apply(one, Limits{MaxParams: n}); err != nil {
		t.Fatalf("one sync from version 0: %v", err)
	}
	r, _ = NewReplica(init)
	if _, err := r.Apply(stream, Limits{MaxParams: n, MaxBytes: 4 * n}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("a stream of %d syncs: %v, want ErrCorrupt", len(stream)/len(one), err)
	}
	if r.Version() != 0 {
		t.Fatalf("a refused stream left the replica at version %d", r.Version())
	}
}

// TestRedteamSyncCountsAtTheEdge: a hostile coordinator drives a count to
// maxLatticeCount, then sends a sync that pushes it beyond, or one at
// half the steps (which doubles every count), or a step at the float32
// edge: each is refused and the replica keeps what it held.
func TestRedteamSyncCountsAtTheEdge(t *testing.T) {
	const n = 64
	init := make([]float32, n)
	r, err := NewReplica(init)
	if err != nil {
		t.Fatal(err)
	}
	lim := Limits{MaxParams: n}
	steps := []float32{0x1p-20}
	if _, err := r.Apply(appendLatticeMessage(nil, n, 0, 1, []int{n}, steps, []int32{3}, []int32{maxLatticeCount}), lim); err != nil {
		t.Fatalf("a count at the bound: %v", err)
	}
	m0 := slices.Clone(r.Model())
	for _, c := range []struct {
		name  string
		msg   []byte
		valid bool
	}{
		{"count beyond the bound", appendLatticeMessage(nil, n, 1, 2, []int{n}, steps, []int32{3}, []int32{1}), false},
		{"half the steps", appendLatticeMessage(nil, n, 1, 2, []int{n}, []float32{0x1p-21}, []int32{4}, []int32{1}), false},
		{"a step too large", appendLatticeMessage(nil, n, 1, 2, []int{n}, []float32{0x1p100}, []int32{4}, []int32{1}), false},
		{"a subnormal step", appendLatticeMessage(nil, n, 0, 2, []int{n}, []float32{0x1p-127}, []int32{4}, []int32{1}), false},
		{"version going back", appendLatticeMessage(nil, n, 1, 1, []int{n}, steps, []int32{4}, []int32{1}), false},
	} {
		if _, err := r.Apply(c.msg, lim); err == nil {
			t.Fatalf("%s: applied", c.name)
		}
		if r.Version() != 1 || sameBits(r.Model(), m0) >= 0 {
			t.Fatalf("%s: the refused sync changed the replica", c.name)
		}
	}
	// The bound holds from version 0 too: a fresh sync replaces it all.
	if _, err := r.Apply(appendLatticeMessage(nil, n, 0, 2, []int{n}, []float32{0x1p-21}, []int32{4}, []int32{1}), lim); err != nil {
		t.Fatalf("a sync from version 0 at finer steps: %v", err)
	}
	if r.Model()[3] != 0 || r.Model()[4] != 0x1p-21 {
		t.Fatalf("after a sync from version 0: %v %v", r.Model()[3], r.Model()[4])
	}
}

// TestRedteamRestoreLatticeStateWithoutSteps: a lattice server state read
// from a snapshot (a file, or a snapshot a Raft peer installs) whose
// steps are gone (the model at its initial values, no steps) but whose
// kept deltas change counts at their own steps was accepted; composing
// those deltas for a client then indexed the missing steps' ratios and
// panicked, in the leader's download handler. Such a state must be
// refused, or serve without a panic.
func TestRedteamRestoreLatticeStateWithoutSteps(t *testing.T) {
	const n, maxLag = 300, 5
	run := newLatticeRun(t, "topk=0.05,bits=lattice", n, maxLag, nil)
	for range 4 {
		run.publish(t)
	}
	st := run.srv.State()
	st.Steps = nil
	st.Counts = make([]int32, n)
	st.Model = slices.Clone(st.Init)
	s, err := RestoreServerEncoder(run.srv.spec, st, maxLag)
	if err != nil {
		return // refused: good
	}
	func() {
		defer func() {
			if p := recover(); p != nil {
				t.Fatalf("serving a restored state without steps panicked: %v", p)
			}
		}()
		for have := 0; have < st.Version; have++ {
			s.AppendUpdate(nil, have)
		}
	}()
}

// FuzzRestoreLattice: a lattice server state as a snapshot holds it
// (JSON), from any bytes: RestoreServerEncoder refuses it or returns an
// encoder that serves every have without a panic.
func FuzzRestoreLattice(f *testing.F) {
	const n, maxLag = 60, 3
	run := newLatticeRun(f, "topk=0.1,bits=lattice", n, maxLag, []int{40, 20})
	add := func() {
		b, err := json.Marshal(run.srv.State())
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	add()
	for range 5 {
		run.publish(f)
		add()
	}
	spec := run.srv.spec
	f.Fuzz(func(t *testing.T, b []byte) {
		var st ServerState
		if json.Unmarshal(b, &st) != nil {
			return
		}
		s, err := RestoreServerEncoder(spec, st, maxLag)
		if err != nil {
			return
		}
		for have := -1; have <= s.Version()+1; have++ {
			s.AppendUpdate(nil, have)
		}
	})
}
