package secagg

import (
	"encoding"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"slices"
	"testing"
)

// Red team of the seed shares (issue 17): revealed shares that rebuild a
// seed out of range or a shifted one, adverts that commit to another
// seed, and messages of another wire version.

// seedShares splits a fixed 16-byte seed among holders 1..n with
// threshold t, from seeded randomness.
func seedShares(t *testing.T, n, th int) ([SecretLen]byte, []Share) {
	t.Helper()
	var seed [SecretLen]byte
	for i := range seed {
		seed[i] = byte(0xa0 + i)
	}
	xs := make([]uint32, n)
	for i := range xs {
		xs[i] = uint32(i + 1)
	}
	sh, err := Split(&seed, xs, th, rand.NewChaCha8([32]byte{1}))
	if err != nil {
		t.Fatal(err)
	}
	return seed, sh
}

// shifted returns shares with share 0 moved so that the first t of them
// rebuild chunk c of the secret plus delta: Lagrange interpolation at 0
// is linear, and its weights depend only on the public x-coordinates, so
// the holder of share 0 can compute them.
func shifted(shares []Share, th, c int, delta uint64) []Share {
	out := append([]Share(nil), shares...)
	xs := make([]uint64, th)
	for i := range xs {
		xs[i] = uint64(out[i].X)
	}
	w := make([]uint64, th)
	newLagrange(xs).at(w, 0)
	out[0].Y[c] = addmod(out[0].Y[c], mulmod(delta, invmod(w[0])))
	return out
}

// TestRedteamSeedShareOutOfRange: a revealed share that makes the seed's
// chunks rebuild beyond their 7 (or, for the last, 2) bytes is refused
// with ErrInconsistentShares, never a wrong seed, including with exactly
// t shares (a share wrong in all three values lands in range with
// probability 2^−55; one wrong in one 7-byte chunk alone, 2^−5).
// With more than t shares any wrong share among the first t is caught.
// Combine's range check is no integrity check: with exactly t shares, a
// holder that shifts its share by a multiple of the inverse of its
// public Lagrange weight moves the seed by any in-range amount it likes.
// What stops that is the server's check against the owner's commitment
// (TestRedteamShiftedSelfMaskShare).
func TestRedteamSeedShareOutOfRange(t *testing.T) {
	const n, th = 5, 3
	seed, shares := seedShares(t, n, th)
	if got, err := Combine(shares[:th], th); err != nil || got != seed {
		t.Fatalf("honest shares: %x, %v", got, err)
	}
	sc := secretChunks(&seed)
	// Chunk 2 holds bytes 14 and 15: anything from 2^16 up is out of range.
	out := shifted(shares, th, 2, (1<<16)-sc[2])
	if _, err := Combine(out[:th], th); !errors.Is(err, ErrInconsistentShares) {
		t.Fatalf("a seed chunk of 2^16 rebuilt: %v", err)
	}
	out = shifted(shares, th, 0, (1<<56)-sc[0]) // chunk 0 = 2^56: beyond 7 bytes
	if _, err := Combine(out[:th], th); !errors.Is(err, ErrInconsistentShares) {
		t.Fatalf("a seed chunk of 2^56 rebuilt: %v", err)
	}
	r := rand.New(rand.NewPCG(7, 7))
	for i := range 50 {
		bad := append([]Share(nil), shares...)
		for c := range chunks {
			bad[i%th].Y[c] = r.Uint64N(prime)
		}
		if _, err := Combine(bad[:th], th); !errors.Is(err, ErrInconsistentShares) {
			t.Fatalf("trial %d: a random wrong share among exactly t: %v", i, err)
		}
	}
	// One chunk alone changed at random rebuilds in range with
	// probability 2^−5 (7 bytes of the 61 bits): the range check is no
	// integrity check.
	passed := 0
	for range 256 {
		bad := append([]Share(nil), shares...)
		bad[1].Y[0] = r.Uint64N(prime)
		if got, err := Combine(bad[:th], th); err == nil && got != seed {
			passed++
		}
	}
	if passed == 0 || passed > 32 {
		t.Fatalf("%d of 256 shares with chunk 0 changed at random rebuilt a wrong seed, want about 8", passed)
	}
	// A crafted, in-range shift among t+1 shares: caught by Combine.
	out = shifted(shares, th, 0, 1)
	if _, err := Combine(out[:th+1], th); !errors.Is(err, ErrInconsistentShares) {
		t.Fatalf("a shifted share among t+1: %v", err)
	}
	// The same among exactly t: Combine alone gives a different seed and
	// no error; only a commitment tells it apart.
	got, err := Combine(out[:th], th)
	if err != nil || got == seed || got[0] != seed[0]+1 {
		t.Fatalf("a shifted share among exactly t: %x (seed %x), %v", got, seed, err)
	}
}

