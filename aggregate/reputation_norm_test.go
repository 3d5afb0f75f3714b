package aggregate

import (
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// ipmRounds returns rounds of k updates of n values from 40 clients on
// skewed data: each honest client has a block of coordinates of its own
// and a norm of its own, spread as on Dirichlet MNIST (log2 normal with a
// standard deviation of 0.6, times its example count to the power 0.25),
// so that a few honest clients send updates well above the line on their
// example counts; the attackers of a round all send −0.1 times the mean
// of the round's honest updates (inner-product manipulation): small,
// reversed updates.
func ipmRounds(seed uint64, rounds, n, k int, attackers ...uint64) (ups [][]Update, ids [][]uint64) {
	const clients, block, sd = 40, 6, 0.4
	rng := rand.New(rand.NewPCG(seed, 14))
	scale, weight := make([]float64, clients), make([]float64, clients)
	for c := range scale {
		weight[c] = math.Round(100 * math.Exp2(6*rng.Float64()))
		scale[c] = math.Exp2(sd*rng.NormFloat64()) * math.Pow(weight[c]/100, 0.25)
	}
	common := make([]float64, n)
	for i := range common {
		common[i] = 0 * rng.NormFloat64()
	}
	for range rounds {
		var round []Update
		var rid []uint64
		var bad []int
		mean := make([]float64, n)
		honest := 0
		for _, c := range rng.Perm(clients)[:k] {
			id := uint64(c)
			rid = append(rid, id)
			if slices.Contains(attackers, id) {
				bad = append(bad, len(round))
				round = append(round, Update{Weight: weight[c], Client: id, ClientKnown: true})
				continue
			}
			s := scale[c] * math.Exp2(0.3*rng.NormFloat64())
			d := make([]float32, n)
			for i := range d {
				d[i] = float32(s * (common[i] + 0.05*rng.NormFloat64()))
			}
			for i := range block {
				d[(c*block+i)%n] += float32(s)
			}
			for i, v := range d {
				mean[i] += float64(v)
			}
			honest++
			round = append(round, Update{Weight: weight[c], Delta: d, Client: id, ClientKnown: true})
		}
		crafted := make([]float32, n)
		for i, v := range mean {
			crafted[i] = float32(-0.1 * v / float64(max(honest, 1)))
		}
		for _, j := range bad {
			round[j].Delta = slices.Clone(crafted)
		}
		ups, ids = append(ups, round), append(ids, rid)
	}
	return ups, ids
}

// TestReputationNormRobustUnderIPM: small reversed updates from 20% of the
// clients lower the rounds' median norms and, while trusted, pull the line
// down, so that reputation-norm excludes honest clients it leaves alone
// without the attack (103 honest updates in the second half instead of
// 14); reputation-norm-robust excludes less than half as many (40: the
// line is fitted on the 32 honest clients, not on 40), and no more than
// reputation-norm without the attack, while the attackers are still all
// excluded (by the agreement score).
func TestReputationNormRobustUnderIPM(t *testing.T) {
	attackers := []uint64{3, 8, 17, 22, 29, 31, 36, 38}
	const n, rounds, k = 300, 200, 10
	const spec = "cclip,reject=4,same=0.99,growth=2,reputation=2,reputation-high=3,reputation-norm=1.7"
	attacked, attackedIDs := ipmRounds(5, rounds, n, k, attackers...)
	clean, cleanIDs := ipmRounds(5, rounds, n, k)
	var honest [2][2]int // [robust][attacked]
	for rb, s := range []string{spec, spec + ",reputation-norm-robust=true"} {
		for at, ups := range [][][]Update{clean, attacked} {
			bad, ids := attackers, attackedIDs
			if at == 0 {
				bad, ids = nil, cleanIDs
			}
			caught, all, h := exclusions(t, s, ups, ids, bad)
			honest[rb][at] = h
			if caught != all {
				t.Errorf("%s, attacked %v: %d of %d attacker updates excluded in the second half", s, at == 1, caught, all)
			}
		}
	}
	t.Logf("honest updates excluded in the second half: reputation-norm %d clean, %d attacked; robust %d clean, %d attacked",
		honest[0][0], honest[0][1], honest[1][0], honest[1][1])
	if honest[0][1] < 2*honest[0][0]+20 {
		t.Errorf("reputation-norm excludes %d honest updates attacked, %d clean: the rounds do not show what the attack does to it", honest[0][1], honest[0][0])
	}
	if 2*honest[1][1] > honest[0][1] || honest[1][0] > honest[0][0] {
		t.Errorf("reputation-norm-robust excludes %d honest updates attacked, %d clean (reputation-norm %d attacked, %d clean)", honest[1][1], honest[1][0], honest[0][1], honest[0][0])
	}
}

// TestReputationNormRobustCatchesLargeUpdates: reputation-norm-robust still
// excludes every update of the clients that keep sending updates 2.5 times
// the size of the honest ones, and no honest one.
func TestReputationNormRobustCatchesLargeUpdates(t *testing.T) {
	attackers := []uint64{4, 13, 21}
	ups, ids := largeRounds(2, 60, 300, 10, attackers...)
	const spec = "cclip,reject=4,same=0.99,growth=2,reputation=50,reputation-norm=1.7,reputation-norm-robust=true"
	if caught, all, honest := exclusions(t, spec, ups, ids, attackers); all == 0 || caught != all || honest != 0 {
		t.Errorf("%d of %d attacker updates excluded in the second half, %d honest ones excluded", caught, all, honest)
	}
}

// restoreContinues runs spec over the first split rounds of ups (of n
// values), restores its state into a fresh strategy, checks that it
// marshals back to the same bytes and that both continue bit for bit over
// the other rounds, and returns the state.
func restoreContinues(t *testing.T, spec string, ups [][]Update, n, split int) []byte {
	t.Helper()
	a := mustParse(t, spec)
	g := make([]float32, n)
	runRounds(t, a, g, ups[:split])
	state, err := MarshalState(a)
	if err != nil {
		t.Fatal(err)
	}
	b := mustParse(t, spec)
	if err := UnmarshalState(b, state); err != nil {
		t.Fatal(err)
	}
	if again, _ := MarshalState(b); !slices.Equal(again, state) {
		t.Fatal("restored state marshals differently")
	}
	want, got := runRounds(t, a, slices.Clone(g), ups[split:]), runRounds(t, b, slices.Clone(g), ups[split:])
	for r := range want {
		if !bitsEqual(want[r], got[r]) {
			t.Fatalf("round %d differs after restore", split+r+1)
		}
	}
	return state
}

// TestReputationNormRobustState: a state with NormRobust restores bit for
// bit and continues the same; one without it (the extension as written
// before the key) restores as NormRobust off; a bad mode, or the mode
// without Norm, is refused.
func TestReputationNormRobustState(t *testing.T) {
	const n = 300
	const spec = "cclip,reject=4,same=0.99,growth=2,reputation=2,reputation-high=3,reputation-norm=1.4,reputation-norm-robust=true"
	ups, _ := largeRounds(3, 30, n, 10, 4, 13)
	state := restoreContinues(t, spec, ups, n, 15)
	// The same state less the mode is the extension before the key.
	body := state[:len(state)-4]
	w := newStateWriter("reputation")
	w.b = append(w.b, body[len(stateMagic)+2+len("reputation"):len(body)-8]...)
	c := mustParse(t, spec).(*Reputation)
	if err := UnmarshalState(c, w.done()); err != nil || c.NormRobust || c.Norm != 1.4 {
		t.Fatalf("extension without the mode: %v, NormRobust %v, Norm %v", err, c.NormRobust, c.Norm)
	}
	for _, mode := range []uint64{0, 2} {
		w := newStateWriter("reputation")
		w.b = append(w.b, body[len(stateMagic)+2+len("reputation"):len(body)-8]...)
		w.u64(mode)
		if err := UnmarshalState(c, w.done()); !errors.Is(err, ErrState) {
			t.Errorf("mode %d accepted: %v", mode, err)
		}
	}
	// The mode with High alone.
	h := mustParse(t, "cclip,reject=4,same=0.99,growth=2,reputation=2,reputation-high=3")
	runRounds(t, h, make([]float32, n), ups[:5])
	hs, _ := MarshalState(h)
	w = newStateWriter("reputation")
	w.b = append(w.b, hs[len(stateMagic)+2+len("reputation"):len(hs)-4]...)
	w.u64(1)
	if err := UnmarshalState(h, w.done()); !errors.Is(err, ErrState) {
		t.Errorf("mode without reputation-norm accepted: %v", err)
	}
}

func TestReputationNormRobustParse(t *testing.T) {
	want := "cclip,tau=1,iters=3,lr=1,reputation=2,reputation-min=3,reputation-max=0.5,reputation-norm=1.7,reputation-norm-robust=true"
	s := mustParse(t, "cclip,reputation=2,reputation-norm=1.7,reputation-norm-robust=true")
	if got := Spec(s); got != want {
		t.Errorf("Spec = %q, want %q", got, want)
	}
	if r := mustParse(t, "cclip,reputation=2,reputation-norm=1.7,reputation-norm-robust=false").(*Reputation); r.NormRobust {
		t.Error("reputation-norm-robust=false gives NormRobust")
	}
	for _, spec := range []string{
		"cclip,reputation=2,reputation-norm-robust=true", "cclip,reputation-norm-robust=true",
		"cclip,reputation=2,reputation-norm=1.7,reputation-norm-robust=yes",
	} {
		if _, err := Parse(spec); !errors.Is(err, ErrParam) {
			t.Errorf("%s: error %v, want ErrParam", spec, err)
		}
	}
}

// FuzzReputationNormRobustState feeds arbitrary bytes to the reputation's
// decoder, from states with and without NormRobust: none may panic, and
// what decodes must encode back to the same bytes.
func FuzzReputationNormRobustState(f *testing.F) {
	ups, _ := largeRounds(4, 8, 40, 6, 2)
	for _, spec := range []string{
		"cclip,reputation=2,reputation-norm=1.7,reputation-norm-robust=true",
		"cclip,reputation=2,reputation-high=3,reputation-norm=1.4,reputation-norm-robust=true",
		"cclip,reputation=2,reputation-norm=1.7",
	} {
		s := mustParse(f, spec)
		runRounds(f, s, make([]float32, 40), ups)
		b, _ := MarshalState(s)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s := &Reputation{Inner: NewCenteredClip()}
		if UnmarshalState(s, data) != nil {
			return
		}
		if s.NormRobust && s.Norm == 0 {
			t.Fatal("NormRobust restored without Norm")
		}
		again, err := MarshalState(s)
		if err != nil || !slices.Equal(again, data) {
			t.Fatal("decoded state does not round-trip")
		}
	})
}
