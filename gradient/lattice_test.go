package gradient

import (
	"bytes"
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// latticeRun publishes versions of a drifting global model to a lattice
// ServerEncoder: the drift is concentrated on the first hot coordinates,
// so that consecutive deltas overlap, as top-k deltas of training do.
type latticeRun struct {
	srv    *ServerEncoder
	global []float32
	rng    *rand.Rand
	hot    int
	// scale multiplies the drift, decay multiplies scale each version
	// (changes shrink as training converges).
	scale, decay float64
}

func newLatticeRun(t testing.TB, spec string, n, maxLag int, tensors []int) *latticeRun {
	t.Helper()
	sp, err := ParseSpec(spec)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(7, 8))
	init := make([]float32, n)
	for i := range init {
		init[i] = float32(rng.NormFloat64() * 0.05)
	}
	srv, err := NewServerEncoder(sp, init, maxLag)
	if err != nil {
		t.Fatal(err)
	}
	if tensors != nil {
		if err := srv.SetTensors(tensors); err != nil {
			t.Fatal(err)
		}
	}
	return &latticeRun{srv: srv, global: slices.Clone(init), rng: rng, hot: n / 5, scale: 1, decay: 1}
}

func (r *latticeRun) publish(t testing.TB) {
	t.Helper()
	for i := range r.global {
		s := 0.001 * r.scale
		if i < r.hot {
			s = 0.01 * r.scale
		}
		r.global[i] += float32(r.rng.NormFloat64() * s)
	}
	r.scale *= r.decay
	if _, err := r.srv.Publish(r.global, 0); err != nil {
		t.Fatal(err)
	}
}

func sameBits(a, b []float32) int {
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return i
		}
	}
	return -1
}

// TestLatticeReplicasMatchServer: replicas that sync every version, every
// third, every tenth (beyond the kept deltas) or only once at the end all
// hold the server's model bit for bit, each from one message per sync:
// from the version they hold while the kept deltas reach back, from
// version 0 otherwise.
func TestLatticeReplicasMatchServer(t *testing.T) {
	for _, spec := range []string{"topk=0.05,bits=lattice", "topk=0.05,bits=lattice,refine=0.7"} {
		t.Run(spec, func(t *testing.T) { testLatticeReplicas(t, spec) })
	}
}

func testLatticeReplicas(t *testing.T, spec string) {
	const n, lag = 5000, 6
	run := newLatticeRun(t, spec, n, lag, []int{3000, 1500, 400, 100})
	run.decay = 0.9
	var first []float32
	periods := []int{1, 3, 10, 40}
	reps := make([]*Replica, len(periods))
	for j := range reps {
		var err error
		if reps[j], err = NewReplica(run.global); err != nil {
			t.Fatal(err)
		}
	}
	lim := Limits{MaxParams: n}
	composed := 0
	for v := 1; v <= 40; v++ {
		run.publish(t)
		if first == nil {
			first = slices.Clone(run.srv.lat.steps)
		}
		for j, p := range periods {
			if v%p != 0 {
				continue
			}
			r := reps[j]
			have := r.Version()
			msg, full := run.srv.AppendUpdate(nil, have)
			if full {
				t.Fatalf("version %d: a whole model for a client at %d", v, have)
			}
			h, err := ReadHeader(msg, lim)
			if err != nil {
				t.Fatalf("version %d, have %d: one message expected: %v", v, have, err)
			}
			// From the version held while the kept deltas reach back
			// (or from 0 if that is smaller), from 0 beyond.
			if (h.Base != have && h.Base != 0) || (v-have > lag && h.Base != 0) || h.Round != v || h.Format != FormatLattice {
				t.Fatalf("version %d, have %d: message from %d to %d (%s)", v, have, h.Base, h.Round, h.Format)
			}
			if h.Base == have && have > 0 {
				composed++
			}
			if size, _ := run.srv.UpdateSize(have); size != len(msg) {
				t.Fatalf("UpdateSize %d, message %d bytes", size, len(msg))
			}
			got, err := r.Apply(msg, lim)
			if err != nil || got != v {
				t.Fatalf("version %d: period %d replica: apply: version %d, %v", v, p, got, err)
			}
			if i := sameBits(r.Model(), run.srv.Model()); i >= 0 {
				t.Fatalf("version %d: period %d replica differs at %d: %g vs %g", v, p, i, r.Model()[i], run.srv.Model()[i])
			}
		}
	}
	if composed < 20 {
		t.Fatalf("only %d syncs were compositions from the version held", composed)
	}
	refined := run.srv.lat.steps[0] < first[0]
	if want := run.srv.spec.Refine > 0; refined != want {
		t.Fatalf("steps %v → %v: refined %v, want %v", first, run.srv.lat.steps, refined, want)
	}
}

