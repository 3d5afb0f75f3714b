package secagg

import (
	"errors"
	"math"
	"math/rand/v2"
	"os/exec"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// TestShamir: any t of the shares rebuild the secret, in any order; fewer
// fail; a repeated coordinate fails; a wrong share among more than t is
// caught.
func TestShamir(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	rnd := rand.NewChaCha8([32]byte{1})
	for _, tc := range []struct{ n, t int }{{2, 2}, {5, 3}, {20, 11}, {100, 51}} {
		var secret [SecretLen]byte
		rnd.Read(secret[:])
		xs := make([]uint32, tc.n)
		for i := range xs {
			xs[i] = uint32(3*i + 1)
		}
		shares, err := Split(&secret, xs, tc.t, rnd)
		must(t, err)
		for range 5 {
			sub := slices.Clone(shares)
			r.Shuffle(len(sub), func(i, j int) { sub[i], sub[j] = sub[j], sub[i] })
			got, err := Combine(sub[:tc.t+r.IntN(tc.n-tc.t+1)], tc.t)
			must(t, err)
			if got != secret {
				t.Fatalf("n=%d t=%d: wrong secret", tc.n, tc.t)
			}
		}
		if _, err := Combine(shares[:tc.t-1], tc.t); !errors.Is(err, ErrTooFewShares) {
			t.Fatalf("t-1 shares: %v", err)
		}
		dup := append(slices.Clone(shares[:tc.t-1]), shares[0])
		if _, err := Combine(dup, tc.t); !errors.Is(err, ErrDuplicate) {
			t.Fatalf("duplicate share: %v", err)
		}
		if tc.n > tc.t {
			bad := slices.Clone(shares)
			bad[tc.n-1].Y[2] = addmod(bad[tc.n-1].Y[2], 1)
			if _, err := Combine(bad, tc.t); !errors.Is(err, ErrInconsistentShares) {
				t.Fatalf("tampered extra share: %v", err)
			}
		}
		out := slices.Clone(shares)
		out[0].Y[0] = prime
		if _, err := Combine(out, tc.t); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("value outside the field: %v", err)
		}
	}
}

// TestShamirHides: t-1 shares of two different secrets are distributed
// alike; here, a chunk's value at one point is uniform over the field, so
// its top bits split evenly whatever the secret.
func TestShamirHides(t *testing.T) {
	rnd := rand.NewChaCha8([32]byte{2})
	var zero, ones [SecretLen]byte
	for i := range ones {
		ones[i] = 0xff
	}
	for _, s := range []*[SecretLen]byte{&zero, &ones} {
		high := 0
		const trials = 4000
		for range trials {
			sh, err := Split(s, []uint32{1, 2, 3}, 2, rnd)
			must(t, err)
			if sh[0].Y[0] >= prime/2 {
				high++
			}
		}
		if high < trials*45/100 || high > trials*55/100 {
			t.Fatalf("one share's top half hit %d of %d times", high, trials)
		}
	}
}

func TestFieldArithmetic(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for range 10000 {
		a, b := r.Uint64N(prime), r.Uint64N(prime)
		if got, want := mulmod(a, b), mulSlow(a, b); got != want {
			t.Fatalf("%d·%d = %d, want %d", a, b, got, want)
		}
		if a != 0 && mulmod(a, invmod(a)) != 1 {
			t.Fatalf("inverse of %d", a)
		}
		if submod(addmod(a, b), b) != a {
			t.Fatal("add/sub")
		}
	}
	if mulmod(prime-1, prime-1) != 1 {
		t.Fatal("(-1)² != 1")
	}
}

// mulSlow multiplies modulo the prime by shift-and-add.
func mulSlow(a, b uint64) uint64 {
	var r uint64
	for b > 0 {
		if b&1 != 0 {
			r = (r + a) % prime
		}
		a = (a << 1) % prime
		b >>= 1
	}
	return r
}

