package gradient

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"

	"github.com/fedzip/fedzip/compress"
)

// randomSupports returns a SupportFunc drawing k of n coordinates with
// the key as seed, as secagg.Support does, whatever length it is asked
// for, and counts its calls in *calls (if not nil).
func randomSupports(n, k int, calls *int) SupportFunc {
	var ws compress.Workspace
	return func(key uint64, _ int, dst []int32) ([]int32, error) {
		if calls != nil {
			*calls++
		}
		dst = slices.Grow(dst[:0], k)[:k]
		compress.RandK(dst, n, key, &ws)
		return dst, nil
	}
}

// anySupports returns the SupportFunc a client uses: it draws the length
// the sync asks for, of n coordinates, knowing nothing else of the run.
func anySupports(n int) SupportFunc {
	var ws compress.Workspace
	return func(key uint64, k int, dst []int32) ([]int32, error) {
		dst = slices.Grow(dst[:0], k)[:k]
		compress.RandK(dst, n, key, &ws)
		return dst, nil
	}
}

// seededRun publishes versions of a global model that changes on a
// random support per version (secure aggregation's), each published with
// its support.
type seededRun struct {
	srv    *ServerEncoder
	global []float32
	init   []float32
	rng    *rand.Rand
	sup    SupportFunc
	n, k   int
	keys   []uint64
	buf    []int32
}

func newSeededRun(t testing.TB, n, k, maxLag int, tensors []int) *seededRun {
	t.Helper()
	sp, err := ParseSpec("seeded")
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(3, 4))
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
	sup := randomSupports(n, k, nil)
	srv.SetSupportFunc(sup)
	return &seededRun{srv: srv, global: slices.Clone(init), init: init, rng: rng, sup: sup, n: n, k: k}
}

// publish changes the global model on the next key's support and
// publishes it with that support.
func (r *seededRun) publish(t testing.TB) {
	t.Helper()
	key := r.rng.Uint64()
	var err error
	if r.buf, err = r.sup(key, r.k, r.buf); err != nil {
		t.Fatal(err)
	}
	for _, i := range r.buf {
		r.global[i] += float32(r.rng.NormFloat64() * 0.01)
	}
	if _, err := r.srv.PublishSupport(r.global, 0, key, r.buf); err != nil {
		t.Fatal(err)
	}
	r.keys = append(r.keys, key)
}

func (r *seededRun) replica(t testing.TB) *Replica {
	t.Helper()
	rep, err := NewReplica(r.init)
	if err != nil {
		t.Fatal(err)
	}
	rep.SetSupportFunc(anySupports(r.n))
	return rep
}

// TestSeededReplicasMatchServer: replicas that sync every version, every
// third, every tenth (beyond the kept deltas) or only at the end hold the
// server's model bit for bit; the syncs across versions published with
// their supports are seeded (keys, no indices), from the version held
// and from version 0, and smaller than the explicit composition.
func TestSeededReplicasMatchServer(t *testing.T) {
	const n, k, lag = 5000, 50, 6
	run := newSeededRun(t, n, k, lag, []int{3000, 1500, 400, 100})
	periods := []int{1, 3, 10, 40}
	reps := make([]*Replica, len(periods))
	for j := range reps {
		reps[j] = run.replica(t)
	}
	lim := Limits{MaxParams: n}
	seededFrom, seededZero := 0, 0
	for v := 1; v <= 40; v++ {
		run.publish(t)
		for j, p := range periods {
			if v%p != 0 {
				continue
			}
			r := reps[j]
			have := r.Version()
			msg, _ := run.srv.AppendUpdate(nil, have)
			h, err := ReadHeader(msg, lim)
			if err != nil {
				t.Fatal(err)
			}
			if h.Selection == RandK {
				if h.Base == 0 {
					seededZero++
				} else {
					seededFrom++
				}
				if have == 0 || v-have > lag {
					// (from 0: no explicit composition to compare)
				} else if ex := run.srv.compose(have); ex != nil && len(ex) <= len(msg) {
					t.Fatalf("version %d, have %d: a seeded sync of %d bytes, the explicit one has %d", v, have, len(msg), len(ex))
				}
			}
			if size, _ := run.srv.UpdateSize(have); size != len(msg) {
				t.Fatalf("UpdateSize %d, message %d bytes", size, len(msg))
			}
			if got, err := r.Apply(msg, lim); err != nil || got != v {
				t.Fatalf("version %d: period %d replica: apply: version %d, %v", v, p, got, err)
			}
			if i := sameBits(r.Model(), run.srv.Model()); i >= 0 {
				t.Fatalf("version %d: period %d replica differs at %d", v, p, i)
			}
		}
	}
	if seededFrom < 20 || seededZero < 1 {
		t.Fatalf("%d seeded syncs from the version held, %d from version 0", seededFrom, seededZero)
	}
}

