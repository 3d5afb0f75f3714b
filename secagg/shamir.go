package secagg

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
)

// Shamir secret sharing of 16-byte secrets over the field of the Mersenne
// prime 2^61-1. A secret is cut into three chunks of at most 7 bytes (56
// bits, below the prime); each chunk is shared by its own random
// polynomial of degree t-1, evaluated at the holders' x-coordinates. A share
// is the holder's x and the three values.
//
// The secrets a client shares are 16-byte seeds (128 bits, the security
// level of X25519): its mask key s_sk and its self-mask key are derived
// from them (maskKeyFromSeed, selfMaskFromSeed). Sharing the 32-byte keys
// themselves took five field elements a share; a seed takes three.

// prime is the Mersenne prime 2^61-1.
const prime = 1<<61 - 1

// SecretLen is the length in bytes of a shared secret.
const SecretLen = 16

// chunks is the number of field elements of a secret.
const chunks = (SecretLen + 6) / 7

// Share is one holder's share of a SecretLen-byte secret.
type Share struct {
	X uint32         // the holder's coordinate, 1 + its index in Params.IDs
	Y [chunks]uint64 // one field element per 7-byte chunk, each < 2^61-1
}

func mulmod(a, b uint64) uint64 {
	hi, lo := bits.Mul64(a, b)
	r := (lo & prime) + (lo>>61 | hi<<3)
	if r >= prime {
		r -= prime
	}
	if r >= prime {
		r -= prime
	}
	return r
}

func addmod(a, b uint64) uint64 {
	r := a + b
	if r >= prime {
		r -= prime
	}
	return r
}

func submod(a, b uint64) uint64 {
	if a >= b {
		return a - b
	}
	return a + prime - b
}

// invmod is a^(p-2) mod p; a must be nonzero.
func invmod(a uint64) uint64 {
	r, e := uint64(1), uint64(prime-2)
	for e > 0 {
		if e&1 != 0 {
			r = mulmod(r, a)
		}
		a = mulmod(a, a)
		e >>= 1
	}
	return r
}

// secretChunks splits a secret into field elements: bytes 0..6, 7..13
// and 14..15, little-endian.
func secretChunks(s *[SecretLen]byte) [chunks]uint64 {
	var c [chunks]uint64
	var buf [8]byte
	for i := range chunks {
		clear(buf[:])
		copy(buf[:7], s[7*i:min(7*i+7, SecretLen)])
		c[i] = binary.LittleEndian.Uint64(buf[:])
	}
	return c
}

// chunksSecret is the inverse of secretChunks; it fails if a chunk is too
// large to have come from one.
func chunksSecret(c [chunks]uint64) ([SecretLen]byte, bool) {
	var s [SecretLen]byte
	var buf [8]byte
	for i := range chunks {
		limit := uint64(1) << (8 * (min(7*i+7, SecretLen) - 7*i))
		if c[i] >= limit {
			return s, false
		}
		binary.LittleEndian.PutUint64(buf[:], c[i])
		copy(s[7*i:min(7*i+7, SecretLen)], buf[:7])
	}
	return s, true
}

// randField reads a uniform field element from r (rejection sampling).
func randField(r io.Reader) (uint64, error) {
	var b [8]byte
	for {
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return 0, fmt.Errorf("secagg: randomness: %w", err)
		}
		if v := binary.LittleEndian.Uint64(b[:]) & prime; v != prime {
			return v, nil
		}
	}
}

// Split shares a secret among holders at the distinct nonzero coordinates
// xs so that any t of the shares reconstruct it and t-1 reveal nothing. The
// polynomials' coefficients are read from r. It panics if t is out of
// range (a programmer error).
func Split(secret *[SecretLen]byte, xs []uint32, t int, r io.Reader) ([]Share, error) {
	if t < 1 || t > len(xs) {
		panic("secagg: Split: threshold out of range")
	}
	coef := make([][chunks]uint64, t)
	coef[0] = secretChunks(secret)
	raw := make([]byte, 8*chunks*(t-1))
	if _, err := io.ReadFull(r, raw); err != nil {
		return nil, fmt.Errorf("secagg: randomness: %w", err)
	}
	for j := 1; j < t; j++ {
		for c := range chunks {
			v := binary.LittleEndian.Uint64(raw[8*(chunks*(j-1)+c):]) & prime
			for v == prime { // rejection, with probability 2^-61
				var err error
				if v, err = randField(r); err != nil {
					return nil, err
				}
			}
			coef[j][c] = v
		}
	}
	clear(raw)
	out := make([]Share, len(xs))
	for i, x := range xs {
		out[i].X = x
		for c := range chunks {
			acc := uint64(0)
			for j := t - 1; j >= 0; j-- {
				acc = addmod(mulmod(acc, uint64(x)), coef[j][c])
			}
			out[i].Y[c] = acc
		}
	}
	return out, nil
}

