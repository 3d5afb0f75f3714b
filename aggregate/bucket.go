package aggregate

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
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
// Cost: it keeps a copy of every update (none behind AutoBound or
// Reputation, whose copy it keeps; sparse ones sparse), plus the bucket
// means; around median or trimmed-mean over dense updates it forms no
// means but averages each block of coordinates as the rule sorts it.
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
	updates []Update // validated, kept or copied (see keeper)
	applied bool
}

func (a *bucketAcc) Add(u Update) error {
	if err := Validate(u, a.n); err != nil {
		return err
	}
	return a.addKept(cloneUpdate(u))
}

func (a *bucketAcc) addKept(u Update) error {
	if a.applied {
		return ErrApplied
	}
	a.updates = append(a.updates, u)
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
	if a.applyFused(global, perm) {
		a.applied = true
		return nil
	}
	inner := a.b.Inner.Begin(a.n)
	_, keeps := inner.(keeper)
	var buf []float32
	for lo := 0; lo < k; lo += a.b.S {
		hi := min(lo+a.b.S, k)
		if !keeps && buf == nil {
			buf = make([]float32, a.n)
		}
		mean, finite := bucketMean(a.updates, perm[lo:hi], a.n, buf)
		// The mean of finite values may overflow: Validate refuses it as
		// the inner rule's Add would.
		var err error
		if !finite {
			err = Validate(mean, a.n)
		}
		if err == nil {
			err = addKeptTo(inner, mean)
		}
		if err != nil {
			return fmt.Errorf("bucket %d: %w", lo/a.b.S, err)
		}
	}
	a.applied = true
	return inner.Apply(global)
}

// bucketMean returns the unweighted mean of ups[members] as an update of
// weight 1, summed in float32 in the order of members and multiplied by
// 1/len(members): sparse when every member is (the union of their
// coordinates), dense otherwise, in buf when it is not nil. A member that
// does not send a coordinate adds nothing there, which is what adding its
// zero would do (a sum that starts at +0 is never −0). It also reports
// whether every value of the mean is finite.
func bucketMean(ups []Update, members []int, n int, buf []float32) (Update, bool) {
	inv := 1 / float32(len(members))
	dense := false
	for _, i := range members {
		if !ups[i].IsSparse() {
			dense = true
		}
	}
	if !dense {
		var idx []int32
		var val []float32
		for _, i := range members {
			idx, val = mergeAdd(idx, val, ups[i].Indices, ups[i].Values)
		}
		for j := range val {
			val[j] *= inv
		}
		if idx == nil {
			idx, val = []int32{}, []float32{}
		}
		return Update{Weight: 1, N: n, Indices: idx, Values: val}, nonFinite(val) < 0
	}
	mean := buf
	if mean == nil {
		mean = make([]float32, n)
	} else {
		clear(mean)
	}
	if len(members) == 2 && !ups[members[0]].IsSparse() && !ups[members[1]].IsSparse() {
		// The usual pair in one pass: (0 + a) + b, then times 1/2.
		a, b := ups[members[0]].Delta[:n], ups[members[1]].Delta[:n]
		var bad uint32
		for j := range mean {
			m := mean[j]
			m += a[j]
			m += b[j]
			m *= inv
			mean[j] = m
			bad |= math.Float32bits(m)&0x7f800000 + 0x00800000
		}
		return Update{Weight: 1, Delta: mean}, bad&(1<<31) == 0
	}
	for _, i := range members {
		u := ups[i]
		if u.IsSparse() {
			for j, c := range u.Indices {
				mean[c] += u.Values[j]
			}
			continue
		}
		for j, v := range u.Delta[:len(mean)] {
			mean[j] += v
		}
	}
	for j := range mean {
		mean[j] *= inv
	}
	return Update{Weight: 1, Delta: mean}, nonFinite(mean) < 0
}

// mergeAdd returns the sparse sum of (idx, val) and (bi, bv), both with
// strictly increasing indices: val[j] + bv[j'] where both send a
// coordinate, in that order.
func mergeAdd(idx []int32, val []float32, bi []int32, bv []float32) ([]int32, []float32) {
	oi := make([]int32, 0, len(idx)+len(bi))
	ov := make([]float32, 0, len(idx)+len(bi))
	p, q := 0, 0
	for p < len(idx) && q < len(bi) {
		switch a, b := idx[p], bi[q]; {
		case a < b:
			oi, ov = append(oi, a), append(ov, val[p])
			p++
		case a > b:
			oi, ov = append(oi, b), append(ov, 0+bv[q])
			q++
		default:
			oi, ov = append(oi, a), append(ov, val[p]+bv[q])
			p++
			q++
		}
	}
	oi, ov = append(oi, idx[p:]...), append(ov, val[p:]...)
	for ; q < len(bi); q++ {
		oi, ov = append(oi, bi[q]), append(ov, 0+bv[q])
	}
	return oi, ov
}

// applyFused applies a median or trimmed mean over the bucket means of
// dense updates without forming the means: each block of coordinates
// averages its buckets as it sorts them, the bits of the general path with
// a pass less over the updates. It works on a copy of global and reports
// false, leaving global unchanged, when it does not apply: another inner
// rule, sparse updates, more buckets than maxNet, or a mean that is not
// finite (the general path then reports which).
func (a *bucketAcc) applyFused(global []float32, perm []int) bool {
	var rule colRule
	switch in := a.b.Inner.(type) {
	case Median:
		if in.validate() != nil {
			return false
		}
		rule = in.col()
	case TrimmedMean:
		if in.validate() != nil {
			return false
		}
		rule = in.col()
	default:
		return false
	}
	k := len(a.updates)
	if len(global) != a.n || (k+a.b.S-1)/a.b.S > maxNet || slices.ContainsFunc(a.updates, Update.IsSparse) {
		return false
	}
	rows := make([][]float32, k)
	for i, u := range a.updates {
		rows[i] = u.Delta
	}
	var buckets [][]int
	for lo := 0; lo < k; lo += a.b.S {
		buckets = append(buckets, perm[lo:min(lo+a.b.S, k)])
	}
	out := getRow(a.n)
	defer putRow(out)
	copy(out, global)
	if !rule.applyBuckets(out, rows, buckets) {
		return false
	}
	copy(global, out)
	return true
}
