package secagg

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/bits"

	"github.com/fedzip/fedzip/compress"
)

// An announced support: the server picks the round's support from what it
// has published, not from the round seed alone.
//
// With a random-k support a coordinate is on it once in 1/fraction rounds,
// so a client's error-feedback residual there waits that long. The server
// can do better from the aggregates it publishes anyway: each round it
// learns the survivors' mean on the support, and from it an estimate of how
// fast each coordinate fills the clients' residuals. Importance keeps, per
// coordinate, that rate (the |mean| a visit found, divided by the rounds
// since the visit before, averaged with the rate before) and the last
// round it was on a support. The score of a coordinate is its rate; a
// coordinate never seen has the prior, the mean rate of the seen ones. An
// exploration part of the support is random-k from the round seed (the
// explore blocks of Announce): it is what brings a coordinate back, and
// refreshes its rate, once its rate has fallen below the top. (Scoring by
// rate times the age, the mass expected since the last visit, rotated the
// support faster: as many rounds to 95% on the 2NN but larger downloads,
// since the model then moves on more coordinates; see docs/secagg.md.)
//
// Everything Importance holds is a function of the published supports and
// means (and the round seeds): it is the server's view, and announcing the
// support reveals nothing beyond the aggregates already published. It is
// deterministic: replicas that Observe the same rounds in the same order
// hold the same bits and announce the same supports.

// Importance is the server's per-coordinate estimate behind an announced
// support. The zero value is not usable: use NewImportance. It is not safe
// for concurrent use.
type Importance struct {
	rate []float32 // estimated |mean| per round of age; < 0: never seen
	last []int32   // the last round the coordinate was on a support (0: none)
	ws   compress.Workspace
	key  []float32
}

// Tuning of the score (see Importance).
const (
	// importanceSmooth is the weight of the old rate when a coordinate is
	// seen again.
	importanceSmooth = 0.5
	// importanceJitter breaks ties (all scores are equal before the first
	// round) from the round seed: a score is multiplied by
	// 1 + importanceJitter·u, u uniform in [0, 1).
	importanceJitter = 1.0 / 1024
)

// NewImportance returns the estimate of a vector of length d before any
// round: every coordinate unseen, so the first announced support is random
// from the round seed.
func NewImportance(d int) *Importance {
	im := &Importance{rate: make([]float32, d), last: make([]int32, d)}
	for j := range im.rate {
		im.rate[j] = -1
	}
	return im
}

// Len returns the vector length d.
func (im *Importance) Len() int { return len(im.rate) }

// Observe records round r's published aggregate: mean[i] is the mean update
// on coordinate idx[i] (idx being round r's support, ascending). Rounds must
// be observed in increasing order, r ≥ 1. It panics if the lengths differ,
// an index is out of range or r is not above a coordinate's last round (a
// programmer error: the server observes what it announced).
func (im *Importance) Observe(r int, idx []int32, mean []float32) {
	if len(idx) != len(mean) {
		panic("secagg: Importance.Observe: length mismatch")
	}
	for i, j := range idx {
		age := r - int(im.last[j])
		if age < 1 {
			panic("secagg: Importance.Observe: round not after the coordinate's last")
		}
		v := float32(math.Abs(float64(mean[i]))) / float32(age)
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			v = 0
		}
		if old := im.rate[j]; old >= 0 {
			// The conversions round each product, so that no platform
			// fuses them: every replica computes the same bits.
			v = float32(importanceSmooth*old) + float32((1-importanceSmooth)*v)
		}
		im.rate[j] = v
		im.last[j] = int32(r)
	}
}