// lagrange interpolates through the points xs (distinct): at returns the
// weights w such that f(z) = Σ w[i]·f(xs[i]) for every polynomial f of
// degree < len(xs).
type lagrange struct {
	xs, invDen []uint64
	pre, suf   []uint64
}

func newLagrange(xs []uint64) *lagrange {
	t := len(xs)
	l := &lagrange{xs: xs, invDen: make([]uint64, t), pre: make([]uint64, t+1), suf: make([]uint64, t+1)}
	// The denominators' inverses with one inversion (Montgomery's
	// trick): pre holds the running products, then each inverse is the
	// inverse of the whole times the products around it.
	acc := uint64(1)
	for i := range t {
		den := uint64(1)
		for m := range t {
			if m != i {
				den = mulmod(den, submod(xs[i], xs[m]))
			}
		}
		l.invDen[i] = den
		l.pre[i] = acc
		acc = mulmod(acc, den)
	}
	inv := invmod(acc)
	for i := t - 1; i >= 0; i-- {
		inv, l.invDen[i] = mulmod(inv, l.invDen[i]), mulmod(inv, l.pre[i])
	}
	return l
}

func (l *lagrange) at(w []uint64, z uint64) {
	t := len(l.xs)
	l.pre[0], l.suf[t] = 1, 1
	for i := range t {
		l.pre[i+1] = mulmod(l.pre[i], submod(z, l.xs[i]))
	}
	for i := t - 1; i >= 0; i-- {
		l.suf[i] = mulmod(l.suf[i+1], submod(z, l.xs[i]))
	}
	for i := range t {
		w[i] = mulmod(mulmod(l.pre[i], l.suf[i+1]), l.invDen[i])
	}
}

// Combine reconstructs a secret from t or more shares. Shares beyond the
// first t are checked against the polynomial the first t define, so that a
// wrong share among more than t is detected (ErrInconsistentShares) rather
// than giving a wrong secret. Fewer than t shares give ErrTooFewShares, a
// repeated or zero coordinate ErrDuplicate or ErrCorrupt, a value outside
// the field ErrCorrupt.
func Combine(shares []Share, t int) ([SecretLen]byte, error) {
	if t < 1 {
		return [SecretLen]byte{}, fmt.Errorf("%w: threshold %d", ErrParams, t)
	}
	if len(shares) < t {
		return [SecretLen]byte{}, fmt.Errorf("%w: %d of %d", ErrTooFewShares, len(shares), t)
	}
	seen := make(map[uint32]bool, len(shares))
	for _, s := range shares {
		if s.X == 0 {
			return [SecretLen]byte{}, fmt.Errorf("%w: share at x=0", ErrCorrupt)
		}
		if seen[s.X] {
			return [SecretLen]byte{}, fmt.Errorf("%w: two shares at x=%d", ErrDuplicate, s.X)
		}
		seen[s.X] = true
		for _, y := range s.Y {
			if y >= prime {
				return [SecretLen]byte{}, fmt.Errorf("%w: share value out of field", ErrCorrupt)
			}
		}
	}
	xs := make([]uint64, t)
	for i := range t {
		xs[i] = uint64(shares[i].X)
	}
	eval := func(w []uint64) [chunks]uint64 {
		var v [chunks]uint64
		for i := range t {
			for c := range chunks {
				v[c] = addmod(v[c], mulmod(w[i], shares[i].Y[c]))
			}
		}
		return v
	}
	l := newLagrange(xs)
	w := make([]uint64, t)
	for _, extra := range shares[t:] {
		if l.at(w, uint64(extra.X)); eval(w) != extra.Y {
			return [SecretLen]byte{}, fmt.Errorf("%w: share at x=%d is off the polynomial", ErrInconsistentShares, extra.X)
		}
	}
	l.at(w, 0)
	s, ok := chunksSecret(eval(w))
	if !ok {
		return s, fmt.Errorf("%w: reconstructed chunk out of range", ErrInconsistentShares)
	}
	return s, nil
}