// TestCombineChecked: with a check that knows the seed (as a commitment
// does), one shifted share is corrected wherever it lies among more than
// t shares, with at most t+2 interpolations; two wrong shares among the
// first t+1 are corrected by Berlekamp–Welch when there are at least t+4
// shares; with exactly t shares, with two wrong shares among t+3, or with
// shares that agree on another seed, it fails with ErrInconsistentShares
// and no seed.
func TestCombineChecked(t *testing.T) {
	const n, th = 7, 3
	seed, shares := seedShares(t, n, th)
	calls := 0
	check := func(s *[SecretLen]byte) bool { calls++; return *s == seed }
	for m := th + 1; m <= n; m++ {
		for at := range m {
			bad := append([]Share(nil), shares[:m]...)
			bad[at].Y[at%chunks] = addmod(bad[at].Y[at%chunks], 1+uint64(at))
			calls = 0
			got, err := combineChecked(bad, th, check)
			if err != nil || got != seed {
				t.Fatalf("%d shares, share %d wrong: %x, %v", m, at, got, err)
			}
			if calls > th+2 {
				t.Fatalf("%d shares, share %d wrong: %d checks, want at most %d", m, at, calls, th+2)
			}
		}
	}
	out := shifted(shares, th, 1, 5)
	if _, err := combineChecked(out[:th], th, check); !errors.Is(err, ErrInconsistentShares) {
		t.Fatalf("a shifted share among exactly t: %v", err)
	}
	// Two shares wrong in the same chunk among the first t+1 defeat every
	// subset that leaves one out; Berlekamp–Welch, which decodes each
	// chunk on its own, corrects them among all 7 (up to ⌊(7−3)/2⌋ = 2
	// a chunk), and not among 6 (up to 1).
	two := append([]Share(nil), shares...)
	two[0].Y[0], two[2].Y[0] = addmod(two[0].Y[0], 1), addmod(two[2].Y[0], 5)
	calls = 0
	if got, err := combineChecked(two, th, check); err != nil || got != seed || calls > th+3 {
		t.Fatalf("two wrong shares among 7: %x, %v after %d checks", got, err, calls)
	}
	if _, err := combineChecked(two[:n-1], th, check); !errors.Is(err, ErrInconsistentShares) || errors.Is(err, errConsistentMismatch) {
		t.Fatalf("two wrong shares among 6: %v", err)
	}
	other := func(s *[SecretLen]byte) bool { return false }
	if _, err := combineChecked(shares, th, other); !errors.Is(err, errConsistentMismatch) {
		t.Fatalf("%d agreeing shares of a seed the check refuses: %v", n, err)
	}
	if _, err := combineChecked(shares[:th-1], th, check); !errors.Is(err, ErrTooFewShares) {
		t.Fatalf("t-1 shares: %v", err)
	}
}

// saRound is a round of six clients on the complete graph (k = 5, t = 3)
// run to the end of step 2, every client surviving.
type saRound struct {
	p   Params
	g   *Graph
	srv *Server
	cl  []*Client
	x   [][]uint32
}

func newSARound(t *testing.T, advert func(*KeyAdvert)) *saRound {
	t.Helper()
	return newSARoundP(t, Params{Session: 17, IDs: testIDs(6), K: 5, T: 3, D: 32, GraphSeed: 4}, advert)
}

