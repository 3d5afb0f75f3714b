package sim

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"

	"github.com/fedzip/fedzip/round"
)

// AttackKinds are the attacks Attack.Kind names.
var AttackKinds = []string{"signflip", "scale", "gaussian", "labelflip"}

// Attack makes a fixed subset of the clients Byzantine, to measure how an
// aggregation strategy stands up to them. The attackers are
// round(Fraction·K) of the K clients, drawn once from Seed: the same
// clients attack in every round they are selected, whatever the number
// of workers. An attacker trains like everyone else, then, before its
// update is encoded and submitted:
//
//	signflip   sends −Scale·Δ (Scale defaults to 1: the honest update reversed)
//	scale      sends Scale·Δ (Scale defaults to 10)
//	gaussian   sends pure noise, N(0, Stddev²) in every coordinate (Stddev
//	           defaults to 1), as the Gaussian attacker of Blanchard et al. 2017
//	labelflip  trains on flipped labels, y → classes−1−y (9 − y on MNIST),
//	           and sends that honest-looking update
//
// Attackers keep their true example counts as weights. The noise of
// gaussian is drawn from the client's task seed, so reruns match bit for
// bit. labelflip reads one flipped copy of the label array, shared by all
// attackers; the features are not copied.
type Attack struct {
	// Kind is one of AttackKinds, or "" for no attack.
	Kind string
	// Fraction is the fraction of all clients that attack, in [0, 1].
	Fraction float64
	// Scale is the factor of signflip and scale; 0 means the kind's
	// default (1 for signflip, 10 for scale).
	Scale float64
	// Stddev is the standard deviation of gaussian's noise; 0 means 1.
	Stddev float64
	// Seed draws the attackers.
	Seed uint64
}

// Default parameters of the attacks.
const (
	DefaultSignflipScale = 1
	DefaultAttackScale   = 10
	DefaultAttackStddev  = 1
)

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
	case !(a.Stddev >= 0 && a.Stddev <= 1e6):
		return fmt.Errorf("sim: attack noise stddev %v out of range [0, 1e6]", a.Stddev)
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
// seed is the client's task seed.
func (a Attack) corrupt(delta []float32, seed uint64) {
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
