package aggregate

import (
	"errors"
	"math/bits"
	"slices"
	"testing"
)

// Red-team tests of the input quorum in the default strategy
// (runspec.DefaultStrategy: quorum=24,quorum-by=input,quorum-frac=0.75).
// Each demonstrates a limit the docs state (docs/robustness.md,
// "Backdoor"), so that a change of behaviour shows up here.

// redteamShapes is a 3×4 first layer (inputs 0..3; input 3 is the
// trigger's, which no honest client ever lights) and a bias of 3.
var redteamShapes = [][]int{{3, 4}, {3}}

// trigger are the first-layer weights from input 3.
var trigger = []int{3, 7, 11}

// honestUpdate sends 0.1 on the weights from inputs 0..2 of every unit,
// and on the bias.
func honestUpdate(id uint64) Update {
	d := make([]float32, 15)
	for o := range 3 {
		for i := range 3 {
			d[o*4+i] = 0.1
		}
		d[12+o] = 0.1
	}
	return Update{Weight: 1, Delta: d, Client: id, ClientKnown: true}
}

// attackerUpdate is an honest update plus a push of 0.5 on the trigger's
// weights.
func attackerUpdate(id uint64) Update {
	u := honestUpdate(id)
	for _, j := range trigger {
		u.Delta[j] = 0.5
	}
	return u
}

// TestRedteamQuorumEarlyBird: with quorum-frac, the threshold of round k
// is ⌈0.75 × the distinct clients of rounds 1..k−1⌉, so whoever makes up
// the first rounds makes the population. A single attacker that is round
// 1's only client (a coordinator opens a round with --min-clients 1 alive
// client, the default) sets the threshold of round 2 to 1: every input it
// sent, its trigger included, is open in round 2, and its push there is
// learnt, diluted by round 2's honest clients. The input closes again once
// honest clients have been seen (the threshold rises above its 1 bit), so
// a lowered threshold does not keep an input open; but what the trigger's
// weights learnt in the window stays, frozen, whatever the attacker sends
// afterwards. Without quorum-frac (quorum=24 alone) nothing moves them.
func TestRedteamQuorumEarlyBird(t *testing.T) {
	const attacker = 1000
	honest := func(first, n int) []Update {
		var r []Update
		for id := first; id < first+n; id++ {
			r = append(r, honestUpdate(uint64(id)))
		}
		return r
	}
	for _, c := range []struct {
		spec   string
		opened bool
	}{
		{"fedavg,quorum=24,quorum-by=input,quorum-frac=0.75,bound=off", true},
		{"fedavg,quorum=24,quorum-by=input,bound=off", false},
	} {
		s := mustParse(t, c.spec)
		if err := SetShapes(s, redteamShapes); err != nil {
			t.Fatal(err)
		}
		g := make([]float32, 15)
		aggregateRound(t, s, g, []Update{attackerUpdate(attacker)})
		if g[3] != 0 {
			t.Fatalf("%s: round 1 moved the trigger's weight to %v", c.spec, g[3])
		}
		aggregateRound(t, s, g, append(honest(1, 9), attackerUpdate(attacker)))
		if moved := g[3] != 0; moved != c.opened {
			t.Fatalf("%s: after round 2, trigger weight %v: moved %v, want %v", c.spec, g[3], moved, c.opened)
		}
		taught := slices.Clone(g)
		// 30 more rounds: 9 of 40 honest clients and the attacker, which
		// goes on pushing.
		for r := range 30 {
			aggregateRound(t, s, g, append(honest(1+(r*9)%40, 9), attackerUpdate(attacker)))
		}
		for _, j := range trigger {
			if g[j] != taught[j] {
				t.Errorf("%s: trigger weight %d moved from %v to %v after round 2", c.spec, j, taught[j], g[j])
			}
		}
		if !(g[0] > taught[0]) {
			t.Errorf("%s: honest weight 0 did not train after round 2: %v", c.spec, g[0])
		}
	}
}

// TestRedteamQuorumIdentities: the quorum counts hashed identities, and
// with the default quorum-seed (0) the hash is public: an attacker who can
// take client IDs (a coordinator's IDs are sequential registrations with
// the shared join secret, bounded by --register-rate and --max-clients)
// needs exactly 24 of them with distinct bits, found among the first IDs,
// to open the trigger: honest clients, whose IDs fall where they may, need
// about 30. 23 such identities are not enough.
func TestRedteamQuorumIdentities(t *testing.T) {
	var ids []uint64
	used := uint64(0)
	for id := uint64(1); len(ids) < 24; id++ {
		if b := uint64(1) << (mix64(id) >> 58); used&b == 0 {
			used |= b
			ids = append(ids, id)
		}
	}
	if ids[23] > 100 {
		t.Fatalf("24 distinct bits need IDs up to %d", ids[23])
	}
	for _, n := range []int{23, 24} {
		s := mustParse(t, "fedavg,quorum=24,quorum-by=input,bound=off")
		if err := SetShapes(s, redteamShapes); err != nil {
			t.Fatal(err)
		}
		var r []Update
		for _, id := range ids[:n] {
			r = append(r, attackerUpdate(id))
		}
		g := make([]float32, 15)
		aggregateRound(t, s, g, r)
		aggregateRound(t, s, g, r)
		if opened := g[3] != 0; opened != (n == 24) {
			t.Errorf("%d identities: trigger weight %v, want opened %v", n, g[3], n == 24)
		}
	}
}