// TestAddPRG: the expansion is deterministic, adding then subtracting
// restores the vector, and a prefix of a longer expansion equals the
// shorter one (chunking does not change the stream).
func TestAddPRG(t *testing.T) {
	seed := [32]byte{9}
	a := make([]uint32, 10000)
	b := make([]uint32, 3)
	AddPRG(a, &seed, false)
	AddPRG(b, &seed, false)
	if !slices.Equal(a[:3], b) {
		t.Fatal("prefix differs")
	}
	small := make([]uint32, len(a))
	addPRG(small, &seed, false, make([]byte, 12)) // three values per chunk
	if !slices.Equal(small, a) {
		t.Fatal("the stream depends on the buffer size")
	}
	AddPRG(a, &seed, true)
	for _, v := range a {
		if v != 0 {
			t.Fatal("subtracting the mask does not restore the vector")
		}
	}
	other := [32]byte{10}
	AddPRG(b, &other, false)
	if b[0] == 0 && b[1] == 0 {
		t.Fatal("suspicious stream")
	}
}

// TestFixedPoint: rounding error at most half a step, clipping, and no
// overflow at the largest n Check allows, with every input at ±Clip.
func TestFixedPoint(t *testing.T) {
	f := FixedPoint{Clip: 0.5, Bits: 8}
	if f.Levels() != 127 || f.MaxClients() != (1<<31-1)/127 {
		t.Fatalf("levels %d, max %d", f.Levels(), f.MaxClients())
	}
	src := []float32{0, 0.1, -0.1, 0.5, -0.5, 3, -3, float32(math.NaN()), 0.25}
	codes := make([]uint32, len(src))
	f.Encode(codes, src)
	back := make([]float32, len(src))
	f.Decode(back, codes)
	step := 0.5 / 127.0
	for i, v := range src {
		want := math.Max(-0.5, math.Min(0.5, float64(v)))
		if v != v {
			want = 0
		}
		if math.Abs(float64(back[i])-want) > step/2+1e-7 {
			t.Errorf("%v → %v, want within %v of %v", v, back[i], step/2, want)
		}
	}
	n := f.MaxClients()
	must(t, f.Check(n))
	if err := f.Check(n + 1); !errors.Is(err, ErrParams) {
		t.Fatalf("Check(n+1): %v", err)
	}
	for _, v := range []float32{0.5, -0.5} {
		one := make([]uint32, 1)
		f.Encode(one, []float32{v})
		var sum uint32
		for range n {
			sum += one[0]
		}
		got := make([]float32, 1)
		f.Decode(got, []uint32{sum})
		if want := float64(v) * float64(n); math.Abs(float64(got[0])-want) > 1e-3*math.Abs(want) {
			t.Fatalf("sum of %d × %v decodes to %v, want %v", n, v, got[0], want)
		}
	}
	for _, bad := range []FixedPoint{{Clip: 0, Bits: 8}, {Clip: 1, Bits: 1}, {Clip: 1, Bits: 32}, {Clip: float32(math.Inf(1)), Bits: 8}} {
		if err := bad.Check(1); !errors.Is(err, ErrParams) {
			t.Errorf("%+v: %v", bad, err)
		}
	}
}

// TestFixedPointStochastic: stochastic rounding is unbiased and seeded.
func TestFixedPointStochastic(t *testing.T) {
	f := FixedPoint{Clip: 1, Bits: 4} // step 1/7
	src := make([]float32, 20000)
	for i := range src {
		src[i] = 0.05 // 0.35 of a step
	}
	codes := make([]uint32, len(src))
	f.EncodeStochastic(codes, src, 1)
	var sum int64
	for _, c := range codes {
		sum += int64(int32(c))
	}
	mean := float64(sum) / float64(len(src)) / 7
	if math.Abs(mean-0.05) > 0.005 {
		t.Fatalf("mean %v, want 0.05", mean)
	}
	again := make([]uint32, len(src))
	f.EncodeStochastic(again, src, 1)
	if !slices.Equal(codes, again) {
		t.Fatal("same seed, different codes")
	}
}

