package aggregate

import (
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

func voteRound(t *testing.T, s Strategy, global []float32, ups ...Update) []float32 {
	t.Helper()
	g := slices.Clone(global)
	aggregateRound(t, s, g, ups)
	return g
}

// TestSignVoteMajority checks the votes by hand: the majority sign moves a
// coordinate by lr whatever the magnitudes, ties and coordinates without a
// vote stay put, and sparse updates vote only where they sent.
func TestSignVoteMajority(t *testing.T) {
	s := SignVote{LR: 0.5}
	global := []float32{1, 1, 1, 1, 1, 1}
	got := voteRound(t, s, global,
		Update{Weight: 1, Delta: []float32{1, -1e30, 2, 0, -3, 0}},
		Update{Weight: 1, Delta: []float32{2, 1, -2, 0, 0, 0}},
		Update{Weight: 5, Delta: []float32{-9e30, 1, 1e-40, 0, 0, 0}},
		Update{Weight: 1, N: 6, Indices: []int32{1, 3}, Values: []float32{-1, 7}},
	)
	// Votes: +1, −1+1+1−1 = 0, +1−1+1 = +1, +1, −1, none.
	want := []float32{1.5, 1, 1.5, 1.5, 0.5, 1}
	if !slices.Equal(got, want) {
		t.Fatalf("signvote = %v, want %v", got, want)
	}

	// Weighted: the update of weight 5 outvotes the two others.
	got = voteRound(t, SignVote{LR: 0.5, Weighted: true}, global[:2],
		Update{Weight: 1, Delta: []float32{1, 1}},
		Update{Weight: 2, Delta: []float32{1, -1}},
		Update{Weight: 5, Delta: []float32{-1, -1}},
	)
	if want := []float32{0.5, 0.5}; !slices.Equal(got, want) {
		t.Fatalf("weighted signvote = %v, want %v", got, want)
	}
	// Unweighted, the same updates: two against one at coordinate 0, a tie
	// is impossible with three votes, one against two at coordinate 1.
	got = voteRound(t, s, global[:2],
		Update{Weight: 1, Delta: []float32{1, 1}},
		Update{Weight: 2, Delta: []float32{1, -1}},
		Update{Weight: 5, Delta: []float32{-1, -1}},
	)
	if want := []float32{1.5, 0.5}; !slices.Equal(got, want) {
		t.Fatalf("unweighted signvote = %v, want %v", got, want)
	}
}

// TestSignVoteSparseOrderAndBound checks that a sparse update votes as its
// dense form, that the order of Add does not matter, and that AutoBound
// around signvote (which scales updates down) leaves every sign.
func TestSignVoteSparseOrderAndBound(t *testing.T) {
	const n = 500
	ups := randomUpdates(3, n, 7, 0.1)
	dense := make([]Update, len(ups))
	for i, u := range ups {
		dense[i] = densify(u)
	}
	global := make([]float32, n)
	s := SignVote{LR: 0.01}
	a := voteRound(t, s, global, ups...)
	if b := voteRound(t, s, global, dense...); !slices.Equal(a, b) {
		t.Fatal("sparse and dense votes differ")
	}
	rev := slices.Clone(ups)
	slices.Reverse(rev)
	if b := voteRound(t, s, global, rev...); !slices.Equal(a, b) {
		t.Fatal("the order of Add changed the vote")
	}
	bounded, err := Parse("signvote,lr=0.01,bound=auto")
	if err != nil {
		t.Fatal(err)
	}
	big := slices.Clone(ups)
	big[0].Values = slices.Clone(big[0].Values)
	for i := range big[0].Values {
		big[0].Values[i] *= 1000
	}
	if b := voteRound(t, bounded, global, big...); !slices.Equal(a, b) {
		t.Fatal("AutoBound changed the signs")
	}
	moved := 0
	for _, v := range a {
		if v != 0 {
			moved++
			if v != 0.01 && v != -0.01 {
				t.Fatalf("a coordinate moved by %v, want ±lr", v)
			}
		}
	}
	if moved == 0 {
		t.Fatal("nothing moved")
	}
}

func TestSignVoteParse(t *testing.T) {
	s, err := Parse("signvote")
	if err != nil || s != (SignVote{LR: DefaultSignVoteLR}) {
		t.Fatalf("Parse(signvote) = %v, %v", s, err)
	}
	s, err = Parse("signvote,lr=0.02,weighted=true")
	if err != nil || s != (SignVote{LR: 0.02, Weighted: true}) {
		t.Fatalf("Parse = %v, %v", s, err)
	}
	if again, err := Parse(Spec(s)); err != nil || again != s {
		t.Fatalf("Parse(Spec(%v)) = %v, %v", s, again, err)
	}
	if IsBounded(s) || Unbounded(s) {
		t.Error("signvote is neither bounded by a wrapper nor an unbounded mean")
	}
	for _, spec := range []string{"signvote,lr=0", "signvote,lr=-1", "signvote,lr=inf", "signvote,lr=NaN", "signvote,lr=1e7", "signvote,weighted=maybe", "signvote,beta=1", "signvote,dp-clip=1"} {
		if _, err := Parse(spec); !errors.Is(err, ErrParam) && !errors.Is(err, ErrPrivacy) {
			t.Errorf("Parse(%q) = %v, want a parameter error", spec, err)
		}
	}
	acc := SignVote{}.Begin(3)
	if err := acc.Add(Update{Weight: 1, Delta: make([]float32, 3)}); !errors.Is(err, ErrParam) {
		t.Errorf("Add with lr 0 = %v", err)
	}
	acc = SignVote{LR: 1}.Begin(3)
	if err := acc.Apply(make([]float32, 3)); !errors.Is(err, ErrNoUpdates) {
		t.Errorf("empty Apply = %v", err)
	}
	if err := acc.Add(Update{Weight: 1, Delta: make([]float32, 2)}); !errors.Is(err, ErrShape) {
		t.Errorf("short Add = %v", err)
	}
}

// TestSignVoteRobust checks the breakdown: a minority of attackers
// sending huge reversed updates cannot flip the majority of dense
// updates, and each coordinate moves by exactly lr.
func TestSignVoteRobust(t *testing.T) {
	const n, k = 200, 9
	rng := rand.New(rand.NewPCG(1, 1))
	dir := make([]float32, n)
	for i := range dir {
		dir[i] = float32(rng.Float64() + 0.1)
		if rng.IntN(2) == 0 {
			dir[i] = -dir[i]
		}
	}
	var ups []Update
	for c := 0; c < k; c++ {
		d := make([]float32, n)
		for i := range d {
			d[i] = dir[i] * float32(rng.Float64()+0.5)
			if c < 4 { // attackers: reversed and huge
				d[i] *= -1e30
			}
		}
		ups = append(ups, Update{Weight: 1, Delta: d})
	}
	got := voteRound(t, SignVote{LR: 0.1}, make([]float32, n), ups...)
	for i, v := range got {
		if want := float32(0.1); (dir[i] > 0 && v != want) || (dir[i] < 0 && v != -want) {
			t.Fatalf("coordinate %d moved to %v, honest direction %v", i, v, dir[i])
		}
	}
}

func TestSignOf(t *testing.T) {
	for _, c := range []struct {
		v    float32
		want float64
	}{{1, 1}, {-1, -1}, {1e-45, 1}, {-1e-45, -1}, {3e38, 1}, {-3e38, -1}, {0, 0}, {float32(math.Copysign(0, -1)), 0}} {
		if got := signOf(c.v); got != c.want {
			t.Errorf("signOf(%v) = %v, want %v", c.v, got, c.want)
		}
	}
}