// TestLatticeComposesMissedDeltas: a client behind by several versions
// gets one message smaller than the deltas it missed, concatenated,
// because their supports overlap: the composition sends each coordinate
// once with the sum of its changes.
func TestLatticeComposesMissedDeltas(t *testing.T) {
	const n = 20000
	run := newLatticeRun(t, "topk=0.02,bits=lattice", n, 20, nil)
	for range 12 {
		run.publish(t)
	}
	concat := 0
	for _, m := range run.srv.history[len(run.srv.history)-8:] {
		concat += len(m)
	}
	msg, _ := run.srv.AppendUpdate(nil, 4)
	if len(msg) >= concat*3/4 {
		t.Fatalf("composed sync of 8 deltas is %d bytes, the deltas %d: composition saves nothing", len(msg), concat)
	}
	t.Logf("8 missed deltas: %d bytes concatenated, %d composed", concat, len(msg))
}

// TestLatticeResidualIsExact: publishing the same global model again and
// again brings every coordinate within half a step of it: what a version
// does not send stays in global − model and is sent later.
func TestLatticeResidualIsExact(t *testing.T) {
	const n = 2000
	run := newLatticeRun(t, "topk=0.1,bits=lattice,step=1,levels=3", n, 4, []int{1500, 500})
	run.publish(t) // fixes the steps
	for range 200 {
		if _, err := run.srv.Publish(run.global, 0); err != nil {
			t.Fatal(err)
		}
	}
	steps := run.srv.lat.steps
	for i, g := range run.global {
		tn := 0
		if i >= 1500 {
			tn = 1
		}
		if d := math.Abs(float64(g - run.srv.Model()[i])); d > float64(steps[tn])/2*1.0001 {
			t.Fatalf("coordinate %d is %g from the global model, half a step is %g", i, d, steps[tn]/2)
		}
	}
}

// TestLatticeRestore: a server encoder restored from its state serves the
// same bytes to every client and publishes the same next versions; a
// state whose model does not match its counts is refused.
func TestLatticeRestore(t *testing.T) {
	const n, lag = 3000, 5
	run := newLatticeRun(t, "topk=0.02,bits=lattice,refine=0.7", n, lag, []int{2000, 900, 100})
	run.decay = 0.8
	for range 9 {
		run.publish(t)
	}
	st := run.srv.State()
	back, err := RestoreServerEncoder(run.srv.spec, st, lag)
	if err != nil {
		t.Fatal(err)
	}
	for have := -1; have <= 9; have++ {
		a, _ := run.srv.AppendUpdate(nil, have)
		b, _ := back.AppendUpdate(nil, have)
		if !bytes.Equal(a, b) {
			t.Fatalf("have %d: restored encoder serves other bytes", have)
		}
	}
	run2 := *run
	run2.srv = back
	g := slices.Clone(run.global)
	run.publish(t)
	run2.global = g
	run2.rng = nil
	if _, err := back.Publish(run.global, 0); err != nil {
		t.Fatal(err)
	}
	if i := sameBits(back.Model(), run.srv.Model()); i >= 0 {
		t.Fatalf("after one more version the restored model differs at %d", i)
	}
	bad := run.srv.State()
	bad.Counts[17] += 3
	if _, err := RestoreServerEncoder(run.srv.spec, bad, lag); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("counts that do not give the model: %v, want ErrCorrupt", err)
	}
	bad = run.srv.State()
	bad.Steps[1] = float32(math.Inf(1))
	if _, err := RestoreServerEncoder(run.srv.spec, bad, lag); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("an infinite step: %v, want ErrCorrupt", err)
	}
}

