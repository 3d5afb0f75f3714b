package aggregate

import (
	"errors"
	"math/rand/v2"
	"slices"
	"testing"
)

// repRounds returns rounds of k updates of n values from clients drawn out
// of 30: each honest client has a coordinate of its own on top of a small
// shared direction and noise (non-IID), and the clients in attackers send
// their honest update reversed. ids[r][j] is the client of update j.
func repRounds(seed uint64, rounds, n, k int, attackers ...uint64) (ups [][]Update, ids [][]uint64) {
	const clients = 30
	rng := rand.New(rand.NewPCG(seed, 11))
	common := make([]float32, n)
	for i := range common {
		common[i] = float32(0.3 + 0.3*rng.Float64())
	}
	for range rounds {
		perm := rng.Perm(clients)[:k]
		var round []Update
		var rid []uint64
		for _, c := range perm {
			id := uint64(c)
			d := make([]float32, n)
			for i := range d {
				d[i] = common[i] + float32(0.5*rng.NormFloat64())
			}
			d[c%n] += 6
			if slices.Contains(attackers, id) {
				for i := range d {
					d[i] = -d[i]
				}
			}
			round = append(round, Update{Weight: 1, Delta: d, Client: id, ClientKnown: true})
			rid = append(rid, id)
		}
		ups = append(ups, round)
		ids = append(ids, rid)
	}
	return ups, ids
}

// TestReputationExcludesFixedAttackers: after a few rounds the fixed
// sign-flipping clients, and no honest one, are excluded, and the round's
// result is then the inner rule's on the honest updates alone.
func TestReputationExcludesFixedAttackers(t *testing.T) {
	const n, k, rounds = 20, 10, 40
	attackers := []uint64{3, 17, 25}
	ups, ids := repRounds(1, rounds, n, k, attackers...)
	r := mustParse(t, "median,reputation=2").(*Reputation)
	g := make([]float32, n)
	var caught, honestDropped, attackerRounds int
	for rd := range ups {
		acc := r.Begin(n)
		for _, u := range ups[rd] {
			if err := acc.Add(u); err != nil {
				t.Fatal(err)
			}
		}
		before := slices.Clone(g)
		if err := acc.Apply(g); err != nil {
			t.Fatal(err)
		}
		ex := acc.(Excluder).Excluded()
		var honest []Update
		for j, id := range ids[rd] {
			bad := slices.Contains(attackers, id)
			if bad && rd >= rounds/2 {
				attackerRounds++
				if slices.Contains(ex, j) {
					caught++
				}
			}
			if !bad && slices.Contains(ex, j) {
				honestDropped++
			}
			if !bad {
				honest = append(honest, ups[rd][j])
			}
		}
		if rd == rounds-1 {
			want := slices.Clone(before)
			runRounds(t, Median{}, want, [][]Update{honest})
			if slices.ContainsFunc(ids[rd], func(id uint64) bool { return slices.Contains(attackers, id) }) && !bitsEqual(g, want) {
				t.Errorf("last round: result differs from the median of the honest updates")
			}
		}
	}
	if attackerRounds == 0 || caught != attackerRounds {
		t.Errorf("second half: %d of %d attacker updates excluded", caught, attackerRounds)
	}
	if honestDropped != 0 {
		t.Errorf("%d honest updates excluded", honestDropped)
	}
	tracked, _, means := r.Tracked()
	for i, id := range tracked {
		if slices.Contains(attackers, id) && means[i] >= 0 {
			t.Errorf("attacker %d has mean score %v", id, means[i])
		}
	}
}

// TestReputationNeedsIdentity: updates without a client identity are
// never excluded, so the rule is the bare inner one.
func TestReputationNeedsIdentity(t *testing.T) {
	const n = 20
	ups, _ := repRounds(2, 10, n, 10, 3, 17, 25)
	for _, round := range ups {
		for j := range round {
			round[j].ClientKnown = false
		}
	}
	a, b := make([]float32, n), make([]float32, n)
	runRounds(t, mustParse(t, "median,reputation=1"), a, ups)
	runRounds(t, Median{}, b, ups)
	if !bitsEqual(a, b) {
		t.Fatal("anonymous updates were excluded")
	}
}