// TestSeededEqualsExplicit: from every version, the seeded composition
// and the explicit one lead a replica to the same bits, and the seeded
// one names no index.
func TestSeededEqualsExplicit(t *testing.T) {
	const n, k, lag = 4000, 40, 12
	run := newSeededRun(t, n, k, lag, []int{3000, 1000})
	var snaps []*Replica
	lim := Limits{MaxParams: n}
	for range 10 {
		r := run.replica(t)
		if m, _ := run.srv.AppendUpdate(nil, 0); m != nil {
			if _, err := r.Apply(m, lim); err != nil {
				t.Fatal(err)
			}
		}
		snaps = append(snaps, r)
		run.publish(t)
	}
	for have := 1; have < 10; have++ {
		seeded, explicit := run.srv.composeSeeded(have), run.srv.compose(have)
		if seeded == nil || explicit == nil {
			t.Fatalf("have %d: seeded %d bytes, explicit %d", have, len(seeded), len(explicit))
		}
		a, _ := ReadReplica(run.init, snaps[have].AppendBinary(nil), lim)
		b, _ := ReadReplica(run.init, snaps[have].AppendBinary(nil), lim)
		a.SetSupportFunc(run.sup)
		if _, err := a.Apply(seeded, lim); err != nil {
			t.Fatalf("have %d: seeded: %v", have, err)
		}
		if _, err := b.Apply(explicit, lim); err != nil {
			t.Fatalf("have %d: explicit: %v", have, err)
		}
		if i := sameBits(a.Model(), b.Model()); i >= 0 || sameBits(a.Model(), run.srv.Model()) >= 0 {
			t.Fatalf("have %d: seeded and explicit compositions differ at %d", have, i)
		}
		t.Logf("from %d: seeded %d bytes, explicit %d", have, len(seeded), len(explicit))
	}
}

// TestSeededOffSupport: a version whose global model changed off its
// support, and a plain Publish, are explicit: syncs across them list
// indices, syncs after them may be seeded again, and every replica still
// holds the server's bits; the off-support change reaches the clients.
func TestSeededOffSupport(t *testing.T) {
	const n, k, lag = 3000, 30, 10
	run := newSeededRun(t, n, k, lag, nil)
	lim := Limits{MaxParams: n}
	for range 3 {
		run.publish(t)
	}
	off := -1
	for i := range n {
		if !slices.Contains(run.buf, int32(i)) {
			off = i
			break
		}
	}
	run.global[off] += 0.5 // far off the support of the next version
	run.publish(t)         // version 4: explicit
	if run.srv.lat.seeded[3] {
		t.Fatal("a version that moved a count off its support is marked seeded")
	}
	if run.srv.Model()[off] == run.init[off] {
		t.Fatal("the off-support change did not reach the model")
	}
	for i := range run.global {
		run.global[i] += 0.001
	}
	if _, err := run.srv.Publish(run.global, 0); err != nil { // version 5: plain
		t.Fatal(err)
	}
	run.publish(t) // versions 6..8 are seeded again
	run.publish(t)
	run.publish(t)
	if run.srv.lat.seeded[4] {
		t.Fatal("a plain Publish is marked seeded")
	}
	for have := 0; have <= 8; have++ {
		msg, _ := run.srv.AppendUpdate(nil, have)
		if h, _ := ReadHeader(msg, lim); h.Selection == RandK && h.Base < 5 {
			t.Fatalf("have %d: a seeded sync from %d across explicit versions", have, h.Base)
		}
	}
	r := run.replica(t)
	msg, _ := run.srv.AppendUpdate(nil, 0)
	if _, err := r.Apply(msg, lim); err != nil || sameBits(r.Model(), run.srv.Model()) >= 0 {
		t.Fatalf("from 0: the replica differs (%v)", err)
	}
	if m, _ := run.srv.AppendUpdate(nil, 7); m == nil {
		t.Fatal("no sync from 7")
	} else if h, _ := ReadHeader(m, lim); h.Selection != RandK {
		t.Fatal("the sync from 7 (seeded versions only) is not seeded")
	}
}

