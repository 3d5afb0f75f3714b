package aggregate

import (
	"errors"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// quorumRounds returns rounds of updates over n = 16 coordinates: 6 of 40
// honest clients a round send coordinates 0..11 (a shared direction plus
// noise) and zeros at 12..15, and 2 of the 5 colluders (IDs 100..104) send
// the same plus a push on 12..15, where no honest client ever sends
// anything: a backdoor's trigger weights.
func quorumRounds(seed uint64, rounds int) [][]Update {
	rng := rand.New(rand.NewPCG(seed, 5))
	var out [][]Update
	for range rounds {
		var round []Update
		ids := rng.Perm(40)[:6]
		for _, c := range rng.Perm(5)[:2] {
			ids = append(ids, 100+c)
		}
		for _, id := range ids {
			d := make([]float32, 16)
			for i := range 12 {
				d[i] = float32(0.1 + 0.05*rng.NormFloat64())
			}
			if id >= 100 {
				for i := 12; i < 16; i++ {
					d[i] = 0.5
				}
			}
			round = append(round, Update{Weight: 1, Delta: d, Client: uint64(id + 1), ClientKnown: true})
		}
		out = append(out, round)
	}
	return out
}

// TestQuorumStopsColluders: the coordinates only the five colluders send
// never move, under the default bound as with bare FedAvg, while the
// honest ones move once enough clients have sent them; nothing moves in
// the first round, when no coordinate has support yet.
func TestQuorumStopsColluders(t *testing.T) {
	for _, spec := range []string{"fedavg,quorum=8,quorum-block=1", "fedavgm,lr=3,momentum=0,quorum=8,quorum-block=4,bound=off"} {
		s := mustParse(t, spec)
		g := make([]float32, 16)
		rounds := quorumRounds(1, 30)
		aggregateRound(t, s, g, rounds[0])
		if slices.ContainsFunc(g, func(x float32) bool { return x != 0 }) {
			t.Fatalf("%s: the first round moved the model: %v", spec, g)
		}
		for _, r := range rounds[1:] {
			aggregateRound(t, s, g, r)
		}
		for i := 12; i < 16; i++ {
			if g[i] != 0 {
				t.Errorf("%s: colluders' coordinate %d moved to %v", spec, i, g[i])
			}
		}
		for i := range 12 {
			if !(g[i] > 0.5) {
				t.Errorf("%s: honest coordinate %d at %v, want it trained", spec, i, g[i])
			}
		}
		q := quorumOf(t, s)
		sup := q.Support()
		if last := sup[len(sup)-1]; last > 5 || last == 0 {
			t.Errorf("%s: colluders' block has support %d, want 1..5", spec, last)
		}
	}
	// Without the quorum the colluders' coordinates are learnt.
	g := make([]float32, 16)
	for _, r := range quorumRounds(1, 30) {
		aggregateRound(t, mustParse(t, "fedavg"), g, r)
	}
	if !(g[12] > 1) {
		t.Fatalf("without quorum the colluders' coordinate is at %v: the test does not test", g[12])
	}
}

func quorumOf(t testing.TB, s Strategy) *Quorum {
	t.Helper()
	for {
		switch w := s.(type) {
		case AutoBound:
			s = w.Inner
		case *Quorum:
			return w
		default:
			t.Fatalf("no Quorum in %T", s)
		}
	}
}

// TestQuorumBlock: a coordinate moves when its block has quorum, whoever
// sent it; a block whose only sender is one client stays put.
func TestQuorumBlock(t *testing.T) {
	s := mustParse(t, "fedavg,quorum=2,quorum-block=4,bound=off")
	g := make([]float32, 8)
	for round := range 3 {
		var ups []Update
		for c := range 10 {
			ups = append(ups, Update{Weight: 1, N: 8, Indices: []int32{0}, Values: []float32{1}, Client: uint64(c + 1), ClientKnown: true})
		}
		// Client 1 alone sends coordinate 1 (block 0) and coordinate 5 (block 1).
		ups[0] = Update{Weight: 1, N: 8, Indices: []int32{0, 1, 5}, Values: []float32{1, 10, 10}, Client: 1, ClientKnown: true}
		before := slices.Clone(g)
		aggregateRound(t, s, g, ups)
		if round == 0 {
			if !slices.Equal(g, before) {
				t.Fatalf("round 1 moved the model: %v", g)
			}
			if sup := s.(*Quorum).Support(); sup[0] < 2 || sup[1] != 1 {
				t.Fatalf("support %v, want ≥ 2 and 1", sup)
			}
			continue
		}
		if g[0] != before[0]+1 || g[1] != before[1]+1 {
			t.Fatalf("round %d: block 0 at %v, want +1 and +1 (the mean over 10)", round+1, g[:2])
		}
		if g[5] != 0 {
			t.Fatalf("round %d: coordinate 5 moved to %v with one sender", round+1, g[5])
		}
	}
}

// TestQuorumSparseEqualsDense: a sparse update and its dense form give the
// same model bits and the same state, and so does any order of the same
// round's updates for the state.
func TestQuorumSparseEqualsDense(t *testing.T) {
	const n = 40
	rng := rand.New(rand.NewPCG(3, 3))
	var sparse, dense [][]Update
	for range 6 {
		var rs, rd []Update
		for c := range 8 {
			var idx []int32
			var val []float32
			for i := range n {
				if rng.IntN(3) == 0 {
					idx, val = append(idx, int32(i)), append(val, float32(rng.NormFloat64()))
				}
			}
			u := Update{Weight: float64(1 + c%3), N: n, Indices: idx, Values: val, Client: uint64(rng.IntN(30)), ClientKnown: true}
			rs = append(rs, u)
			d := u
			d.N, d.Indices, d.Values = 0, nil, nil
			d.Delta = u.Dense(make([]float32, n))
			rd = append(rd, d)
		}
		sparse, dense = append(sparse, rs), append(dense, rd)
	}
	spec := "fedavgm,lr=3,momentum=0,quorum=3,quorum-block=2"
	s1, s2, s3 := mustParse(t, spec), mustParse(t, spec), mustParse(t, spec)
	g1, g2, g3 := make([]float32, n), make([]float32, n), make([]float32, n)
	for r := range sparse {
		aggregateRound(t, s1, g1, sparse[r])
		aggregateRound(t, s2, g2, dense[r])
		rev := slices.Clone(sparse[r])
		slices.Reverse(rev)
		aggregateRound(t, s3, g3, rev)
	}
	if !slices.Equal(g1, g2) {
		t.Fatalf("sparse %v, dense %v", g1, g2)
	}
	b1, _ := MarshalState(s1)
	b2, _ := MarshalState(s2)
	b3, _ := MarshalState(s3)
	if !slices.Equal(b1, b2) || !slices.Equal(b1, b3) {
		t.Fatal("the state depends on the form or the order of the updates")
	}
	if slices.Equal(g1, make([]float32, n)) {
		t.Fatal("nothing moved: the test does not test")
	}
}

// TestQuorumState: a strategy restored from a snapshot continues bit for
// bit as the saved one; corrupt or foreign state is refused and leaves the
// strategy as it was; a failed Apply leaves the state unchanged.
func TestQuorumState(t *testing.T) {
	const spec = "fedavgm,lr=3,momentum=0,quorum=6,quorum-block=1,quorum-seed=9"
	rounds := quorumRounds(2, 12)
	s := mustParse(t, spec)
	g := make([]float32, 16)
	for _, r := range rounds[:6] {
		aggregateRound(t, s, g, r)
	}
	b, err := MarshalState(s)
	if err != nil {
		t.Fatal(err)
	}
	r := mustParse(t, spec)
	if err := UnmarshalState(r, b); err != nil {
		t.Fatal(err)
	}
	gr := slices.Clone(g)
	for _, rd := range rounds[6:] {
		aggregateRound(t, s, g, rd)
		aggregateRound(t, r, gr, rd)
	}
	if !slices.Equal(g, gr) {
		t.Fatalf("restored %v, saved %v", gr, g)
	}
	sa, _ := MarshalState(s)
	ra, _ := MarshalState(r)
	if !slices.Equal(sa, ra) {
		t.Fatal("the restored state diverged")
	}

	before, _ := MarshalState(r)
	bad := slices.Clone(b)
	bad[len(bad)/2] ^= 1
	for name, data := range map[string][]byte{"corrupt": bad, "truncated": b[:len(b)-9], "fedavgm": mustState(t, "fedavgm")} {
		if err := UnmarshalState(r, data); !errors.Is(err, ErrState) {
			t.Errorf("%s state: %v, want ErrState", name, err)
		}
		if after, _ := MarshalState(r); !slices.Equal(after, before) {
			t.Errorf("%s state changed the strategy", name)
		}
	}

	q := quorumOf(t, r)
	acc := q.Begin(16)
	if err := acc.Add(rounds[0][0]); err != nil {
		t.Fatal(err)
	}
	if err := acc.Apply(make([]float32, 3)); err == nil {
		t.Fatal("Apply to a model of the wrong size succeeded")
	}
	if after, _ := MarshalState(r); !slices.Equal(after, before) {
		t.Error("a failed Apply changed the state")
	}
	if err := q.Begin(17).Add(Update{Weight: 1, Delta: make([]float32, 17)}); !errors.Is(err, ErrShape) {
		t.Errorf("a model of another size: %v, want ErrShape", err)
	}
}

func mustState(t testing.TB, spec string) []byte {
	t.Helper()
	s := mustParse(t, spec)
	runRounds(t, s, make([]float32, 4), twoRoundsOf4)
	b, err := MarshalState(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestQuorumSpec: the keys parse into the wrapper (inside the default
// bound), its spec parses back to the same, and bad values are refused.
func TestQuorumSpec(t *testing.T) {
	s := mustParse(t, "fedavgm,lr=3,momentum=0,quorum=24")
	b, ok := s.(AutoBound)
	if !ok {
		t.Fatalf("%T, want the default bound outside", s)
	}
	q, ok := b.Inner.(*Quorum)
	if !ok || q.Q != 24 || q.block() != DefaultQuorumBlock {
		t.Fatalf("inner %#v", b.Inner)
	}
	if got := Spec(s); Spec(mustParse(t, got)) != got {
		t.Fatalf("spec %q does not parse back to itself", got)
	}
	in := mustParse(t, "fedavgm,lr=3,momentum=0,anneal=200,quorum=24,quorum-by=input,quorum-frac=0.75")
	if got := Spec(in); Spec(mustParse(t, got)) != got || !quorumOf(t, in).ByInput || !strings.Contains(got, "quorum-by=input") {
		t.Fatalf("spec %q does not parse back to itself", got)
	}
	if Unbounded(mustParse(t, "fedavg,quorum=3,bound=off")) != true {
		t.Error("fedavg,quorum=3,bound=off is not reported unbounded")
	}
	for _, bad := range []string{
		"fedavg,quorum=0", "fedavg,quorum=65", "fedavg,quorum=x", "fedavg,quorum=4,quorum-block=0",
		"fedavg,quorum=4,quorum-block=2000", "fedavg,quorum-block=4", "fedavg,quorum-seed=1",
		"fedavg,quorum=4,dp-clip=1,dp-noise=1", "fedavg,quorum=4,quorum-by=x", "fedavg,quorum-by=input",
		"fedavg,quorum=4,quorum-by=input,quorum-block=4", "fedavg,quorum=4,quorum-frac=0.5",
		"fedavg,quorum=4,quorum-by=input,quorum-frac=1.5", "fedavg,quorum-frac=0.5",
	} {
		if _, err := Parse(bad); !errors.Is(err, ErrParam) {
			t.Errorf("%s: %v, want ErrParam", bad, err)
		}
	}
}

// FuzzQuorumState: no bytes make the decoder panic, and what decodes
// encodes back to the same bytes.
func FuzzQuorumState(f *testing.F) {
	f.Add(mustState(f, "fedavgm,quorum=2,bound=off"))
	f.Add(mustState(f, "fedavg,quorum=1,quorum-block=1,bound=off"))
	f.Fuzz(func(t *testing.T, data []byte) {
		q := &Quorum{Inner: NewFedAvgM(), Q: 1}
		if UnmarshalState(q, data) == nil {
			again, err := MarshalState(q)
			if err != nil || !slices.Equal(again, data) {
				t.Fatal("decoded state does not round-trip")
			}
		}
	})
}

// TestQuorumMin: in a dense update, a value below quorum-min × the RMS of
// the update's non-zero values is aggregated but does not make its client
// a sender.
func TestQuorumMin(t *testing.T) {
	for _, c := range []struct {
		spec    string
		support bool
	}{{"fedavg,quorum=2,bound=off", false}, {"fedavg,quorum=2,quorum-min=0,bound=off", true}} {
		s := mustParse(t, c.spec).(*Quorum)
		var ups []Update
		for id := range 10 {
			d := make([]float32, 8)
			d[0], d[1], d[4] = 1, -1, 1e-4
			ups = append(ups, Update{Weight: 1, Delta: d, Client: uint64(id + 1), ClientKnown: true})
		}
		aggregateRound(t, s, make([]float32, 8), ups)
		sup := s.Support()
		if sup[0] < 2 || (sup[1] >= 2) != c.support {
			t.Errorf("%s: support %v, want block 1 counted %v", c.spec, sup, c.support)
		}
	}
}

// inputRounds returns rounds over a model of a 3x4 first tensor (inputs
// 0..3, coordinate o·4+i) and a bias of 3: each round 6 of 40 honest
// clients send one weight each of inputs 0..2 (a different output unit
// per client) and the bias, and 2 of the 5 colluders (IDs 100..104) send
// the same plus every weight of input 3, which no honest client uses.
func inputRounds(seed uint64, rounds int) [][]Update {
	rng := rand.New(rand.NewPCG(seed, 9))
	var out [][]Update
	for range rounds {
		var round []Update
		ids := rng.Perm(40)[:6]
		for _, c := range rng.Perm(5)[:2] {
			ids = append(ids, 100+c)
		}
		for _, id := range ids {
			o := int32(rng.IntN(3))
			idx := []int32{o*4 + 0, o*4 + 1, o*4 + 2, 12, 13, 14}
			val := []float32{0.1, 0.1, 0.1, 0.1, 0.1, 0.1}
			if id >= 100 {
				idx = append(idx[:3], 3, 7, 11, 12, 13, 14)
				val = append(val[:3], 0.1, 0.1, 0.1, 0.1, 0.1, 0.1)
				slices.Sort(idx)
				idx = slices.Compact(idx)
				val = val[:len(idx)]
			}
			round = append(round, Update{Weight: 1, N: 15, Indices: idx, Values: val, Client: uint64(id + 1), ClientKnown: true})
		}
		out = append(out, round)
	}
	return out
}

// TestQuorumByInput: with quorum-by=input the weights of the input only
// colluders send never move, the weights of the inputs honest clients use
// open although each client sends one unit's weights (a block of 4 would
// need each block's own senders), and the bias, outside the first
// tensor, moves from the first round.
func TestQuorumByInput(t *testing.T) {
	shapes := [][]int{{3, 4}, {3}}
	s := mustParse(t, "fedavg,quorum=8,quorum-by=input,bound=off")
	if err := SetShapes(s, shapes); err != nil {
		t.Fatal(err)
	}
	g := make([]float32, 15)
	rounds := inputRounds(1, 30)
	aggregateRound(t, s, g, rounds[0])
	if g[0] != 0 || !(g[12] > 0) {
		t.Fatalf("round 1: weight %v (want 0: no quorum yet), bias %v (want moved: not guarded)", g[0], g[12])
	}
	for _, r := range rounds[1:] {
		aggregateRound(t, s, g, r)
	}
	for _, j := range []int{3, 7, 11} {
		if g[j] != 0 {
			t.Errorf("weight %d of the colluders' input moved to %v", j, g[j])
		}
	}
	for o := range 3 {
		for i := range 3 {
			if j := o*4 + i; !(g[j] > 0) {
				t.Errorf("weight %d of honest input %d at %v, want trained", j, i, g[j])
			}
		}
	}
	if sup := quorumOf(t, s).Support(); len(sup) != 4 || sup[3] > 5 || sup[3] == 0 || sup[0] < 8 {
		t.Errorf("support %v, want 4 inputs, input 3 with 1..5 senders, input 0 with ≥ 8", sup)
	}
	// In blocks of 4 (here a block is one unit's four inputs), the
	// colluders' input shares blocks with honest ones and is learnt.
	b := mustParse(t, "fedavg,quorum=8,quorum-block=4,bound=off")
	g = make([]float32, 15)
	for _, r := range inputRounds(1, 30) {
		aggregateRound(t, b, g, r)
	}
	if g[3] == 0 {
		t.Fatal("with blocks of 4 the colluders' input did not move: the test does not test")
	}
}

// TestQuorumByInputShapes: the input quorum refuses a round before the
// model's shapes, shapes that change, and a first tensor larger than the
// model; a first tensor that is not a matrix (a convolution) guards
// nothing; and SetShapes reaches the quorum inside the default bound.
func TestQuorumByInputShapes(t *testing.T) {
	s := mustParse(t, "fedavgm,lr=3,momentum=0,quorum=2,quorum-by=input")
	round := func(n int) error {
		acc := s.Begin(n)
		if err := acc.Add(Update{Weight: 1, Delta: make([]float32, n), Client: 1, ClientKnown: true}); err != nil {
			return err
		}
		return acc.Apply(make([]float32, n))
	}
	if err := round(15); !errors.Is(err, ErrShape) {
		t.Fatalf("a round before SetShapes: %v, want ErrShape", err)
	}
	if err := SetShapes(s, [][]int{{3, 4}, {3}}); err != nil {
		t.Fatal(err)
	}
	if err := SetShapes(s, [][]int{{4, 3}, {3}}); !errors.Is(err, ErrShape) {
		t.Fatalf("other shapes: %v, want ErrShape", err)
	}
	if err := round(10); !errors.Is(err, ErrShape) {
		t.Fatalf("a model smaller than its first tensor: %v, want ErrShape", err)
	}
	if err := SetShapes(mustParse(t, "fedavg,quorum=2,quorum-by=input"), nil); !errors.Is(err, ErrShape) {
		t.Fatalf("no tensors: %v, want ErrShape", err)
	}
	c := mustParse(t, "fedavg,quorum=2,quorum-by=input,bound=off")
	if err := SetShapes(c, [][]int{{2, 1, 3, 3}, {2}}); err != nil {
		t.Fatal(err)
	}
	g := make([]float32, 20)
	d := make([]float32, 20)
	for i := range d {
		d[i] = 1
	}
	aggregateRound(t, c, g, []Update{{Weight: 1, Delta: d, Client: 1, ClientKnown: true}})
	if slices.ContainsFunc(g, func(x float32) bool { return x != 1 }) {
		t.Fatalf("a convolution's quorum held coordinates back: %v", g)
	}
	// Blocks ignore shapes.
	if err := SetShapes(mustParse(t, "fedavg,quorum=2"), nil); err != nil {
		t.Fatal(err)
	}
}

// TestQuorumByInputState: the input quorum's state round-trips, carries
// the first tensor's shape, and is refused by a quorum of other shapes or
// of blocks (and the other way round).
func TestQuorumByInputState(t *testing.T) {
	const spec = "fedavgm,lr=3,momentum=0,quorum=3,quorum-by=input,bound=off"
	shapes := [][]int{{3, 4}, {3}}
	s := mustParse(t, spec)
	if err := SetShapes(s, shapes); err != nil {
		t.Fatal(err)
	}
	rounds := inputRounds(3, 8)
	g := make([]float32, 15)
	for _, r := range rounds[:4] {
		aggregateRound(t, s, g, r)
	}
	st, err := MarshalState(s)
	if err != nil {
		t.Fatal(err)
	}
	r := mustParse(t, spec)
	if err := UnmarshalState(r, st); !errors.Is(err, ErrState) {
		t.Fatalf("restore before SetShapes: %v, want ErrState", err)
	}
	other := mustParse(t, spec)
	if err := SetShapes(other, [][]int{{1, 12}, {3}}); err != nil {
		t.Fatal(err)
	}
	if err := UnmarshalState(other, st); !errors.Is(err, ErrState) {
		t.Fatalf("restore into other shapes: %v, want ErrState", err)
	}
	if err := UnmarshalState(mustParse(t, "fedavgm,lr=3,momentum=0,quorum=3,bound=off"), st); !errors.Is(err, ErrState) {
		t.Fatalf("restore into a block quorum: %v, want ErrState", err)
	}
	if err := SetShapes(r, shapes); err != nil {
		t.Fatal(err)
	}
	if err := UnmarshalState(r, st); err != nil {
		t.Fatal(err)
	}
	g2 := slices.Clone(g)
	for _, rd := range rounds[4:] {
		aggregateRound(t, s, g, rd)
		aggregateRound(t, r, g2, rd)
	}
	if !slices.Equal(g, g2) {
		t.Fatalf("restored quorum diverged: %v against %v", g2, g)
	}
	a, _ := MarshalState(s)
	b, _ := MarshalState(r)
	if !slices.Equal(a, b) {
		t.Fatal("restored state differs")
	}
}

// FuzzQuorumInputState: the input quorum's decoder never panics, and what
// decodes encodes back to the same bytes.
func FuzzQuorumInputState(f *testing.F) {
	s := mustParse(f, "fedavgm,quorum=2,quorum-by=input,quorum-frac=0.5,bound=off")
	if err := SetShapes(s, [][]int{{1, 4}}); err != nil {
		f.Fatal(err)
	}
	runRounds(f, s, make([]float32, 4), twoRoundsOf4)
	st, err := MarshalState(s)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(st)
	f.Fuzz(func(t *testing.T, data []byte) {
		q := &Quorum{Inner: NewFedAvgM(), Q: 1, ByInput: true}
		if err := q.SetShapes([][]int{{1, 4}}); err != nil {
			t.Fatal(err)
		}
		if UnmarshalState(q, data) == nil {
			again, err := MarshalState(q)
			if err != nil || !slices.Equal(again, data) {
				t.Fatal("decoded state does not round-trip")
			}
		}
	})
}

// TestQuorumFrac: with 8 honest clients and 2 colluders in all, Q = 24
// would never open anything; quorum-frac=0.75 opens the inputs most
// clients send (from the second round: the first round's clients are the
// population seen) and keeps the colluders' input shut.
func TestQuorumFrac(t *testing.T) {
	shapes := [][]int{{3, 4}, {3}}
	var rounds [][]Update
	for range 20 {
		var r []Update
		for id := range 10 {
			idx := []int32{0, 1, 2, 4, 5, 6, 8, 9, 10, 12}
			if id >= 8 {
				idx = []int32{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}
			}
			val := make([]float32, len(idx))
			for i := range val {
				val[i] = 0.1
			}
			r = append(r, Update{Weight: 1, N: 15, Indices: idx, Values: val, Client: uint64(id + 1), ClientKnown: true})
		}
		rounds = append(rounds, r)
	}
	for _, c := range []struct {
		spec string
		open bool
	}{{"fedavg,quorum=24,quorum-by=input,quorum-frac=0.75,bound=off", true}, {"fedavg,quorum=24,quorum-by=input,bound=off", false}} {
		s := mustParse(t, c.spec)
		if err := SetShapes(s, shapes); err != nil {
			t.Fatal(err)
		}
		g := make([]float32, 15)
		aggregateRound(t, s, g, rounds[0])
		if g[0] != 0 {
			t.Fatalf("%s: round 1 moved weight 0 to %v", c.spec, g[0])
		}
		for _, r := range rounds[1:] {
			aggregateRound(t, s, g, r)
		}
		if (g[0] > 0) != c.open {
			t.Errorf("%s: honest weight 0 at %v, want open %v", c.spec, g[0], c.open)
		}
		for _, j := range []int{3, 7, 11} {
			if g[j] != 0 {
				t.Errorf("%s: weight %d of the colluders' input moved to %v", c.spec, j, g[j])
			}
		}
		if !(g[12] > 0) {
			t.Errorf("%s: the bias, not guarded, did not move", c.spec)
		}
	}
}
