package aggregate

import (
	"fmt"
	"math/rand/v2"
)

// Bucketing makes a robust rule work on heterogeneous (non-IID) clients
// (Karimireddy, He and Jaggi, "Byzantine-robust learning on heterogeneous
// datasets via bucketing", ICLR 2022): the round's updates are shuffled into
// buckets of S, each bucket is averaged, and the inner rule (median,
// trimmed mean, Krum, ...) aggregates the bucket means. Averaging shrinks
// the spread between honest clients, which is what makes coordinate-wise
// and distance-based rules fail on non-IID data, while δ attackers still
// control at most a δ·S fraction of buckets.
//
// The shuffle is a seeded function of the number of updates, so every
// replica that adds the same updates in the same order forms the same
// buckets. Bucket means are unweighted, as in the paper: like the robust
// rules, bucketing ignores Update.Weight (still validated).
//
// Cost: it keeps every update dense, n floats per client (like the robust
// rules), plus one bucket mean at a time.
type Bucketing struct {
	// Inner aggregates the bucket means; it should be a robust rule.
	Inner Strategy
	// S is the bucket size, at least 2.
	S int
	// Seed drives the shuffle.
	Seed uint64
}

// Name returns the inner strategy's name.
func (b Bucketing) Name() string { return b.Inner.Name() }

// String returns a spec Parse accepts.
func (b Bucketing) String() string {
	if b.Seed != 0 {
		return fmt.Sprintf("%s,bucket=%d,bucket-seed=%d", innerSpec(b.Inner), b.S, b.Seed)
	}
	return fmt.Sprintf("%s,bucket=%d", innerSpec(b.Inner), b.S)
}

// MinUpdates returns how many updates give the inner rule enough buckets.
func (b Bucketing) MinUpdates() int { return MinUpdates(b.Inner) * b.S }

// Validate reports a bad bucket size or inner strategy.
func (b Bucketing) Validate() error {
	if b.Inner == nil {
		return fmt.Errorf("%w: bucketing needs an inner strategy", ErrParam)
	}
	if b.S < 2 || b.S > 1<<10 {
		return fmt.Errorf("%w: bucket size %d out of range 2..1024", ErrParam, b.S)
	}
	return validateStrategy(b.Inner)
}

// MarshalBinary returns the inner strategy's state (see MarshalState): the
// buckets keep none, so a snapshot is the same with or without them.
func (b Bucketing) MarshalBinary() ([]byte, error) { return MarshalState(b.Inner) }

// UnmarshalBinary restores the inner strategy's state (see UnmarshalState).
func (b Bucketing) UnmarshalBinary(data []byte) error { return UnmarshalState(b.Inner, data) }

// Begin starts a round.
func (b Bucketing) Begin(n int) Accumulator {
	if err := b.Validate(); err != nil {
		return errAcc{err}
	}
	return &bucketAcc{b: b, n: n}
}

type bucketAcc struct {
	b       Bucketing
	n       int
	updates [][]float32
	applied bool
}

func (a *bucketAcc) Add(u Update) error {
	if err := Validate(u, a.n); err != nil {
		return err
	}
	d := make([]float32, a.n)
	u.Dense(d)
	a.updates = append(a.updates, d)
	return nil
}

func (a *bucketAcc) Count() int { return len(a.updates) }

func (a *bucketAcc) Apply(global []float32) error {
	if a.applied {
		return ErrApplied
	}
	k := len(a.updates)
	if k == 0 {
		return ErrNoUpdates
	}
	perm := make([]int, k)
	for i := range perm {
		perm[i] = i
	}
	rng := rand.New(rand.NewPCG(a.b.Seed, uint64(k)))
	rng.Shuffle(k, func(i, j int) { perm[i], perm[j] = perm[j], perm[i] })
	inner := a.b.Inner.Begin(a.n)
	mean := make([]float32, a.n)
	for lo := 0; lo < k; lo += a.b.S {
		hi := min(lo+a.b.S, k)
		clear(mean)
		for _, i := range perm[lo:hi] {
			for j, v := range a.updates[i] {
				mean[j] += v
			}
		}
		inv := 1 / float32(hi-lo)
		for j := range mean {
			mean[j] *= inv
		}
		if err := inner.Add(Update{Weight: 1, Delta: mean}); err != nil {
			return fmt.Errorf("bucket %d: %w", lo/a.b.S, err)
		}
	}
	a.applied = true
	return inner.Apply(global)
}
