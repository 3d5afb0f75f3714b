package sim

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"

	"github.com/fedzip/fedzip/aggregate"
	"github.com/fedzip/fedzip/dataset"
	"github.com/fedzip/fedzip/round"
)

// AttackKinds are the attacks Attack.Kind names.
var AttackKinds = []string{"signflip", "scale", "gaussian", "labelflip", "alie", "ipm", "minmax", "minsum", "backdoor"}

// Attack makes a fixed subset of the clients Byzantine, to measure how an
// aggregation strategy stands up to them. The attackers are
// round(Fraction·K) of the K clients, drawn once from Seed: the same
// clients attack in every round they are selected (selection is random
// each round, so an attacker may be selected many times), whatever the
// number of workers. An attacker trains like everyone else, then, before
// its update is encoded and submitted:
//
//	signflip   sends −Scale·Δ (Scale defaults to 1: the honest update reversed)
//	scale      sends Scale·Δ (Scale defaults to 10)
//	gaussian   sends pure noise, N(0, Stddev²) in every coordinate (Stddev
//	           defaults to 1), as the Gaussian attacker of Blanchard et al. 2017
//	labelflip  trains on flipped labels, y → classes−1−y (9 − y on MNIST),
//	           and sends that honest-looking update
//	backdoor   trains with a trigger (a white Trigger×Trigger square in the
//	           bottom-right corner of every channel) stamped on a fraction
//	           PoisonFraction of its examples, relabelled Target, and sends
//	           its update boosted by Scale (default n/m, the n selected
//	           clients over the m attackers among them: model replacement,
//	           Bagdasaryan et al. 2020, with a server learning rate of 1)
//
// The colluding attacks (Colludes) know the honest updates of their round,
// as in their papers: the simulator trains and submits the round's honest
// clients first, then every attacker of the round sends the same crafted
// update, computed from the honest updates as the coordinator decodes them
// (after the upload codec: the updates the strategy sees), as a float64
// statistic per coordinate over the honest clients in selection order,
// unweighted, with the population standard deviation:
//
//	alie    mean − z·std ("a little is enough", Baruch et al. 2019); z is
//	        Scale, or by default the paper's z_max = Φ⁻¹((n−s)/n) with
//	        s = ⌊n/2+1⌋ − m, for the round's n selected clients and m
//	        attackers among them
//	ipm     −ε·mean (inner-product manipulation, Xie et al. 2020); ε is
//	        Scale, by default 0.1
//	minmax  mean − γ·std, with the largest γ whose maximum squared distance
//	        to an honest update stays within the largest between two honest
//	        updates (Shejwalkar & Houmansadr 2021, perturbation −std)
//	minsum  the same with the sum of squared distances to the honest
//	        updates, within the largest such sum of an honest update
//
// The condition of minmax and minsum is quadratic in γ: γ is its largest
// root, exact where the paper bisects. The crafted update then goes
// through each attacker's own encoder (with its error-feedback state),
// like any client's: a sparsifying codec sends part of it. In a round
// that selects attackers only, the attackers craft from their own honest
// updates instead (uncompressed).
//
// Attackers keep their true example counts as weights. The noise of
// gaussian is drawn from the client's task seed and the poisoned examples
// of backdoor from Seed, so reruns match bit for bit. labelflip reads one
// flipped copy of the label array, shared by all attackers; backdoor
// copies its attackers' examples (the features of 20% of the clients'
// data, for 20% attackers), and the colluding attacks hold the round's
// honest updates, one dense model each.
type Attack struct {
	// Kind is one of AttackKinds, or "" for no attack.
	Kind string
	// Fraction is the fraction of all clients that attack, in [0, 1].
	Fraction float64
	// Scale is the factor of signflip and scale, alie's z, ipm's ε and
	// backdoor's boost; 0 means the kind's default. minmax and minsum
	// search their factor and refuse one.
	Scale float64
	// Stddev is the standard deviation of gaussian's noise; 0 means 1.
	Stddev float64
	// Target is the label backdoor's triggered examples are given.
	Target int
	// PoisonFraction is the fraction of a backdoor attacker's examples
	// that carry the trigger, in (0, 1]; 0 means DefaultPoisonFraction.
	PoisonFraction float64
	// Trigger is the side of backdoor's square in pixels; 0 means
	// DefaultTrigger.
	Trigger int
	// Seed draws the attackers.
	Seed uint64
}