// TestReplicaRefuses: a sync from a version the replica does not hold, a
// tampered byte, a sync after the replica left the lattice, and lattice
// messages given to the other decoders are refused, and the replica keeps
// what it held.
func TestReplicaRefuses(t *testing.T) {
	const n = 1000
	run := newLatticeRun(t, "topk=0.05,bits=lattice", n, 10, nil)
	init := slices.Clone(run.global)
	for range 5 {
		run.publish(t)
	}
	r, _ := NewReplica(init)
	lim := Limits{MaxParams: n}
	msg, _ := run.srv.AppendUpdate(nil, 3) // from version 3; r holds 0
	if _, err := r.Apply(msg, lim); !errors.Is(err, ErrBase) {
		t.Fatalf("a sync from version 3 to a replica at 0: %v, want ErrBase", err)
	}
	if r.Version() != 0 || sameBits(r.Model(), init) >= 0 {
		t.Fatal("a refused sync changed the replica")
	}
	msg, _ = run.srv.AppendUpdate(nil, 0)
	bad := slices.Clone(msg)
	bad[len(bad)/2] ^= 0x10
	if _, err := r.Apply(bad, lim); !errors.Is(err, ErrChecksum) {
		t.Fatalf("a tampered sync: %v, want ErrChecksum", err)
	}
	if _, err := ApplyDownload(slices.Clone(init), 0, msg, lim); err == nil {
		t.Fatal("ApplyDownload applied a lattice sync")
	}
	if _, err := Decode(make([]float32, n), msg, lim); err == nil {
		t.Fatal("Decode decoded a lattice sync as an update")
	}
	if _, err := r.Apply(msg, lim); err != nil {
		t.Fatal(err)
	}
	// A whole model takes the replica off the lattice: only a sync from
	// version 0 applies then.
	full := run.srv.AppendFull(nil)
	if _, err := r.Apply(full, lim); err != nil {
		t.Fatal(err)
	}
	run.publish(t)
	msg, _ = run.srv.AppendUpdate(nil, 5)
	if _, err := r.Apply(msg, lim); !errors.Is(err, ErrBase) {
		t.Fatalf("a sync from 5 after a whole model: %v, want ErrBase", err)
	}
	msg, _ = run.srv.AppendUpdate(nil, -1)
	if _, err := r.Apply(msg, lim); err != nil {
		t.Fatalf("a sync from version 0 after a whole model: %v", err)
	}
	if sameBits(r.Model(), run.srv.Model()) >= 0 {
		t.Fatal("replica differs from the server")
	}
}

// TestLatticeIsDownloadOnly: the lattice codec is refused for uploads,
// and its keys are checked.
func TestLatticeIsDownloadOnly(t *testing.T) {
	sp, err := ParseSpec("lattice")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := sp.String(), "topk=0.02,bits=lattice,step=2,levels=7"; got != want {
		t.Fatalf("String %q, want %q", got, want)
	}
	if back, err := ParseSpec(sp.String()); err != nil || back != sp {
		t.Fatalf("round trip: %+v, %v", back, err)
	}
	if _, err := NewEncoder(sp, 10); !errors.Is(err, ErrSpec) {
		t.Fatalf("NewEncoder(lattice): %v, want ErrSpec", err)
	}
	if _, err := NewUploadDecoder("lattice", true); !errors.Is(err, ErrSpec) {
		t.Fatalf("NewUploadDecoder(lattice): %v, want ErrSpec", err)
	}
	for _, bad := range []string{"bits=lattice", "topk=0.1,step=2", "topk=0.1,bits=lattice,ef=on", "topk=0.1,bits=lattice,levels=0", "topk=0.1,bits=lattice,step=-1", "topk=0.1,bits=8,levels=3"} {
		if _, err := ParseSpec(bad); !errors.Is(err, ErrSpec) {
			t.Errorf("ParseSpec(%q): %v, want ErrSpec", bad, err)
		}
	}
}