// errConsistentMismatch wraps ErrInconsistentShares: more than t shares lie
// on one polynomial whose secret the check refuses.
var errConsistentMismatch = fmt.Errorf("%w: shares consistent", ErrInconsistentShares)

// combineChecked rebuilds a secret from t or more shares and accepts it
// only if ok does (ok checks it against its owner's commitment or public
// key). It first combines all the shares (Combine, which also checks
// every share beyond the first t); if that fails with
// ErrInconsistentShares or gives a secret ok refuses, and there are more
// than t shares, it tries the t+1 subsets of t of the first t+1 shares,
// each leaving one out, in order, and returns the first secret ok
// accepts. So one wrong share among more than t is corrected, wherever it
// is: a subset that leaves it out holds t right shares. If none passes,
// it decodes the first maxBWShares shares with Berlekamp–Welch, which
// corrects up to ⌊(m − t)/2⌋ wrong shares among m wherever they are, and
// returns that secret if ok accepts it. The work is bounded by two
// interpolations (O(t²) field products each: the t+1 subsets share one),
// the check of the shares beyond t (O(m·t)) and one decode (O(m³) field
// products, m ≤ maxBWShares), and ok is called at most t+3 times,
// whatever the shares. If none passes, the error wraps ErrInconsistentShares (and errConsistentMismatch if more
// than t shares agree on the refused secret); errors of the shares' form
// (too few, a repeated coordinate, a value outside the field) are
// Combine's.
func combineChecked(shares []Share, t int, ok func(*[SecretLen]byte) bool) ([SecretLen]byte, error) {
	s, err := Combine(shares, t)
	if err == nil && ok(&s) {
		return s, nil
	}
	if err != nil && !errors.Is(err, ErrInconsistentShares) {
		return [SecretLen]byte{}, err
	}
	if err == nil && len(shares) > t {
		// More than t shares on one polynomial: every subset rebuilds
		// this secret, so the owner's advert is what is wrong.
		return [SecretLen]byte{}, fmt.Errorf("%w: %d shares agree on a secret that does not match", errConsistentMismatch, len(shares))
	}
	if len(shares) > t {
		// The subset leaving out share j of the first t+1 has the
		// weights L_i·(x_j − x_i)/x_j at 0, L_i being those of all t+1,
		// so its secret is A − B/x_j with A = Σ L_i y_i and
		// B = Σ L_i x_i y_i: all t+1 subsets in O(t²) products, not
		// t+1 interpolations of O(t²) each, which two wrong shares could
		// make the server run for every owner.
		xs := make([]uint64, t+1)
		for i := range xs {
			xs[i] = uint64(shares[i].X)
		}
		w := make([]uint64, t+1)
		newLagrange(xs).at(w, 0)
		var a, b [chunks]uint64
		for i, sh := range shares[:t+1] {
			wx := mulmod(w[i], xs[i])
			for c := range chunks {
				a[c] = addmod(a[c], mulmod(w[i], sh.Y[c]))
				b[c] = addmod(b[c], mulmod(wx, sh.Y[c]))
			}
		}
		for _, xj := range xs {
			inv := invmod(xj)
			var v [chunks]uint64
			for c := range chunks {
				v[c] = submod(a[c], mulmod(b[c], inv))
			}
			if s, in := chunksSecret(v); in && ok(&s) {
				return s, nil
			}
		}
	}
	// Several wrong shares: Berlekamp–Welch on the first maxBWShares
	// corrects up to ⌊(m − t)/2⌋ of them, wherever they are.
	if v, good := berlekampWelch(shares[:min(len(shares), maxBWShares)], t); good {
		if s, in := chunksSecret(v); in && ok(&s) {
			return s, nil
		}
	}
	return [SecretLen]byte{}, fmt.Errorf("%w: no %d of the %d shares rebuild the committed secret", ErrInconsistentShares, t, len(shares))
}