// Default parameters of the attacks.
const (
	DefaultSignflipScale  = 1
	DefaultAttackScale    = 10
	DefaultAttackStddev   = 1
	DefaultIPMScale       = 0.1
	DefaultPoisonFraction = 0.5
	DefaultTrigger        = 4
	// MaxTrigger bounds Attack.Trigger.
	MaxTrigger = 64
)

// Colludes reports whether the attack crafts its update from the honest
// updates of the round.
func (a Attack) Colludes() bool {
	switch a.Kind {
	case "alie", "ipm", "minmax", "minsum":
		return true
	}
	return false
}

// Validate reports an unknown kind or a parameter out of range.
func (a Attack) Validate() error {
	if a.Kind == "" {
		if a.Fraction != 0 {
			return fmt.Errorf("sim: attackers fraction %v without an attack kind", a.Fraction)
		}
		return nil
	}
	known := false
	for _, k := range AttackKinds {
		known = known || k == a.Kind
	}
	switch {
	case !known:
		return fmt.Errorf("sim: unknown attack %q (want %s)", a.Kind, strings.Join(AttackKinds, ", "))
	case !(a.Fraction >= 0 && a.Fraction <= 1):
		return fmt.Errorf("sim: attackers fraction %v out of range [0, 1]", a.Fraction)
	case !(a.Scale >= 0 && a.Scale <= 1e6):
		return fmt.Errorf("sim: attack scale %v out of range [0, 1e6]", a.Scale)
	case a.Scale != 0 && (a.Kind == "minmax" || a.Kind == "minsum"):
		return fmt.Errorf("sim: attack %s searches its own factor; it takes no scale (%v given)", a.Kind, a.Scale)
	case !(a.Stddev >= 0 && a.Stddev <= 1e6):
		return fmt.Errorf("sim: attack noise stddev %v out of range [0, 1e6]", a.Stddev)
	case a.Target < 0 || a.Target > 255:
		return fmt.Errorf("sim: backdoor target label %d out of range [0, 255]", a.Target)
	case !(a.PoisonFraction >= 0 && a.PoisonFraction <= 1):
		return fmt.Errorf("sim: backdoor poison fraction %v out of range (0, 1]", a.PoisonFraction)
	case a.Trigger < 0 || a.Trigger > MaxTrigger:
		return fmt.Errorf("sim: backdoor trigger side %d out of range [1, %d]", a.Trigger, MaxTrigger)
	}
	return nil
}

// Attackers returns which of clients clients attack: round(Fraction·clients)
// of them, a uniform sample drawn from Seed. It returns nil when none do.
func (a Attack) Attackers(clients int) []bool {
	k := int(math.Round(a.Fraction * float64(clients)))
	if a.Kind == "" || k == 0 {
		return nil
	}
	ids := make([]int, clients)
	for i := range ids {
		ids[i] = i
	}
	rng := rand.New(rand.NewPCG(a.Seed, 0x617474616b657273)) // "attakers"
	out := make([]bool, clients)
	// Partial Fisher–Yates: the first k of ids are a uniform sample.
	for i := 0; i < k; i++ {
		j := i + rng.IntN(clients-i)
		ids[i], ids[j] = ids[j], ids[i]
		out[ids[i]] = true
	}
	return out
}

// corrupt turns an attacker's honest update delta into the one it sends.
// seed is the client's task seed; n clients were selected this round, m
// of them attackers.
func (a Attack) corrupt(delta []float32, seed uint64, n, m int) {
	switch a.Kind {
	case "signflip":
		s := -float32(DefaultSignflipScale)
		if a.Scale > 0 {
			s = -float32(a.Scale)
		}
		for i := range delta {
			delta[i] *= s
		}
	case "scale":
		s := float32(DefaultAttackScale)
		if a.Scale > 0 {
			s = float32(a.Scale)
		}
		for i := range delta {
			delta[i] *= s
		}
	case "backdoor":
		s := float32(a.boost(n, m))
		for i := range delta {
			delta[i] *= s
		}
	case "gaussian":
		std := float64(DefaultAttackStddev)
		if a.Stddev > 0 {
			std = a.Stddev
		}
		rng := rand.New(rand.NewPCG(seed, 0x6761757373)) // "gauss"
		for i := range delta {
			delta[i] = float32(std * rng.NormFloat64())
		}
	}
}

// boost returns backdoor's factor for a round of n selected clients, m of
// them attackers: Scale, or n/m.
func (a Attack) boost(n, m int) float64 {
	if a.Scale > 0 {
		return a.Scale
	}
	return float64(n) / float64(max(m, 1))
}