// TestRedteamQuorumAnonymous: updates without a client identity
// (ClientKnown false) are masked like the others, join no support and are
// not counted among the clients seen: any number of them opens nothing,
// and they neither lower nor raise quorum-frac's threshold.
func TestRedteamQuorumAnonymous(t *testing.T) {
	s := mustParse(t, "fedavg,quorum=24,quorum-by=input,quorum-frac=0.75,bound=off")
	if err := SetShapes(s, redteamShapes); err != nil {
		t.Fatal(err)
	}
	g := make([]float32, 15)
	for range 5 {
		var r []Update
		for id := range 100 {
			u := attackerUpdate(uint64(id))
			u.ClientKnown = false
			r = append(r, u)
		}
		aggregateRound(t, s, g, r)
	}
	for j := range 12 {
		if g[j] != 0 {
			t.Fatalf("anonymous updates moved first-layer weight %d to %v", j, g[j])
		}
	}
	if !(g[12] > 0) {
		t.Fatal("the bias, not guarded, did not move: the updates were not aggregated")
	}
	q := quorumOf(t, s)
	if q.seen != 0 || slices.ContainsFunc(q.Support(), func(n int) bool { return n != 0 }) {
		t.Fatalf("anonymous updates counted: seen %d bits, support %v", bits.OnesCount64(q.seen), q.Support())
	}
}

// TestRedteamQuorumRestoreEdges: states the FSM may meet on restore. A
// state saved before the first round (no support yet) restores and goes
// on bit for bit; a convolution's state (nothing guarded) does not restore
// into a dense first layer nor the other way round; a failed restore
// leaves the quorum as it was.
func TestRedteamQuorumRestoreEdges(t *testing.T) {
	const spec = "fedavgm,lr=3,momentum=0,anneal=200,quorum=24,quorum-by=input,quorum-frac=0.75"
	shaped := func(shapes [][]int) Strategy {
		s := mustParse(t, spec)
		if err := SetShapes(s, shapes); err != nil {
			t.Fatal(err)
		}
		return s
	}
	rounds := make([][]Update, 6)
	for r := range rounds {
		for id := range 8 {
			u := honestUpdate(uint64(id + 1))
			if id == 7 {
				u = attackerUpdate(uint64(id + 1))
			}
			u.Delta[r%3] *= 2
			rounds[r] = append(rounds[r], u)
		}
	}
	a := shaped(redteamShapes)
	before, err := MarshalState(a)
	if err != nil {
		t.Fatal(err)
	}
	b := shaped(redteamShapes)
	if err := UnmarshalState(b, before); err != nil {
		t.Fatalf("a state from before the first round: %v", err)
	}
	ga, gb := make([]float32, 15), make([]float32, 15)
	runRounds(t, a, ga, rounds[:3])
	runRounds(t, b, gb, rounds[:3])
	mid, err := MarshalState(a)
	if err != nil {
		t.Fatal(err)
	}
	// A failed restore (a convolution's quorum into this one) leaves b as
	// it was: it goes on like a.
	conv := shaped([][]int{{2, 1, 3, 3}, {2}})
	runRounds(t, conv, make([]float32, 20), [][]Update{{{Weight: 1, Delta: make([]float32, 20), Client: 1, ClientKnown: true}}})
	convState, err := MarshalState(conv)
	if err != nil {
		t.Fatal(err)
	}
	if err := UnmarshalState(b, convState); !errors.Is(err, ErrState) {
		t.Fatalf("a convolution's state into a dense first layer: %v, want ErrState", err)
	}
	if err := UnmarshalState(shaped([][]int{{2, 1, 3, 3}, {2}}), mid); !errors.Is(err, ErrState) {
		t.Fatalf("a dense first layer's state into a convolution: %v, want ErrState", err)
	}
	if got, _ := MarshalState(b); !slices.Equal(got, mid) {
		t.Fatal("a failed restore changed the state")
	}
	c := shaped(redteamShapes)
	if err := UnmarshalState(c, mid); err != nil {
		t.Fatal(err)
	}
	gc := slices.Clone(ga)
	runRounds(t, a, ga, rounds[3:])
	runRounds(t, b, gb, rounds[3:])
	runRounds(t, c, gc, rounds[3:])
	if !slices.Equal(ga, gb) || !slices.Equal(ga, gc) {
		t.Fatalf("replicas diverged: %v, %v, %v", ga, gb, gc)
	}
	sa, _ := MarshalState(a)
	sb, _ := MarshalState(b)
	sc, _ := MarshalState(c)
	if !slices.Equal(sa, sb) || !slices.Equal(sa, sc) {
		t.Fatal("replicas' states differ")
	}
	if ga[3] != 0 {
		t.Fatalf("the attacker's input (1 of 8 clients) moved to %v", ga[3])
	}
}