// newSARoundP is newSARound with the round's parameters p.
func newSARoundP(t *testing.T, p Params, advert func(*KeyAdvert)) *saRound {
	t.Helper()
	g, err := NewGraph(p)
	must(t, err)
	r := &saRound{p: p, g: g, srv: NewServer(g), cl: make([]*Client, len(p.IDs)), x: testInputs(len(p.IDs), p.D, 9)}
	for i, id := range p.IDs {
		r.cl[i], err = NewClient(g, id, clientRand(17, id))
		must(t, err)
		a, err := r.cl[i].Advertise()
		must(t, err)
		if advert != nil {
			advert(&a)
		}
		must(t, r.srv.AddAdvert(id, *wire(t, &a, new(KeyAdvert))))
	}
	must(t, r.srv.EndAdvertise())
	for i, id := range p.IDs {
		l := r.srv.AdvertsFor(id)
		m, err := r.cl[i].ShareKeys(*wire(t, &l, new(KeyList)))
		must(t, err)
		must(t, r.srv.AddShares(id, m))
	}
	must(t, r.srv.EndShareKeys())
	for i, id := range p.IDs {
		m, err := r.cl[i].MaskInput(r.x[i], r.srv.SharesFor(id))
		must(t, err)
		must(t, r.srv.AddMasked(id, m))
	}
	must(t, r.srv.EndMaskedInput())
	return r
}

// unmask is client i's step-3 answer, changed by tamper if not nil.
func (r *saRound) unmask(t *testing.T, i int, tamper func(*UnmaskResponse)) {
	t.Helper()
	req := r.srv.UnmaskRequestFor(r.p.IDs[i])
	m, err := r.cl[i].Unmask(*wire(t, &req, new(UnmaskRequest)))
	must(t, err)
	if tamper != nil {
		tamper(&m)
	}
	must(t, r.srv.AddUnmask(r.p.IDs[i], *wire(t, &m, new(UnmaskResponse))))
}

// TestRedteamShiftedSelfMaskShare is the attack wire version 2 let
// through: a neighbour shifts its revealed share of a survivor's
// self-mask seed by δ over its public Lagrange weight, so that the t
// shares the server holds rebuild the seed plus δ, an in-range seed
// Combine accepts, and the sum would come out wrong with no error. With
// the commitment the server checks, exactly t shares give a
// *MismatchError naming the survivor and no sum; one more honest share
// (t+1) corrects it, and the sum is exact.
func TestRedteamShiftedSelfMaskShare(t *testing.T) {
	r := newSARound(t, nil)
	owner := r.p.IDs[0]
	// Clients 0..3 answer, in order; 4 and 5 do not yet. The owner's
	// shares are then those of clients 1, 2 and 3: exactly t, and client
	// 1's comes first.
	xs := []uint64{uint64(shareX(1)), uint64(shareX(2)), uint64(shareX(3))}
	w := make([]uint64, len(xs))
	newLagrange(xs).at(w, 0)
	r.unmask(t, 0, nil)
	r.unmask(t, 1, func(m *UnmaskResponse) {
		for i := range m.Shares {
			if s := &m.Shares[i]; s.Owner == owner {
				s.Y[0] = addmod(s.Y[0], invmod(w[0])) // the seed's byte 0 plus 1
			}
		}
	})
	r.unmask(t, 2, nil)
	r.unmask(t, 3, nil)
	// What the server holds for the owner rebuilds a wrong seed that
	// Combine alone accepts.
	if _, err := Combine(r.srv.bShares[owner], r.p.T); err != nil || len(r.srv.bShares[owner]) != r.p.T {
		t.Fatalf("the shifted shares: %d of them, Combine: %v", len(r.srv.bShares[owner]), err)
	}
	sum, err := r.srv.Sum()
	var me *MismatchError
	if !errors.As(err, &me) || !errors.Is(err, ErrInconsistentShares) || sum != nil {
		t.Fatalf("Sum with t shares, one shifted: %v, %v", sum, err)
	}
	if me.Owner != owner || me.Kind != SelfMaskShare || me.Shares != r.p.T || me.T != r.p.T || me.Consistent {
		t.Fatalf("the error: %+v (%v)", *me, me)
	}
	t.Log(err)
	// A fifth client answers late: t+1 shares of the owner's seed, one
	// shifted, and the sum is exact.
	r.unmask(t, 4, nil)
	sum, err = r.srv.Sum()
	must(t, err)
	if !slices.Equal(sum, plainSum(r.p, r.x, r.p.IDs)) {
		t.Fatal("with t+1 shares, one shifted: the sum differs from the plain sum")
	}
}