// Announce returns a round's support in blocks of size coordinates (block
// b is [b·size, min((b+1)·size, d))): nBlocks blocks, of which nExplore are
// random-k from roundSeed (RandomBlocks) and the rest the top block scores
// (the sum of the scores of its coordinates) among the others. It returns
// the support's coordinates (ascending), the announced blocks (ascending:
// what the clients must be sent, AppendAnnounced) and the random blocks
// (ascending: what every client derives from the seed). Blocks make the
// announcement about size times smaller than a list of coordinates. It
// panics if size < 1 or nExplore > nBlocks > the number of blocks.
func (im *Importance) Announce(roundSeed uint64, size, nBlocks, nExplore int) (support, top, explore []int32) {
	d := len(im.rate)
	nb := NumBlocks(d, size)
	if nBlocks > nb || nExplore > nBlocks || nExplore < 0 {
		panic("secagg: Importance.Announce: bad sizes")
	}
	explore = RandomBlocks(nb, nExplore, roundSeed)
	var sum float64
	var seen int
	for _, v := range im.rate {
		if v >= 0 {
			sum += float64(v)
			seen++
		}
	}
	prior := float32(1)
	if seen > 0 && sum > 0 {
		prior = float32(sum / float64(seen))
	}
	if cap(im.key) < nb {
		im.key = make([]float32, nb)
	}
	key := im.key[:nb]
	h := splitmix(roundSeed ^ 0x616e6e6f756e6365) // "announce"
	for b := range key {
		var k float32
		for j := b * size; j < min((b+1)*size, d); j++ {
			rate := im.rate[j]
			if rate < 0 {
				rate = prior
			}
			k += rate
		}
		// A per-round hash of b, uniform in [0, 1), breaks ties.
		u := float32(splitmix(h^uint64(b))>>40) / (1 << 24)
		key[b] = k * (1 + float32(importanceJitter*u)) // no fused multiply-add
	}
	inf := float32(math.Inf(1))
	for _, b := range explore {
		key[b] = inf
	}
	blocks := make([]int32, nBlocks)
	compress.TopK(blocks, key, &im.ws)
	top = RemoveSupport(nil, blocks, explore)
	return ExpandBlocks(nil, blocks, size, d), top, explore
}

// NumBlocks returns the number of blocks of size coordinates in a vector of
// length d, the last one possibly shorter. It panics if size < 1.
func NumBlocks(d, size int) int {
	if size < 1 {
		panic("secagg: block size below 1")
	}
	return (d + size - 1) / size
}

// RandomBlocks returns n of the nb blocks drawn from the round seed alone
// (as Support draws coordinates), ascending.
func RandomBlocks(nb, n int, roundSeed uint64) []int32 {
	b := make([]int32, n)
	Support(b, nb, roundSeed)
	return b
}

// ExpandBlocks appends to dst the coordinates of the ascending blocks of
// size coordinates in a vector of length d, ascending, and returns it.
func ExpandBlocks(dst, blocks []int32, size, d int) []int32 {
	for _, b := range blocks {
		for j := int(b) * size; j < min((int(b)+1)*size, d); j++ {
			dst = append(dst, int32(j))
		}
	}
	return dst
}

// RebuildSupport is a client's side of an announced support: from the
// announcement msg (AppendAnnounced of the announced blocks), the vector
// length d, the block size, the numbers of blocks on the support and of
// random ones, and the round seed, it returns the round's support, the one
// Importance.Announce gave the server. It returns an error wrapping
// ErrSupport, and never panics, if msg does not decode to exactly
// nBlocks−nExplore blocks disjoint from the random ones, or the sizes are
// out of range.
func RebuildSupport(msg []byte, d, size, nBlocks, nExplore int, roundSeed uint64) ([]int32, error) {
	if d < 0 || d > MaxDim || size < 1 || size > MaxDim {
		return nil, fmt.Errorf("%w: vector %d, block size %d", ErrSupport, d, size)
	}
	nb := NumBlocks(d, size)
	if nBlocks < 0 || nBlocks > nb || nExplore < 0 || nExplore > nBlocks {
		return nil, fmt.Errorf("%w: %d blocks (%d random) of %d", ErrSupport, nBlocks, nExplore, nb)
	}
	top, err := ReadAnnounced(nil, msg, nb, nBlocks-nExplore)
	if err != nil {
		return nil, err
	}
	if len(top) != nBlocks-nExplore {
		return nil, fmt.Errorf("%w: %d blocks announced, want %d", ErrSupport, len(top), nBlocks-nExplore)
	}
	blocks, err := MergeSupport(make([]int32, 0, nBlocks), top, RandomBlocks(nb, nExplore, roundSeed))
	if err != nil {
		return nil, err
	}
	return ExpandBlocks(nil, blocks, size, d), nil
}

// MergeSupport writes to dst the union of the ascending, disjoint lists a
// and b, ascending, and returns it (dst needs len(a)+len(b) capacity). It
// returns ErrSupport if they share a coordinate.
func MergeSupport(dst, a, b []int32) ([]int32, error) {
	dst = dst[:0]
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		switch {
		case j == len(b) || (i < len(a) && a[i] < b[j]):
			dst = append(dst, a[i])
			i++
		case i == len(a) || b[j] < a[i]:
			dst = append(dst, b[j])
			j++
		default:
			return nil, fmt.Errorf("%w: coordinate %d both announced and random", ErrSupport, a[i])
		}
	}
	return dst, nil
}

// RemoveSupport writes to dst the coordinates of the ascending list all
// that are not in the ascending list sub (a subset of all), and returns it.
func RemoveSupport(dst, all, sub []int32) []int32 {
	dst = dst[:0]
	j := 0
	for _, c := range all {
		for j < len(sub) && sub[j] < c {
			j++
		}
		if j < len(sub) && sub[j] == c {
			continue
		}
		dst = append(dst, c)
	}
	return dst
}

