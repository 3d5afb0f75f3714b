package main

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"

	"github.com/fedzip/fedzip/dataset"
	"github.com/fedzip/fedzip/nn"
	"github.com/fedzip/fedzip/round"
	"github.com/fedzip/fedzip/secagg"
)

// saltSupport is what 'fedzip simulate --secagg' mixes into the run seed
// for the round's support (sim/secagg.go: round.TaskSeed(seed^saltSupport,
// r, 0)). TestSupportIsTheSimulators checks that a simulated round moves
// the model only where SupportOf says.
const saltSupport = 0x737570706f7274 // "support"

// Salts of the oracle's own randomness (minibatch order, client selection).
const (
	saltBatch  = 0x6261746368 // "batch"
	saltSelect = 0x73656c     // "sel"
)

// SupportOf writes to dst the shared random-k support of round r that
// 'fedzip simulate --secagg --seed seed' draws for a model of d
// parameters: len(dst) = round(fraction·d) coordinates, ascending.
func SupportOf(dst []int32, d int, seed uint64, r int) {
	secagg.Support(dst, d, round.TaskSeed(seed^saltSupport, r, 0))
}

// SupportLen is the number of coordinates of a support of fraction of d,
// as the simulator rounds it.
func SupportLen(d int, fraction float64) int {
	return min(max(int(math.Round(fraction*float64(d))), 1), d)
}

// Oracle is centralized training in which round r may change only the
// coordinates of round r's random-k support: Steps Adam steps (fresh
// moments each round) on minibatches of Batch examples of the whole
// training set, with the gradient read on the support only. It is a
// generous stand-in for any federated method whose global model moves only
// on each round's support: it sees all the data every round and optimizes
// the support's coordinates as long as it is told to.
type Oracle struct {
	Model    nn.Model
	Train    *dataset.Dataset
	Seed     uint64 // run seed: the supports' and the minibatches'
	Fraction float64
	Steps    int
	Batch    int
	LR       float64 // Adam's step size
	// Union, instead of rounds on each round's support, trains every
	// coordinate of the union of the supports of rounds 1..r at once, from
	// the initial model, for Steps steps, at each round r asked for: the
	// coordinates any method that moves the model only on the supports
	// can have changed by round r, without the order the supports come in.
	Union bool
}

// oracleRun is an Oracle's state between rounds.
type oracleRun struct {
	o       *Oracle
	params  []float32
	grad    []float32
	m, v    []float32 // Adam's moments, on the support
	sc      nn.Scratch
	perm    []int // minibatch order, reshuffled each pass
	pos     int
	rng     *rand.Rand
	idx     []int32
	inUnion []bool // Union: coordinates seen on a support so far
}

func (o *Oracle) start(init []float32) *oracleRun {
	d := o.Model.NumParams()
	s := &oracleRun{o: o, params: slices.Clone(init), grad: make([]float32, d), sc: o.Model.Scratch(o.Batch),
		perm: make([]int, o.Train.N), rng: rand.New(rand.NewPCG(o.Seed, saltBatch)),
		idx: make([]int32, SupportLen(d, o.Fraction))}
	for i := range s.perm {
		s.perm[i] = i
	}
	s.pos = len(s.perm)
	return s
}

// batch fills the scratch with the next minibatch and returns its size.
func (s *oracleRun) batch() int {
	dim := s.o.Train.Dim
	x, y := s.sc.Input(s.o.Batch), s.sc.Labels(s.o.Batch)
	for i := range s.o.Batch {
		if s.pos == len(s.perm) {
			s.rng.Shuffle(len(s.perm), func(a, b int) { s.perm[a], s.perm[b] = s.perm[b], s.perm[a] })
			s.pos = 0
		}
		j := s.perm[s.pos]
		s.pos++
		copy(x[i*dim:(i+1)*dim], s.o.Train.Row(j))
		y[i] = s.o.Train.Y[j]
	}
	return s.o.Batch
}