// TestReplicaState: a replica's state file reads back to the same model
// and accepts the next sync; damaged files are refused.
func TestReplicaState(t *testing.T) {
	const n = 2000
	run := newLatticeRun(t, "topk=0.05,bits=lattice", n, 10, []int{1000, 1000})
	init := slices.Clone(run.global)
	r, _ := NewReplica(init)
	lim := Limits{MaxParams: n}
	for range 4 {
		run.publish(t)
	}
	msg, _ := run.srv.AppendUpdate(nil, 0)
	if _, err := r.Apply(msg, lim); err != nil {
		t.Fatal(err)
	}
	b := r.AppendBinary(nil)
	back, err := ReadReplica(init, b, lim)
	if err != nil {
		t.Fatal(err)
	}
	if back.Version() != 4 || sameBits(back.Model(), r.Model()) >= 0 {
		t.Fatal("state read back differs")
	}
	run.publish(t)
	msg, _ = run.srv.AppendUpdate(nil, 4)
	if _, err := back.Apply(msg, lim); err != nil || sameBits(back.Model(), run.srv.Model()) >= 0 {
		t.Fatalf("read-back replica cannot follow: %v", err)
	}
	for _, cut := range []int{0, 5, len(b) / 2, len(b) - 1} {
		if _, err := ReadReplica(init, b[:cut], lim); err == nil {
			t.Errorf("a state cut at %d bytes was read", cut)
		}
	}
	if _, err := ReadReplica(init[:n-1], b, lim); err == nil {
		t.Error("a state for another model size was read")
	}
}

func FuzzReplicaApply(f *testing.F) {
	run := newLatticeRun(f, "topk=0.05,bits=lattice", 300, 5, []int{200, 100})
	init := slices.Clone(run.global)
	for range 6 {
		run.publish(f)
	}
	for _, have := range []int{0, 2, 5} {
		m, _ := run.srv.AppendUpdate(nil, have)
		f.Add(m, uint8(have))
	}
	f.Add(run.srv.AppendFull(nil), uint8(0))
	f.Fuzz(func(t *testing.T, b []byte, have uint8) {
		r, _ := NewReplica(init)
		lim := Limits{MaxParams: 300, MaxBytes: 1 << 16}
		if have > 0 {
			m, _ := run.srv.AppendUpdate(nil, 0)
			r.Apply(m, lim)
		}
		v0, m0 := r.Version(), slices.Clone(r.Model())
		if _, err := r.Apply(b, lim); err != nil && r.Version() == v0 && sameBits(r.Model(), m0) >= 0 {
			t.Fatal("a refused stream changed the model at the version it returned")
		}
		if !finite32(r.Model()) {
			t.Fatal("the replica holds a value that is not finite")
		}
	})
}

func FuzzReadReplica(f *testing.F) {
	run := newLatticeRun(f, "topk=0.05,bits=lattice", 200, 5, nil)
	init := slices.Clone(run.global)
	r, _ := NewReplica(init)
	f.Add(r.AppendBinary(nil))
	run.publish(f)
	m, _ := run.srv.AppendUpdate(nil, 0)
	r.Apply(m, Limits{})
	f.Add(r.AppendBinary(nil))
	f.Fuzz(func(t *testing.T, b []byte) {
		back, err := ReadReplica(init, b, Limits{MaxParams: 200})
		if err == nil && !finite32(back.Model()) {
			t.Fatal("read a replica with a value that is not finite")
		}
	})
}

// TestLatticeStepsUnchangedTensor: a tensor that has not changed when the
// steps are set takes the largest step of the others.
func TestLatticeStepsUnchangedTensor(t *testing.T) {
	diff := []float32{0, 0, 0, 0, 1, -1, 3, 3}
	steps, err := latticeSteps(diff, []int32{4, 5, 6, 7}, []int{4, 2, 2}, 0.5)
	if err != nil {
		t.Fatal(err)
	}
	if want := []float32{1.5, 0.5, 1.5}; !slices.Equal(steps, want) {
		t.Fatalf("steps %v, want %v", steps, want)
	}
}