// Kinds of an announced support on the wire.
const (
	announcedRice   = 0 // Golomb-Rice coded gaps (compress.AppendRiceIndices)
	announcedBitmap = 1 // one bit per coordinate, least significant first
)

// AppendAnnounced appends to dst the announced part of a support: the
// ascending coordinates idx of a vector of length d, as whichever is
// smaller of a bitmap and Golomb-Rice coded gaps. The format is a kind
// byte, the count as a uvarint, then the coordinates. It panics if idx is
// not ascending in [0, d).
func AppendAnnounced(dst []byte, idx []int32, d int) []byte {
	_, nbits := compress.RiceParam(idx, d)
	rice := 1 + (nbits+7)/8
	bitmap := int64(d+7) / 8
	if rice <= bitmap {
		dst = append(dst, announcedRice)
		dst = binary.AppendUvarint(dst, uint64(len(idx)))
		return compress.AppendRiceIndices(dst, idx, d)
	}
	dst = append(dst, announcedBitmap)
	dst = binary.AppendUvarint(dst, uint64(len(idx)))
	at := len(dst)
	dst = append(dst, make([]byte, bitmap)...)
	for _, j := range idx {
		dst[at+int(j)>>3] |= 1 << (j & 7)
	}
	return dst
}

// ReadAnnounced decodes an announced support written by AppendAnnounced for
// a vector of length d, of at most max coordinates, into dst (reused if it
// has the capacity) and returns it. It returns an error wrapping
// ErrSupport, and never panics, on any src: an unknown kind, a count above
// max or d, a coordinate out of range, a bitmap whose bits disagree with
// the count or set beyond d, trailing bytes. It allocates only the
// coordinates, after bounding their count.
func ReadAnnounced(dst []int32, src []byte, d, max int) ([]int32, error) {
	if d < 0 || d > MaxDim {
		return nil, fmt.Errorf("%w: length %d out of [0, %d]", ErrSupport, d, MaxDim)
	}
	if len(src) < 1 {
		return nil, fmt.Errorf("%w: empty", ErrSupport)
	}
	kind := src[0]
	n, w := binary.Uvarint(src[1:])
	if w <= 0 {
		return nil, fmt.Errorf("%w: bad count", ErrSupport)
	}
	if n > uint64(d) || n > uint64(max) {
		return nil, fmt.Errorf("%w: %d coordinates, want at most %d of %d", ErrSupport, n, max, d)
	}
	body := src[1+w:]
	if cap(dst) < int(n) {
		dst = make([]int32, n)
	}
	dst = dst[:n]
	switch kind {
	case announcedRice:
		used, err := compress.DecodeRiceIndices(dst, body, d)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrSupport, err)
		}
		if used != len(body) {
			return nil, fmt.Errorf("%w: %d trailing bytes", ErrSupport, len(body)-used)
		}
	case announcedBitmap:
		if len(body) != (d+7)/8 {
			return nil, fmt.Errorf("%w: bitmap of %d bytes for %d coordinates", ErrSupport, len(body), d)
		}
		k := 0
		for i, b := range body {
			for ; b != 0; b &= b - 1 {
				j := i*8 + bits.TrailingZeros8(b)
				if j >= d || k == len(dst) {
					return nil, fmt.Errorf("%w: bitmap disagrees with its count %d", ErrSupport, n)
				}
				dst[k] = int32(j)
				k++
			}
		}
		if k != len(dst) {
			return nil, fmt.Errorf("%w: bitmap holds %d coordinates, count %d", ErrSupport, k, n)
		}
	default:
		return nil, fmt.Errorf("%w: unknown kind %d", ErrSupport, kind)
	}
	return dst, nil
}

// BindSupport returns session mixed with a digest of the round's support,
// for Params.Session: clients that were announced different supports then
// derive different pair masks, and the server's sum does not unmask. A
// malicious server cannot give one client a support and the others another
// (say, coordinates where the others hold nothing) to single it out.
func BindSupport(session uint64, idx []int32) uint64 {
	h := sha256.New()
	b := make([]byte, 4*len(idx))
	for i, j := range idx {
		binary.LittleEndian.PutUint32(b[4*i:], uint32(j))
	}
	h.Write(b)
	return splitmix(session ^ binary.LittleEndian.Uint64(h.Sum(nil)))
}

// ErrSupport reports an announced support that does not decode or does not
// fit the round.
var ErrSupport = errors.New("secagg: bad announced support")
