package aggregate

import (
	"fmt"
	"math"
	"sync"
)

// scaledAdder is implemented by this package's accumulators: it adds
// scale·u, where u already passed Validate, with the given weight and
// without copying u, which is how NormBound and DP clip.
type scaledAdder interface {
	addValid(u Update, scale, weight float64) error
}

// NormBound is norm bounding (Sun et al. 2019, "Can you really backdoor
// federated learning?"): each update whose L2 norm exceeds Bound is scaled
// down to norm Bound before Inner aggregates it; smaller updates pass
// unchanged. It wraps any strategy (nil Inner means FedAvg); with a
// mean-based one a sparse update stays sparse.
//
// Cost: O(s) per update of s coordinates for the norm, on top of Inner's
// cost; no copy of the update with this package's strategies, one n-value
// scratch vector with others.
type NormBound struct {
	// Inner aggregates the clipped updates; nil means FedAvg.
	Inner Strategy
	// Bound is the largest L2 norm an update keeps, positive.
	Bound float64
}

func (b NormBound) inner() Strategy {
	if b.Inner == nil {
		return FedAvg{}
	}
	return b.Inner
}

// Name returns the inner strategy's name.
func (b NormBound) Name() string { return b.inner().Name() }

// MinUpdates returns the inner strategy's minimum.
func (b NormBound) MinUpdates() int { return MinUpdates(b.inner()) }

// Validate reports a bad bound or a bad inner strategy.
func (b NormBound) Validate() error {
	if err := positive("bound", b.Bound); err != nil {
		return err
	}
	if _, ok := b.Inner.(NormBound); ok {
		return fmt.Errorf("%w: NormBound inside NormBound", ErrParam)
	}
	return validateStrategy(b.inner())
}

// Begin starts a round.
func (b NormBound) Begin(n int) Accumulator {
	if err := b.Validate(); err != nil {
		return errAcc{err}
	}
	acc := b.inner().Begin(n)
	sa, _ := acc.(scaledAdder)
	return &boundAcc{inner: acc, sa: sa, bound: b.Bound, n: n}
}

// MarshalBinary returns the inner strategy's state (see MarshalState).
func (b NormBound) MarshalBinary() ([]byte, error) { return MarshalState(b.inner()) }

// UnmarshalBinary restores the inner strategy's state (see UnmarshalState).
func (b NormBound) UnmarshalBinary(data []byte) error { return UnmarshalState(b.inner(), data) }

type boundAcc struct {
	inner   Accumulator
	sa      scaledAdder
	bound   float64
	n       int
	scratch []float32
	clipped int
}

func (a *boundAcc) Add(u Update) error {
	if err := Validate(u, a.n); err != nil {
		return err
	}
	scale := clipScale(u, a.bound)
	if err := addClipped(a.inner, a.sa, &a.scratch, u, scale, u.Weight); err != nil {
		return err
	}
	if scale != 1 {
		a.clipped++
	}
	return nil
}

// Clipped returns the updates scaled down to the bound (see Clipper).
func (a *boundAcc) Clipped() int { return a.clipped }

func (a *boundAcc) Count() int                   { return a.inner.Count() }
func (a *boundAcc) Apply(global []float32) error { return a.inner.Apply(global) }

// Excluded forwards the inner accumulator's exclusions (see Excluder).
func (a *boundAcc) Excluded() []int {
	if e, ok := a.inner.(Excluder); ok {
		return e.Excluded()
	}
	return nil
}

// addClipped adds scale·u, a validated update, with weight to acc, through
// sa when acc has it and through a scaled copy in *scratch otherwise.
func addClipped(acc Accumulator, sa scaledAdder, scratch *[]float32, u Update, scale, weight float64) error {
	if sa != nil {
		return sa.addValid(u, scale, weight)
	}
	if scale == 1 && weight == u.Weight {
		return acc.Add(u)
	}
	src := u.Delta
	if u.IsSparse() {
		src = u.Values
	}
	if cap(*scratch) < len(src) {
		*scratch = make([]float32, len(src))
	}
	dst := (*scratch)[:len(src)]
	for i, v := range src {
		dst[i] = float32(float64(v) * scale)
	}
	c := Update{Weight: weight, Client: u.Client, ClientKnown: u.ClientKnown}
	if u.IsSparse() {
		c.N, c.Indices, c.Values = u.N, u.Indices, dst
	} else {
		c.Delta = dst
	}
	return acc.Add(c)
}