// ALIEZ returns the z of "a little is enough" (Baruch et al. 2019) for n
// clients of which m attack: Φ⁻¹((n−s)/n) with s = ⌊n/2+1⌋ − m, the
// number of honest clients the attackers need on their side for a
// majority. s is taken at least 1, so that z stays finite when the
// attackers are a majority.
func ALIEZ(n, m int) float64 {
	s := max(n/2+1-m, 1)
	p := float64(n-s) / float64(n)
	return math.Sqrt2 * math.Erfinv(2*p-1)
}

// craft returns the update the colluding attackers of a round send,
// computed from benign, the honest updates (dense, in a fixed order; at
// least one), for a round of n selected clients, m of them attackers.
func (a Attack) craft(benign [][]float32, n, m int) []float32 {
	mean, std := meanStd(benign)
	out := make([]float32, len(mean))
	switch a.Kind {
	case "alie":
		z := a.Scale
		if z == 0 {
			z = ALIEZ(n, m)
		}
		for i := range out {
			out[i] = float32(mean[i] - z*std[i])
		}
	case "ipm":
		eps := a.Scale
		if eps == 0 {
			eps = DefaultIPMScale
		}
		for i := range out {
			out[i] = float32(-eps * mean[i])
		}
	case "minmax", "minsum":
		g := minMaxGamma(benign, mean, std, a.Kind == "minsum")
		for i := range out {
			out[i] = float32(mean[i] - g*std[i])
		}
	}
	return out
}

// meanStd returns the per-coordinate mean and population standard
// deviation of vs, summed in float64 in the order of vs.
func meanStd(vs [][]float32) (mean, std []float64) {
	n := len(vs[0])
	mean, std = make([]float64, n), make([]float64, n)
	for _, v := range vs {
		for i, x := range v {
			mean[i] += float64(x)
		}
	}
	k := float64(len(vs))
	for i := range mean {
		mean[i] /= k
	}
	for _, v := range vs {
		for i, x := range v {
			d := float64(x) - mean[i]
			std[i] += d * d
		}
	}
	for i := range std {
		std[i] = math.Sqrt(std[i] / k)
	}
	return mean, std
}

// minMaxGamma returns the largest γ ≥ 0 for which mean − γ·std keeps
// within the benign updates' spread (Shejwalkar & Houmansadr 2021): its
// largest squared distance to a benign update at most the largest between
// two of them (min-max), or with sum, its sum of squared distances to the
// benign updates at most the largest such sum of a benign update
// (min-sum). Both distances are a quadratic in γ, a + 2bγ + cγ², and γ = 0
// meets the bound (the mean is within the updates' hull, and minimises
// the sum), so the largest γ is a root, found exactly.
func minMaxGamma(benign [][]float32, mean, std []float64, sum bool) float64 {
	k := len(benign)
	// Squared distances between benign updates, and of each to the mean.
	pair := make([]float64, k*k)
	for i := 0; i < k; i++ {
		for j := i + 1; j < k; j++ {
			var d float64
			for t, x := range benign[i] {
				e := float64(x) - float64(benign[j][t])
				d += e * e
			}
			pair[i*k+j], pair[j*k+i] = d, d
		}
	}
	var bound float64
	for i := 0; i < k; i++ {
		var s float64
		for j := 0; j < k; j++ {
			if sum {
				s += pair[i*k+j]
			} else {
				s = max(s, pair[i*k+j])
			}
		}
		bound = max(bound, s)
	}
	var c float64
	for _, s := range std {
		c += s * s
	}
	if c == 0 {
		return 0
	}
	// ‖mean − γ·std − v‖² = ‖mean − v‖² − 2γ⟨mean − v, std⟩ + γ²‖std‖².
	as, bs := make([]float64, k), make([]float64, k)
	for i, v := range benign {
		for t, x := range v {
			d := mean[t] - float64(x)
			as[i] += d * d
			bs[i] -= d * std[t]
		}
	}
	root := func(a, b, c float64) float64 {
		// The largest γ with a + 2bγ + cγ² ≤ bound, where a ≤ bound.
		disc := b*b - c*(a-bound)
		return (-b + math.Sqrt(max(disc, 0))) / c
	}
	if sum {
		var a, b float64
		for i := range as {
			a += as[i]
			b += bs[i]
		}
		return max(root(a, b, float64(k)*c), 0)
	}
	g := math.Inf(1)
	for i := range as {
		g = min(g, root(as[i], bs[i], c))
	}
	return max(g, 0)
}