// TestSupport: every client computes the same ascending, distinct support
// from the round seed; another seed gives another support.
func TestSupport(t *testing.T) {
	const d, k = 199210, 1992
	a := make([]int32, k)
	b := make([]int32, k)
	c := make([]int32, k)
	Support(a, d, 42)
	Support(b, d, 42)
	Support(c, d, 43)
	if !slices.Equal(a, b) {
		t.Fatal("same seed, different supports")
	}
	if slices.Equal(a, c) {
		t.Fatal("another seed, same support")
	}
	for i, v := range a {
		if v < 0 || v >= d || i > 0 && v <= a[i-1] {
			t.Fatalf("index %d at %d", v, i)
		}
	}
	x := make([]float32, d)
	for i := range x {
		x[i] = float32(i)
	}
	g := make([]float32, k)
	Gather(g, x, a)
	y := make([]float32, d)
	Scatter(y, g, a)
	for _, i := range a {
		if y[i] != float32(i) {
			t.Fatal("gather/scatter")
		}
	}
}

// TestMessagesRoundTrip: every message decodes to what was encoded.
func TestMessagesRoundTrip(t *testing.T) {
	adv := KeyAdvert{ID: 7, CPK: [32]byte{1, 2}, SPK: [32]byte{3}}
	es := EncryptedShare{From: 1, To: 2}
	es.Sealed[9] = 4
	for _, m := range []message{
		&adv,
		&KeyList{Adverts: []KeyAdvert{adv, {ID: 9}}},
		&KeyList{},
		&ShareBundle{Shares: []EncryptedShare{es, es}},
		&MaskedInput{From: 3, Y: []uint32{1, 2, math.MaxUint32}},
		&UnmaskRequest{Survivors: []uint64{1, 5, 9}},
		&UnmaskResponse{From: 4, Shares: []RevealedShare{{Owner: 2, Kind: SelfMaskShare, Y: [chunks]uint64{1, prime - 1}}, {Owner: 3, Kind: MaskKeyShare}}},
	} {
		b, err := m.MarshalBinary()
		must(t, err)
		got := reflect.New(reflect.TypeOf(m).Elem()).Interface().(message)
		must(t, got.UnmarshalBinary(b))
		if !reflect.DeepEqual(normalise(got), normalise(m)) {
			t.Fatalf("%T: round trip gave %+v, want %+v", m, got, m)
		}
		if err := got.UnmarshalBinary(b[:len(b)-1]); !errors.Is(err, ErrTruncated) && !errors.Is(err, ErrCorrupt) {
			t.Fatalf("%T truncated: %v", m, err)
		}
		if err := got.UnmarshalBinary(append(b, 0)); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("%T with a trailing byte: %v", m, err)
		}
	}
	if err := new(UnmaskRequest).UnmarshalBinary([]byte{wireVersion, kindUnmaskRequest, 0xff, 0xff, 0xff, 0xff}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("huge count: %v", err)
	}
}

// normalise makes empty slices nil so that DeepEqual compares contents.
func normalise(m message) message {
	if l, ok := m.(*KeyList); ok && len(l.Adverts) == 0 {
		return &KeyList{}
	}
	return m
}

// TestDependencies keeps secagg a leaf of the project: of fedzip it may use
// compress only, and no network, Raft or metrics library, so that round,
// the coordinator and the simulator can all drive it.
func TestDependencies(t *testing.T) {
	goCmd, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command")
	}
	out, err := exec.Command(goCmd, "list", "-deps", ".").Output()
	if err != nil {
		t.Skip("go list:", err)
	}
	const mod = "github.com/fedzip/fedzip/"
	for _, dep := range strings.Fields(string(out)) {
		banned := strings.HasPrefix(dep, mod) && dep != mod+"secagg" && dep != mod+"compress"
		for _, net := range []string{"google.golang.org/", "github.com/hashicorp/", "github.com/prometheus/", "go.etcd.io/"} {
			banned = banned || strings.HasPrefix(dep, net)
		}
		if banned {
			t.Errorf("secagg depends on %s", dep)
		}
	}
}