// TestSeededRestore: an encoder restored from its state (and given its
// support func again) serves the same bytes to every client and
// publishes the same next version; keys on a non-seeded spec, and
// support lengths that do not match the keys or the model, are refused.
func TestSeededRestore(t *testing.T) {
	const n, k, lag = 3000, 30, 5
	run := newSeededRun(t, n, k, lag, []int{2000, 1000})
	for range 9 {
		run.publish(t)
	}
	st := run.srv.State()
	back, err := RestoreServerEncoder(run.srv.spec, st, lag)
	if err != nil {
		t.Fatal(err)
	}
	back.SetSupportFunc(run.sup)
	for have := -1; have <= 9; have++ {
		a, _ := run.srv.AppendUpdate(nil, have)
		b, _ := back.AppendUpdate(nil, have)
		if !bytes.Equal(a, b) {
			t.Fatalf("have %d: restored encoder serves other bytes", have)
		}
	}
	g := slices.Clone(run.global)
	run.publish(t)
	key := run.keys[len(run.keys)-1]
	for _, i := range run.buf {
		g[i] = run.global[i]
	}
	if _, err := back.PublishSupport(g, 0, key, run.buf); err != nil {
		t.Fatal(err)
	}
	if i := sameBits(back.Model(), run.srv.Model()); i >= 0 {
		t.Fatalf("after one more version the restored model differs at %d", i)
	}
	a, _ := run.srv.AppendUpdate(nil, 4)
	b, _ := back.AppendUpdate(nil, 4)
	if !bytes.Equal(a, b) {
		t.Fatal("after one more version the restored encoder serves other bytes")
	}
	plain, _ := ParseSpec("lattice")
	if _, err := RestoreServerEncoder(plain, st, lag); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("keys for a lattice without support=seeded: %v, want ErrCorrupt", err)
	}
	bad := run.srv.State()
	bad.Seeded = bad.Seeded[1:]
	if _, err := RestoreServerEncoder(run.srv.spec, bad, lag); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("keys and flags of different lengths: %v, want ErrCorrupt", err)
	}
	bad = run.srv.State()
	bad.Sizes = bad.Sizes[1:]
	if _, err := RestoreServerEncoder(run.srv.spec, bad, lag); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("keys and lengths of different counts: %v, want ErrCorrupt", err)
	}
	for _, k := range []int32{-1, n + 1} {
		bad = run.srv.State()
		bad.Sizes[2] = k
		if _, err := RestoreServerEncoder(run.srv.spec, bad, lag); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("a support length of %d: %v, want ErrCorrupt", k, err)
		}
	}
	if st.Sizes[0] != k {
		t.Fatalf("the state's support lengths %v, want %d each", st.Sizes, k)
	}
}

// TestSeededSpec: the key parses, prints and is refused where it does not
// apply.
func TestSeededSpec(t *testing.T) {
	sp, err := ParseSpec("seeded")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := sp.String(), "topk=0.02,bits=lattice,step=0.5,levels=7,support=seeded"; got != want {
		t.Fatalf("String %q, want %q", got, want)
	}
	if back, err := ParseSpec(sp.String()); err != nil || back != sp {
		t.Fatalf("round trip: %+v, %v", back, err)
	}
	if err := sp.CheckUpload(); !errors.Is(err, ErrSpec) {
		t.Fatalf("CheckUpload(seeded): %v", err)
	}
	for _, bad := range []string{"topk=0.01,bits=ternary,support=seeded", "support=seeded", "topk=0.02,bits=lattice,support=yes", "topk=0.02,bits=lattice,refine=0.5,support=seeded"} {
		if _, err := ParseSpec(bad); !errors.Is(err, ErrSpec) {
			t.Errorf("%q: %v, want ErrSpec", bad, err)
		}
	}
	if sp, _ := ParseSpec("topk=0.02,bits=lattice,support=explicit"); sp.Seeded {
		t.Error("support=explicit is seeded")
	}
}