// l2Norm returns the L2 norm of a validated update. The squares go into
// four partial sums by index modulo 4, in index order, combined in a fixed
// order; since a zero adds nothing, a sparse update and its dense form get
// the same bits.
func l2Norm(u Update) float64 {
	var s [4]float64
	if u.IsSparse() {
		for j, i := range u.Indices {
			x := float64(u.Values[j])
			s[i&3] += float64(x * x)
		}
	} else {
		v := u.Delta
		var s0, s1, s2, s3 float64
		i := 0
		for ; i+4 <= len(v); i += 4 {
			x0, x1, x2, x3 := float64(v[i]), float64(v[i+1]), float64(v[i+2]), float64(v[i+3])
			s0 += float64(x0 * x0)
			s1 += float64(x1 * x1)
			s2 += float64(x2 * x2)
			s3 += float64(x3 * x3)
		}
		s = [4]float64{s0, s1, s2, s3}
		for ; i < len(v); i++ {
			x := float64(v[i])
			s[i&3] += float64(x * x)
		}
	}
	return math.Sqrt((s[0] + s[1]) + (s[2] + s[3]))
}

// clipScale returns the factor that brings u's norm down to at most c.
func clipScale(u Update, c float64) float64 {
	if norm := l2Norm(u); norm > c {
		return c / norm
	}
	return 1
}

// keepWithNorm validates u against a model of n parameters and returns a
// copy of it (see cloneUpdate) and its L2 norm (l2Norm), in one pass over
// a dense update: the copy, the check for non-finite values and the sum
// of squares together. The results, errors included, are those of
// Validate, cloneUpdate and l2Norm. It also returns dot32(u, u) of a dense
// u (the squares summed as the reputation sums them), or −1.
func keepWithNorm(u Update, n int) (Update, float64, float64, error) {
	if u.IsSparse() || len(u.Delta) != n || u.N != 0 || u.Indices != nil || u.Values != nil || !(u.Weight > 0 && u.Weight <= MaxWeight) {
		if err := Validate(u, n); err != nil {
			return Update{}, 0, 0, err
		}
		c := cloneUpdate(u)
		return c, l2Norm(c), -1, nil
	}
	src := u.Delta
	dst := getRow(n)
	var s0, s1, s2, s3 float64
	var bad uint32
	i := 0
	for ; i+4 <= n; i += 4 {
		v0, v1, v2, v3 := src[i], src[i+1], src[i+2], src[i+3]
		dst[i], dst[i+1], dst[i+2], dst[i+3] = v0, v1, v2, v3
		b0, b1, b2, b3 := math.Float32bits(v0), math.Float32bits(v1), math.Float32bits(v2), math.Float32bits(v3)
		// An exponent of all ones, and only that, carries into bit 31.
		bad |= (b0&0x7f800000 + 0x00800000) | (b1&0x7f800000 + 0x00800000) | (b2&0x7f800000 + 0x00800000) | (b3&0x7f800000 + 0x00800000)
		x0, x1, x2, x3 := float64(v0), float64(v1), float64(v2), float64(v3)
		s0 += float64(x0 * x0)
		s1 += float64(x1 * x1)
		s2 += float64(x2 * x2)
		s3 += float64(x3 * x3)
	}
	s := [4]float64{s0, s1, s2, s3}
	for ; i < n; i++ {
		v := src[i]
		dst[i] = v
		bad |= math.Float32bits(v)&0x7f800000 + 0x00800000
		x := float64(v)
		s[i&3] += float64(x * x)
		s0 += float64(x * x) // dot32 puts the last n mod 4 squares here
	}
	if bad&(1<<31) != 0 {
		putRow(dst)
		return Update{}, 0, 0, Validate(u, n)
	}
	c := Update{Weight: u.Weight, Delta: dst, Client: u.Client, ClientKnown: u.ClientKnown}
	return c, math.Sqrt((s[0] + s[1]) + (s[2] + s[3])), (s0 + s1) + (s2 + s3), nil
}

// rowPool recycles the dense rows that AutoBound copies updates into and
// Bucketing averages into, which would otherwise be allocated afresh (4n
// bytes each, and page faults) every round. A row goes back only when no
// accumulator can read it any more; its old values never matter, since
// every row taken is overwritten whole.
var rowPool sync.Pool

// getRow returns a row of n values, recycled or new, its values arbitrary.
func getRow(n int) []float32 {
	if p, ok := rowPool.Get().(*[]float32); ok && cap(*p) >= n {
		return (*p)[:n]
	}
	return make([]float32, n)
}

// putRow recycles row, which nobody reads afterwards.
func putRow(row []float32) {
	if cap(row) > 0 {
		rowPool.Put(&row)
	}
}