// overheadBytes is the closed form of a client's bytes for keys and shares
// when all its k neighbours take part: up = advert (106, with its 32-byte
// commitment) + share bundle (6 + 80k) + unmask response (14 + 33k);
// down = key list (6 + 72k, keys without commitments) +
// share bundle (6 + 80k) + unmask request (6 + 8k).
func overheadBytes(k int) (up, down int) {
	return headerLen + advertLen + 6 + encShareLen*k + 14 + revealedLen*k, 6 + listEntryLen*k + 6 + encShareLen*k + 6 + 8*k
}

// TestOverheadBytes checks the closed form against the encoded messages of
// a round, and logs the table of docs/secagg.md (go test -v -run
// TestOverheadBytes ./secagg/).
func TestOverheadBytes(t *testing.T) {
	p := Params{Session: 1, IDs: testIDs(30), K: 10, T: 6, D: 4, GraphSeed: 1}
	g, _ := NewGraph(p)
	r := record(t, g, p.D, nil, true)
	me := p.IDs[0]
	var a KeyAdvert
	for _, adv := range r.adverts {
		if adv.ID == me {
			a = adv
		}
	}
	m, l, in, req := r.bundles[me], r.srv.AdvertsFor(me), r.srv.SharesFor(me), r.srv.UnmaskRequestFor(me)
	var u UnmaskResponse
	for _, x := range r.resp {
		if x.From == me {
			u = x
		}
	}
	up, down := size(&a)+size(&m)+size(&u), size(&l)+size(&in)+size(&req)
	if wu, wd := overheadBytes(p.K); up != wu || down != wd || wu != 126+113*p.K || wd != 18+160*p.K {
		t.Fatalf("k=%d: %d up, %d down; closed form %d, %d", p.K, up, down, wu, wd)
	}
	t.Log("k\tup B\tdown B\ttotal B")
	for _, k := range []int{8, 10, 20, 32, 62, 100, 200} {
		u, d := overheadBytes(k)
		t.Logf("%d\t%d\t%d\t%d", k, u, d, u+d)
	}
}

// TestOldWireVersionRefused: every message of a real round, and the
// server's snapshot, encode at wireVersion 3 (adverts with a commitment
// to the self-mask seed); the same bytes marked as version 2 (adverts
// without it) or version 1 (shares of 32-byte keys, five field elements
// each) are refused with ErrCorrupt, not misread; so is a version-2
// advert and a version-2 snapshot as version 2 wrote them (no commitment).
func TestOldWireVersionRefused(t *testing.T) {
	p := Params{Session: 1, IDs: testIDs(6), K: 4, T: 3, D: 8, GraphSeed: 1}
	g, _ := NewGraph(p)
	r := record(t, g, p.D, nil, true)
	me := p.IDs[0]
	l, in, req := r.srv.AdvertsFor(me), r.srv.SharesFor(me), r.srv.UnmaskRequestFor(me)
	m := r.bundles[me]
	msgs := []message{&r.adverts[0], &l, &m, &in, &req, &r.resp[0]}
	for _, msg := range msgs {
		b, err := msg.MarshalBinary()
		must(t, err)
		if b[0] != 3 {
			t.Fatalf("%T encodes version %d", msg, b[0])
		}
		got := reflect.New(reflect.TypeOf(msg).Elem()).Interface().(message)
		must(t, got.UnmarshalBinary(b))
		for _, v := range []byte{1, 2} {
			b[0] = v
			if err := got.UnmarshalBinary(b); !errors.Is(err, ErrCorrupt) {
				t.Errorf("%T at version %d: %v, want ErrCorrupt", msg, v, err)
			}
		}
	}
	// Version 2's advert: ID and two keys, no commitment.
	v2 := append([]byte{2, kindAdvert}, make([]byte, 8+2*keyLen)...)
	var a KeyAdvert
	if err := a.UnmarshalBinary(v2); !errors.Is(err, ErrCorrupt) {
		t.Errorf("a version-2 advert: %v, want ErrCorrupt", err)
	}
	snap, err := r.srv.MarshalBinary()
	must(t, err)
	// Version 2's snapshot: the same, its adverts without commitments.
	old := append([]byte{2}, snap[1:headerLen+1+4]...)
	rest := snap[headerLen+1+4:]
	for range r.adverts {
		old = append(old, rest[:listEntryLen]...)
		rest = rest[advertLen:]
	}
	old = append(old, rest...)
	for _, b := range [][]byte{old, append([]byte{1}, snap[1:]...), append([]byte{2}, snap[1:]...)} {
		if _, err := RestoreServer(g, b); !errors.Is(err, ErrCorrupt) {
			t.Errorf("a snapshot at version %d: %v, want ErrCorrupt", b[0], err)
		}
	}
	// Restored under version 2's layout read as version 3, it would not
	// decode either: the commitments are part of the layout.
	old[0] = wireVersion
	if _, err := RestoreServer(g, old); err == nil {
		t.Error("a version-2 snapshot relabelled version 3 restored")
	}
	// A share bundle's sealed shares are three field elements each, twice
	// (b and s_sk), and a revealed share is one set of three.
	if got := len(m.Shares[0].Sealed); got != 2*3*8+16 {
		t.Errorf("sealed shares of %d bytes", got)
	}
}