// TestPublishSupportRefuses: a support that is not sorted, distinct, in
// range or the support func's, an encoder without the func or without
// support=seeded, are refused and publish nothing.
func TestPublishSupportRefuses(t *testing.T) {
	const n = 500
	run := newSeededRun(t, n, 10, 4, nil)
	good, _ := run.sup(42, 10, nil)
	other, _ := run.sup(43, 10, nil)
	for name, sup := range map[string][]int32{
		"unsorted":      {5, 3},
		"duplicate":     {3, 3},
		"out of range":  {3, n},
		"negative":      {-1, 3},
		"not the key's": other,
	} {
		if _, err := run.srv.PublishSupport(run.global, 0, 42, sup); err == nil {
			t.Errorf("%s: published", name)
		}
	}
	if run.srv.Version() != 0 {
		t.Fatal("a refused support published a version")
	}
	plain := newLatticeRun(t, "lattice", n, 4, nil)
	if _, err := plain.srv.PublishSupport(plain.global, 0, 42, good); !errors.Is(err, ErrSpec) {
		t.Errorf("PublishSupport on a lattice without support=seeded: %v", err)
	}
	sp, _ := ParseSpec("seeded")
	bare, _ := NewServerEncoder(sp, run.init, 4)
	if _, err := bare.PublishSupport(run.global, 0, 42, good); !errors.Is(err, ErrSpec) {
		t.Errorf("PublishSupport without a support func: %v", err)
	}
}

// TestReplicaRefusesSeeded: a seeded sync is refused without a support
// func, with supports that are not the server's, with duplicate keys, a
// key count that is not the versions it spans, more support work than
// the bound, a length of 0, above n, or too small for the values, or a
// length uvarint that runs over the keys (for the lengths, the support
// func is never called); the replica keeps what it held.
func TestReplicaRefusesSeeded(t *testing.T) {
	const n, k = 2000, 20
	run := newSeededRun(t, n, k, 10, nil)
	for range 4 {
		run.publish(t)
	}
	lim := Limits{MaxParams: n}
	msg, _ := run.srv.AppendUpdate(nil, 0)
	if h, _ := ReadHeader(msg, lim); h.Selection != RandK {
		t.Fatal("the sync from 0 is not seeded")
	}
	keep := func(r *Replica, what string, want error) {
		t.Helper()
		if _, err := r.Apply(msg, lim); !errors.Is(err, want) {
			t.Errorf("%s: %v, want %v", what, err, want)
		}
		if r.Version() != 0 || sameBits(r.Model(), run.init) >= 0 {
			t.Errorf("%s: a refused sync changed the replica", what)
		}
	}
	r, _ := NewReplica(run.init)
	keep(r, "no support func", ErrSpec)
	r.SetSupportFunc(randomSupports(n, k+1, nil))
	keep(r, "longer supports", ErrCorrupt)
	r.SetSupportFunc(func(key uint64, k int, dst []int32) ([]int32, error) {
		dst = append(dst[:0], 7, 3)
		for i := 2; i < k; i++ {
			dst = append(dst, int32(i+10))
		}
		return dst, nil
	})
	keep(r, "unsorted support", ErrIndex)

	h, _ := ReadHeader(msg, lim)
	ks := h.Sections[0]
	dup := slices.Clone(msg)
	kOff := ks.Offset + 1 // after the length, a one-byte uvarint
	copy(dup[kOff+8:kOff+16], dup[kOff:kOff+8])
	msg = reseal(dup)
	r.SetSupportFunc(run.sup)
	keep(r, "duplicate keys", ErrCorrupt)

	// One key fewer than the versions spanned: rewrite the header.
	orig, _ := run.srv.AppendUpdate(nil, 0)
	h, _ = ReadHeader(orig, lim)
	h.Round--
	msg = rebuildSeeded(orig, h)
	keep(r, "keys for other versions", ErrCorrupt)

	// A support func as long as the model: the work bound stops it.
	calls := 0
	r.SetSupportFunc(randomSupports(n, n, &calls))
	many := make([]uint64, maxSeededKeys)
	for i := range many {
		many[i] = uint64(i)
	}
	msg = appendSeededMessage(nil, n, 0, len(many), []int{n}, []float32{0.01}, n, many, make([]int32, n))
	keep(r, "too much work", ErrTooLarge)
	if calls != 0 {
		t.Errorf("the support func was called %d times for a sync past the bound of %d coordinates (the lengths say so)", calls, seededWork(n))
	}

	// Lengths that are not a support's, or that cannot hold the values,
	// are refused before any support is rebuilt.
	calls = 0
	count := anySupports(n)
	r.SetSupportFunc(func(key uint64, k int, dst []int32) ([]int32, error) {
		calls++
		return count(key, k, dst)
	})
	var d Decoder
	h, _ = ReadHeader(orig, lim)
	tensors, steps, sk, keys, vals, err := d.seeded(&h, orig)
	if err != nil || sk != k {
		t.Fatalf("the sync from 0: length %d, %v", sk, err)
	}
	tensors, steps, keys, vals = slices.Clone(tensors), slices.Clone(steps), slices.Clone(keys), slices.Clone(vals)
	for name, bad := range map[string]int{
		"length 0":         0,
		"length above n":   n + 1,
		"length 2^63":      -1 << 63,
		"length below K/4": len(vals)/4 - 1,
	} {
		msg = appendSeededMessage(nil, n, 0, 4, tensors, steps, bad, keys, vals)
		keep(r, name, ErrCorrupt)
	}
	// A length whose uvarint runs past the keys' bytes.
	msg = slices.Clone(orig)
	msg[h.Sections[0].Offset] |= 0x80
	msg = reseal(msg)
	keep(r, "length uvarint over the keys", ErrCorrupt)
	if calls != 0 {
		t.Errorf("the support func was called %d times for lengths the bytes refuse", calls)
	}
	msg = appendSeededMessage(nil, n, 0, 4, tensors, steps, k, keys, vals)
	if _, err := r.Apply(msg, lim); err != nil || sameBits(r.Model(), run.srv.Model()) >= 0 {
		t.Fatalf("the sync re-emitted: %v", err)
	}
}