// TestReputationStateRoundTrip: the state saved after some rounds makes a
// fresh strategy continue bit for bit, excluding the same clients; a
// failed Apply leaves the state unchanged.
func TestReputationStateRoundTrip(t *testing.T) {
	const n = 20
	for _, spec := range []string{"trimmed-mean,reputation=2", "fedavgm,reputation=1.5,reputation-min=2"} {
		ups, _ := repRounds(3, 30, n, 10, 4, 9)
		a := mustParse(t, spec)
		g := make([]float32, n)
		runRounds(t, a, g, ups[:15])
		state, err := MarshalState(a)
		if err != nil {
			t.Fatal(err)
		}
		b := mustParse(t, spec)
		if err := UnmarshalState(b, state); err != nil {
			t.Fatal(err)
		}
		if again, _ := MarshalState(b); !slices.Equal(again, state) {
			t.Fatalf("%s: restored state marshals differently", spec)
		}
		// A failed Apply (wrong model size) changes nothing.
		acc := b.Begin(n)
		for _, u := range ups[15] {
			if err := acc.Add(u); err != nil {
				t.Fatal(err)
			}
		}
		if err := acc.Apply(make([]float32, n+1)); err == nil {
			t.Fatal("Apply into a wrong-size model succeeded")
		}
		if after, _ := MarshalState(b); !slices.Equal(after, state) {
			t.Fatalf("%s: failed Apply changed the state", spec)
		}
		ga, gb := slices.Clone(g), slices.Clone(g)
		want := runRounds(t, a, ga, ups[15:])
		got := runRounds(t, b, gb, ups[15:])
		for r := range want {
			if !bitsEqual(want[r], got[r]) {
				t.Fatalf("%s: round %d differs after restore", spec, r+16)
			}
		}
		// Corrupt or foreign state is refused and leaves b unchanged.
		saved, _ := MarshalState(b)
		for _, bad := range [][]byte{state[:len(state)-5], append(slices.Clone(state[:len(state)-4]), 0, 0, 0, 0), nil} {
			if err := UnmarshalState(b, bad); !errors.Is(err, ErrState) {
				t.Errorf("%s: bad state accepted: %v", spec, err)
			}
		}
		if now, _ := MarshalState(b); !slices.Equal(now, saved) {
			t.Fatalf("%s: refused state changed the strategy", spec)
		}
	}
	// Unsorted client table, behind a valid checksum.
	r := &Reputation{Inner: Median{}, Z: 2, MinRounds: 3, MaxDrop: 0.5}
	r.st = reputationState{clients: []clientScore{{id: 5, n: 1, sum: 0.5}, {id: 2, n: 1, sum: 0.1}}, n: 2, sum: 0.6, sumSq: 0.26}
	bad, _ := r.MarshalBinary()
	if err := (&Reputation{Inner: Median{}}).UnmarshalBinary(bad); !errors.Is(err, ErrState) {
		t.Fatalf("unsorted table accepted: %v", err)
	}
}

// TestReputationBoundedMemory: no more than MaxClients clients are tracked.
func TestReputationBoundedMemory(t *testing.T) {
	ups, _ := repRounds(4, 20, 20, 10)
	r := &Reputation{Inner: Median{}, Z: 2, MinRounds: 3, MaxDrop: 0.5, MaxClients: 7}
	runRounds(t, r, make([]float32, 20), ups)
	if ids, _, _ := r.Tracked(); len(ids) != 7 {
		t.Fatalf("%d clients tracked, limit 7", len(ids))
	}
}

func TestReputationDeterministic(t *testing.T) {
	ups, _ := repRounds(5, 20, 300, 10, 1, 2)
	a, b := make([]float32, 300), make([]float32, 300)
	runRounds(t, mustParse(t, "multi-krum,f=1,reputation=2"), a, ups)
	runRounds(t, mustParse(t, "multi-krum,f=1,reputation=2"), b, ups)
	if !bitsEqual(a, b) {
		t.Fatal("two runs differ")
	}
}

func TestReputationParse(t *testing.T) {
	for spec, want := range map[string]string{
		"median,reputation=2": "median,reputation=2,reputation-min=3,reputation-max=0.5",
		"median,bucket=2,reputation=2.5,reputation-min=5,reputation-max=0.3,reputation-clients=1000": "median,bucket=2,reputation=2.5,reputation-min=5,reputation-max=0.3,reputation-clients=1000",
	} {
		s := mustParse(t, spec)
		if got := Spec(s); got != want {
			t.Errorf("Spec(Parse(%q)) = %q, want %q", spec, got, want)
		}
		if again := Spec(mustParse(t, Spec(s))); again != want {
			t.Errorf("spec %q does not round-trip: %q", want, again)
		}
	}
	for _, spec := range []string{
		"median,reputation=0", "median,reputation=-1", "median,reputation=NaN", "median,reputation=Inf",
		"median,reputation=2,reputation-min=0", "median,reputation=2,reputation-max=0.51",
		"median,reputation=2,reputation-max=-1", "median,reputation=2,reputation-clients=-1",
		"median,reputation-min=3", "median,reputation-max=0.2", "median,reputation-clients=5",
	} {
		if _, err := Parse(spec); !errors.Is(err, ErrParam) {
			t.Errorf("%s: error %v, want ErrParam", spec, err)
		}
	}
}

// TestReputationNoPerElementAllocs: a round's allocations do not grow with
// the model size.
func TestReputationNoPerElementAllocs(t *testing.T) {
	count := func(n int) float64 {
		ups, _ := repRounds(6, 1, n, 10, 3)
		g := make([]float32, n)
		return testing.AllocsPerRun(5, func() {
			r := &Reputation{Inner: Median{}, Z: 2, MinRounds: 1, MaxDrop: 0.5}
			for range 2 {
				acc := r.Begin(n)
				for _, u := range ups[0] {
					_ = acc.Add(u)
				}
				_ = acc.Apply(g)
			}
		})
	}
	// Per-element allocations would add thousands; a size class or a map
	// bucket may differ by one.
	if small, big := count(64*64), count(64*64*16); big > small+2 {
		t.Fatalf("allocations grow with n: %v for n=4096, %v for n=65536", small, big)
	}
}