// TestSeedKeys: the mask key a client advertises is the one derived from
// the seed it shares, so the server's rebuilt seed gives the advertised
// public key back, and a different seed does not; the self-mask key is a
// different key from the same seed.
func TestSeedKeys(t *testing.T) {
	var a, b [SecretLen]byte
	b[SecretLen-1] = 1
	ka, kb := maskKeyFromSeed(&a), maskKeyFromSeed(&b)
	if ka.Equal(kb) {
		t.Fatal("two seeds give one mask key")
	}
	if !ka.Equal(maskKeyFromSeed(&a)) {
		t.Fatal("a seed gives two mask keys")
	}
	if sm := selfMaskFromSeed(&a); [32]byte(ka.Bytes()) == sm {
		t.Fatal("the self-mask key equals the mask key of the same seed")
	}
	c, err := NewClient(mustGraph(t), testIDs(4)[0], rand.NewChaCha8([32]byte{9}))
	must(t, err)
	adv, err := c.Advertise()
	must(t, err)
	if [keyLen]byte(maskKeyFromSeed(&c.sSeed).PublicKey().Bytes()) != adv.SPK {
		t.Fatal("the advertised mask key is not the one the shared seed gives")
	}
}

func mustGraph(t *testing.T) *Graph {
	g, err := NewGraph(Params{Session: 1, IDs: testIDs(4), K: 3, T: 2, D: 4, GraphSeed: 1})
	must(t, err)
	return g
}

// TestCombineRefusesOutOfRangeSeed: shares that agree on one polynomial
// but whose secret is not a 16-byte seed (its last chunk has more than two
// bytes, as a forged set of shares, all shifted alike, would give) are
// refused with ErrInconsistentShares, not truncated into some seed.
func TestCombineRefusesOutOfRangeSeed(t *testing.T) {
	var secret [SecretLen]byte
	secret[SecretLen-2], secret[SecretLen-1] = 0xff, 0xff
	shares, err := Split(&secret, []uint32{1, 2, 3, 4}, 3, rand.NewChaCha8([32]byte{3}))
	must(t, err)
	got, err := Combine(shares, 3)
	must(t, err)
	if got != secret {
		t.Fatal("wrong secret")
	}
	for i := range shares {
		shares[i].Y[chunks-1] = addmod(shares[i].Y[chunks-1], 1) // the constant term + 1: chunk 0x10000
	}
	if _, err := Combine(shares, 3); !errors.Is(err, ErrInconsistentShares) {
		t.Fatalf("a secret beyond 16 bytes: %v, want ErrInconsistentShares", err)
	}
}