// TestRedteamWrongCommitment is a client whose advert commits to another
// seed than the one it shares (or a server that alters the commitment):
// its shares all agree, none match, and Sum fails naming it, with
// Consistent set: the round is lost, never summed wrong.
func TestRedteamWrongCommitment(t *testing.T) {
	var liar uint64
	r := newSARound(t, func(a *KeyAdvert) {
		if liar == 0 {
			liar = a.ID
			a.BC[0] ^= 1
		}
	})
	for i := range r.p.IDs {
		r.unmask(t, i, nil)
	}
	sum, err := r.srv.Sum()
	var me *MismatchError
	if !errors.As(err, &me) || sum != nil || me.Owner != liar || !me.Consistent || me.Shares != r.p.K {
		t.Fatalf("Sum with a wrong commitment: %v, %v", sum, err)
	}
}

// TestRedteamWireVersion: a message of every kind under version 2
// (adverts without a commitment), version 1 (which shared 32-byte keys in
// five field elements a share), 4 or 0 is refused with ErrCorrupt; a
// version-1 unmask response's body (49 bytes a share) under version 3's
// header does not decode either; a revealed share's value outside the
// field is refused.
func TestRedteamWireVersion(t *testing.T) {
	msgs := map[string]interface {
		encoding.BinaryMarshaler
		encoding.BinaryUnmarshaler
	}{
		"advert":          &KeyAdvert{ID: 7},
		"key list":        &KeyList{Adverts: []KeyAdvert{{ID: 7}, {ID: 9}}},
		"share bundle":    &ShareBundle{Shares: []EncryptedShare{{From: 7, To: 9}}},
		"masked input":    &MaskedInput{From: 7, Y: []uint32{1, 2, 3}},
		"unmask request":  &UnmaskRequest{Survivors: []uint64{7, 9}},
		"unmask response": &UnmaskResponse{From: 7, Shares: []RevealedShare{{Owner: 9, Kind: SelfMaskShare, Y: [chunks]uint64{1, 2, 3}}}},
	}
	for name, m := range msgs {
		b, err := m.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		if err := m.UnmarshalBinary(b); err != nil {
			t.Fatalf("%s: version 3: %v", name, err)
		}
		for _, v := range []byte{0, 1, 2, 4, 0xff} {
			c := append([]byte(nil), b...)
			c[0] = v
			if err := m.UnmarshalBinary(c); !errors.Is(err, ErrCorrupt) {
				t.Errorf("%s under version %d: %v, want ErrCorrupt", name, v, err)
			}
		}
	}
	// Version 1's unmask response: From, a count, then per share the
	// owner, the kind and five field elements.
	v1 := []byte{wireVersion, kindUnmaskResponse}
	v1 = binary.LittleEndian.AppendUint64(v1, 7)
	v1 = binary.LittleEndian.AppendUint32(v1, 2)
	for range 2 {
		v1 = binary.LittleEndian.AppendUint64(v1, 9)
		v1 = append(v1, byte(SelfMaskShare))
		for range 5 {
			v1 = binary.LittleEndian.AppendUint64(v1, 1)
		}
	}
	var m UnmaskResponse
	if err := m.UnmarshalBinary(v1); err == nil {
		t.Fatalf("a version-1 body under version 3 decoded: %+v", m)
	}
	b, _ := (&UnmaskResponse{From: 7, Shares: []RevealedShare{{Owner: 9, Kind: SelfMaskShare, Y: [chunks]uint64{1, prime, 3}}}}).MarshalBinary()
	if err := m.UnmarshalBinary(b); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("a share value of 2^61−1: %v", err)
	}
}