// densify returns u as a dense vector of n values.
func densify(u aggregate.Update, n int) []float32 {
	out := make([]float32, n)
	if !u.IsSparse() {
		copy(out, u.Delta)
		return out
	}
	for j, i := range u.Indices {
		out[i] = u.Values[j]
	}
	return out
}

// flipLabels returns y with every label c replaced by classes−1−c.
func flipLabels(y []uint8, classes int) []uint8 {
	out := make([]uint8, len(y))
	for i, c := range y {
		out[i] = uint8(classes - 1 - int(c))
	}
	return out
}

// countAttackers returns how many of sel attack.
func countAttackers(attackers []bool, sel []round.ClientID) int {
	n := 0
	for _, id := range sel {
		if attackers != nil && attackers[part(id)] {
			n++
		}
	}
	return n
}

// poisoned is what backdoor attackers train on: a copy of each attacker's
// examples, a seeded fraction of them stamped with the trigger and
// relabelled to the target.
type poisoned struct {
	x     []float32
	y     []uint8
	index map[int][]int // by part: rows of x
}

// trigger describes the backdoor's pattern for examples of one shape.
type trigger struct {
	c, h, w, side int
	value         float32
}

// newTrigger returns a's trigger for the examples of d: its value is the
// largest feature value of d ("white").
func (a Attack) newTrigger(d *dataset.Dataset) trigger {
	sh := d.InputShape()
	side := a.Trigger
	if side == 0 {
		side = DefaultTrigger
	}
	t := trigger{c: sh.C, h: sh.H, w: sh.W, side: side, value: float32(math.Inf(-1))}
	for _, x := range d.X {
		t.value = max(t.value, x)
	}
	return t
}

// stamp sets the side×side square at the bottom-right corner of every
// channel of x (one example) to the trigger's value, clipped to the image
// (the last side features of a flat vector).
func (t trigger) stamp(x []float32) {
	for c := 0; c < t.c; c++ {
		for r := max(t.h-t.side, 0); r < t.h; r++ {
			row := x[(c*t.h+r)*t.w:]
			for col := max(t.w-t.side, 0); col < t.w; col++ {
				row[col] = t.value
			}
		}
	}
}

// poison builds the backdoor attackers' training data from train and
// parts: for each attacker, round(PoisonFraction·examples) of its
// examples, drawn from Seed, carry the trigger and the target label.
func (a Attack) poison(train *dataset.Dataset, parts dataset.Partition, attackers []bool, t trigger) *poisoned {
	frac := a.PoisonFraction
	if frac == 0 {
		frac = DefaultPoisonFraction
	}
	p := &poisoned{index: map[int][]int{}}
	for k, evil := range attackers {
		if !evil {
			continue
		}
		idx := parts[k]
		rng := rand.New(rand.NewPCG(a.Seed, 0x6261636b646f6f72^uint64(k))) // "backdoor"
		chosen := make([]bool, len(idx))
		for _, j := range rng.Perm(len(idx))[:int(math.Round(frac*float64(len(idx))))] {
			chosen[j] = true
		}
		rows := make([]int, len(idx))
		for j, i := range idx {
			rows[j] = len(p.y)
			start := len(p.x)
			p.x = append(p.x, train.Row(i)...)
			y := train.Y[i]
			if chosen[j] {
				t.stamp(p.x[start:])
				y = uint8(a.Target)
			}
			p.y = append(p.y, y)
		}
		p.index[k] = rows
	}
	return p
}

// triggered returns the backdoor's test set: the examples of test whose
// label is not the target, stamped with the trigger and labelled with the
// target, so that its accuracy is the backdoor's success rate. It returns
// nil when every example has the target label.
func (a Attack) triggered(test *dataset.Dataset, t trigger) *dataset.Dataset {
	out := &dataset.Dataset{Name: test.Name + "+trigger", Dim: test.Dim, Classes: test.Classes, Shape: test.Shape}
	for i := 0; i < test.N; i++ {
		if int(test.Y[i]) == a.Target {
			continue
		}
		start := len(out.X)
		out.X = append(out.X, test.Row(i)...)
		t.stamp(out.X[start:])
		out.Y = append(out.Y, uint8(a.Target))
		out.N++
	}
	if out.N == 0 {
		return nil
	}
	return out
}