// rebuildSeeded re-emits a seeded message with header h (its sections as
// they were).
func rebuildSeeded(msg []byte, h Header) []byte {
	var body []byte
	for _, s := range h.Sections[:h.NumSections] {
		body = append(body, msg[s.Offset:s.Offset+s.Length]...)
	}
	out := appendHeader(nil, &h)
	out = append(out, body...)
	return binary.LittleEndian.AppendUint32(out, crc32.Checksum(out, castagnoli))
}

// TestSeededApplyAllocs: applying a seeded sync to a replica that has
// applied one allocates only the tensor table (its scratch is reused).
func TestSeededApplyAllocs(t *testing.T) {
	const n, k = 20000, 200
	run := newSeededRun(t, n, k, 10, []int{15000, 5000})
	for range 6 {
		run.publish(t)
	}
	msg, _ := run.srv.AppendUpdate(nil, 0)
	r := run.replica(t)
	lim := Limits{MaxParams: n}
	if _, err := r.Apply(msg, lim); err != nil {
		t.Fatal(err)
	}
	allocs := testing.AllocsPerRun(20, func() {
		if _, err := r.Apply(msg, lim); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 3 {
		t.Fatalf("%v allocations per seeded sync, want at most 3 (the tensor table)", allocs)
	}
}

func FuzzSeededSync(f *testing.F) {
	const n, k = 300, 6
	run := newSeededRun(f, n, k, 5, []int{200, 100})
	for range 6 {
		run.publish(f)
	}
	for _, have := range []int{0, 2, 5} {
		m, _ := run.srv.AppendUpdate(nil, have)
		f.Add(m, uint8(have))
	}
	f.Fuzz(func(t *testing.T, b []byte, have uint8) {
		r := run.replica(t)
		lim := Limits{MaxParams: n, MaxBytes: 1 << 16}
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

// TestSeededConcurrentSyncs: syncs may be served concurrently (a
// coordinator's downloads): concurrent AppendUpdate calls for every
// version held give the bytes a sequential encoder gives. Run with -race.
func TestSeededConcurrentSyncs(t *testing.T) {
	const n, k, lag = 3000, 30, 8
	a, b := newSeededRun(t, n, k, lag, nil), newSeededRun(t, n, k, lag, nil)
	safe := func(key uint64, _ int, dst []int32) ([]int32, error) {
		dst = slices.Grow(dst[:0], k)[:k]
		compress.RandK(dst, n, key, nil) // its own workspace per call
		return dst, nil
	}
	a.srv.SetSupportFunc(safe)
	for range 10 {
		a.publish(t)
		b.publish(t)
	}
	got := make([][]byte, 12)
	var wg sync.WaitGroup
	for have := range got {
		wg.Go(func() { got[have], _ = a.srv.AppendUpdate(nil, have-1) })
	}
	wg.Wait()
	for have := range got {
		want, _ := b.srv.AppendUpdate(nil, have-1)
		if !bytes.Equal(got[have], want) {
			t.Fatalf("have %d: concurrent syncs differ from sequential ones", have-1)
		}
	}
}