// adam runs steps Adam steps on the coordinates idx, from fresh moments.
func (s *oracleRun) adam(idx []int32, steps int) {
	if cap(s.m) < len(idx) {
		s.m, s.v = make([]float32, len(idx)), make([]float32, len(idx))
	}
	m, v := s.m[:len(idx)], s.v[:len(idx)]
	clear(m)
	clear(v)
	const b1, b2, eps = 0.9, 0.999, 1e-8
	for t := 1; t <= steps; t++ {
		n := s.batch()
		s.sc.LossGrad(s.params, s.grad, n)
		c1 := 1 - math.Pow(b1, float64(t))
		c2 := 1 - math.Pow(b2, float64(t))
		step := float32(s.o.LR * math.Sqrt(c2) / c1)
		for i, j := range idx {
			g := s.grad[j]
			m[i] = b1*m[i] + (1-b1)*g
			v[i] = b2*v[i] + (1-b2)*g*g
			s.params[j] -= step * m[i] / (float32(math.Sqrt(float64(v[i]))) + eps)
		}
	}
}

// round runs round r: Adam on round r's support.
func (s *oracleRun) round(r int) {
	SupportOf(s.idx, len(s.params), s.o.Seed, r)
	s.adam(s.idx, s.o.Steps)
}

// union trains, from init, every coordinate on a support of rounds 1..r.
func (s *oracleRun) union(init []float32, r int) {
	d := len(s.params)
	if s.inUnion == nil {
		s.inUnion = make([]bool, d)
	}
	clear(s.inUnion)
	for q := 1; q <= r; q++ {
		SupportOf(s.idx, d, s.o.Seed, q)
		for _, j := range s.idx {
			s.inUnion[j] = true
		}
	}
	all := make([]int32, 0, d)
	for j, in := range s.inUnion {
		if in {
			all = append(all, int32(j))
		}
	}
	copy(s.params, init)
	s.adam(all, s.o.Steps)
}

// Point is the test accuracy after a round.
type Point struct {
	Round    int     `json:"round"`
	Accuracy float64 `json:"accuracy"`
	// Moved is the fraction of the coordinates that have been on a
	// support by this round.
	Moved float64 `json:"moved"`
}

// Run trains from init (not modified) up to the last of the rounds
// (ascending) and returns the test accuracy on test after each of them,
// and after every every-th round too (0: only those).
func (o *Oracle) Run(init []float32, test *dataset.Dataset, rounds []int, every int) ([]Point, error) {
	if o.Steps < 1 || o.Batch < 1 || !(o.LR > 0) || !(o.Fraction > 0 && o.Fraction <= 1) {
		return nil, fmt.Errorf("randk: steps %d, batch %d, lr %v, fraction %v: want positive values, fraction in (0, 1]", o.Steps, o.Batch, o.LR, o.Fraction)
	}
	if len(rounds) == 0 || !slices.IsSorted(rounds) || rounds[0] < 1 {
		return nil, fmt.Errorf("randk: rounds %v: want ascending rounds from 1", rounds)
	}
	if len(init) != o.Model.NumParams() {
		return nil, fmt.Errorf("randk: init of %d parameters, the model has %d", len(init), o.Model.NumParams())
	}
	s := o.start(init)
	eval := o.Model.Scratch(250)
	last := rounds[len(rounds)-1]
	var out []Point
	seen := make([]bool, len(init))
	nseen := 0
	for r := 1; r <= last; r++ {
		SupportOf(s.idx, len(init), o.Seed, r)
		for _, j := range s.idx {
			if !seen[j] {
				seen[j] = true
				nseen++
			}
		}
		want := slices.Contains(rounds, r) || (every > 0 && r%every == 0)
		if o.Union {
			if !slices.Contains(rounds, r) {
				continue
			}
			s.union(init, r)
		} else {
			s.round(r)
		}
		if want {
			c, _ := eval.Evaluate(s.params, test.X, test.Y)
			out = append(out, Point{Round: r, Accuracy: float64(c) / float64(test.N), Moved: float64(nseen) / float64(len(init))})
		}
	}
	return out, nil
}
