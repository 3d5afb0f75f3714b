package dataset

import (
	"fmt"
	"math"
	"slices"
)

// streamHoldOut is the PCG stream of HoldOut's draws (plus the client's
// index, so that a client's split depends only on its own examples).
const streamHoldOut = 0x1d_5eed_0200

// HoldOut splits every client's examples into a training part and a
// held-out part for federated evaluation: client k holds out
// round(frac·len(parts[k])) of its examples, drawn with seed (a stream per
// client), but always keeps at least one to train on. Both results list
// each client's indices in ascending order; parts is not modified. The
// split is deterministic: the same parts, frac and seed give the same
// split on every machine. frac must be in [0, 1); 0 holds nothing out
// (held is then a partition of empty parts).
func HoldOut(parts Partition, frac float64, seed uint64) (train, held Partition, err error) {
	if !(frac >= 0 && frac < 1) {
		return nil, nil, fmt.Errorf("dataset: hold out: %w: fraction %v, want [0, 1)", ErrBadArgument, frac)
	}
	train, held = make(Partition, len(parts)), make(Partition, len(parts))
	for k, idx := range parts {
		n := len(idx)
		h := min(int(math.Round(frac*float64(n))), max(n-1, 0))
		if h == 0 {
			train[k], held[k] = slices.Clone(idx), []int{}
			continue
		}
		perm := slices.Clone(idx)
		r, _ := newRand(seed, streamHoldOut+uint64(k))
		// Partial Fisher–Yates: the first h of perm are a uniform sample.
		for i := 0; i < h; i++ {
			j := i + r.IntN(n-i)
			perm[i], perm[j] = perm[j], perm[i]
		}
		held[k], train[k] = perm[:h:h], perm[h:]
		slices.Sort(held[k])
		slices.Sort(train[k])
	}
	return train, held, nil
}

// loadHeldOut is Load with s.HoldOut applied to every client's training
// part, seeded by s.Seed.
func (s Spec) loadHeldOut() (*Federated, error) {
	frac := s.HoldOut
	s.HoldOut = 0
	if !(frac > 0 && frac < 1) {
		return nil, fmt.Errorf("dataset: %w: hold-out fraction %v, want [0, 1)", ErrBadArgument, frac)
	}
	f, err := s.Load()
	if err != nil {
		return nil, err
	}
	if f.TrainParts, f.HeldOutParts, err = HoldOut(f.TrainParts, frac, s.Seed); err != nil {
		return nil, err
	}
	return f, nil
}
