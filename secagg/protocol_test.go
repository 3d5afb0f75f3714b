package secagg

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

// Steps at which a client drops out in runRound: it does not send that
// step's message nor any later one.
const (
	dropAdvertise = iota + 1
	dropShareKeys
	dropMaskInput
	dropUnmask
)

// testIDs returns n sparse, ascending client IDs.
func testIDs(n int) []uint64 {
	ids := make([]uint64, n)
	for i := range ids {
		ids[i] = uint64(3*i + 7)
	}
	return ids
}

func testInputs(n, d int, seed uint64) [][]uint32 {
	r := rand.New(rand.NewPCG(seed, 1))
	x := make([][]uint32, n)
	for i := range x {
		x[i] = make([]uint32, d)
		for j := range x[i] {
			x[i][j] = r.Uint32()
		}
	}
	return x
}

// clientRand is client id's seeded randomness.
func clientRand(seed, id uint64) *rand.ChaCha8 {
	var s [32]byte
	for i := range 8 {
		s[i] = byte(seed >> (8 * i))
		s[8+i] = byte(id >> (8 * i))
	}
	return rand.NewChaCha8(s)
}

// outcome is what runRound saw.
type outcome struct {
	sum       []uint32
	survivors []uint64 // U3
	err       error
	masked    map[uint64][]uint32
}

// runRound drives a whole round in one goroutine: clients and server
// exchange real encoded messages (every message goes through
// MarshalBinary and UnmarshalBinary). Clients in drop leave at the step
// named. A client that aborts (its step fails) counts as dropped.
func runRound(t *testing.T, g *Graph, x [][]uint32, drop map[uint64]int, seed uint64) outcome {
	t.Helper()
	p := g.Params()
	srv := NewServer(g)
	clients := map[uint64]*Client{}
	out := outcome{masked: map[uint64][]uint32{}}
	alive := func(id uint64, step int) bool {
		s, ok := drop[id]
		return !ok || s > step
	}
	for _, id := range p.IDs {
		c, err := NewClient(g, id, clientRand(seed, id))
		if err != nil {
			t.Fatal(err)
		}
		clients[id] = c
		if !alive(id, dropAdvertise) {
			continue
		}
		a, err := c.Advertise()
		if err != nil {
			t.Fatal(err)
		}
		if err := srv.AddAdvert(id, *wire(t, &a, new(KeyAdvert))); err != nil {
			t.Fatal(err)
		}
	}
	if out.err = srv.EndAdvertise(); out.err != nil {
		return out
	}
	for _, id := range p.IDs {
		if !alive(id, dropShareKeys) {
			continue
		}
		l := srv.AdvertsFor(id)
		m, err := clients[id].ShareKeys(*wire(t, &l, new(KeyList)))
		if errors.Is(err, ErrTooFewNeighbours) {
			drop[id] = dropShareKeys
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := srv.AddShares(id, *wire(t, &m, new(ShareBundle))); err != nil {
			t.Fatal(err)
		}
	}
	if out.err = srv.EndShareKeys(); out.err != nil {
		return out
	}
	for i, id := range p.IDs {
		if !alive(id, dropMaskInput) {
			continue
		}
		b := srv.SharesFor(id)
		m, err := clients[id].MaskInput(x[i], *wire(t, &b, new(ShareBundle)))
		if errors.Is(err, ErrTooFewNeighbours) {
			drop[id] = dropMaskInput
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		out.masked[id] = m.Y
		if err := srv.AddMasked(id, *wire(t, &m, new(MaskedInput))); err != nil {
			t.Fatal(err)
		}
	}
	if out.err = srv.EndMaskedInput(); out.err != nil {
		return out
	}
	out.survivors = srv.Survivors()
	for _, id := range out.survivors {
		if !alive(id, dropUnmask) {
			continue
		}
		req := srv.UnmaskRequestFor(id)
		m, err := clients[id].Unmask(*wire(t, &req, new(UnmaskRequest)))
		if errors.Is(err, ErrTooFewSurvivors) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := srv.AddUnmask(id, *wire(t, &m, new(UnmaskResponse))); err != nil {
			t.Fatal(err)
		}
	}
	out.sum, out.err = srv.Sum()
	return out
}

type message interface {
	MarshalBinary() ([]byte, error)
	UnmarshalBinary([]byte) error
}

// wire sends m through its encoding into dst.
func wire[T message](t *testing.T, m message, dst T) T {
	t.Helper()
	b, err := m.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if err := dst.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	return dst
}

// plainSum is the uint32 sum of the inputs of ids.
func plainSum(p Params, x [][]uint32, ids []uint64) []uint32 {
	sum := make([]uint32, p.D)
	for _, id := range ids {
		i, _ := slices.BinarySearch(p.IDs, id)
		for j, v := range x[i] {
			sum[j] += v
		}
	}
	return sum
}

// pickDrops returns count clients chosen with seed, each dropping at a
// step from steps (in turn).
func pickDrops(ids []uint64, count int, steps []int, seed uint64) map[uint64]int {
	r := rand.New(rand.NewPCG(seed, 2))
	perm := r.Perm(len(ids))
	drop := map[uint64]int{}
	for i := range count {
		drop[ids[perm[i]]] = steps[i%len(steps)]
	}
	return drop
}

// TestChooseK100 pins the parameters the exactness test uses: for 100
// clients, 30% dropouts and 10% corrupt clients, failure below 2^-30 and
// leakage below 2^-40.
func TestChooseK100(t *testing.T) {
	c, ok := ChooseK(100, 0.3, 0.1, 30, 40)
	if !ok || c.K != 62 || c.T != 32 || c.Log2Fail > -30 || c.Log2Leak > -40 {
		t.Fatalf("ChooseK(100, 0.3, 0.1) = %+v, %v; want k=62, t=32", c, ok)
	}
	// Larger rounds get relatively sparser graphs (ExampleChooseK shows
	// n = 10,000).
	c, ok = ChooseK(1000, 0.3, 0.1, 30, 40)
	if !ok || c.K > 300 || 2*c.T <= c.K {
		t.Fatalf("ChooseK(1000) = %+v, %v", c, ok)
	}
}

// TestExactness: the recovered sum equals the plain uint32 sum of the
// survivors' inputs exactly. 100 clients (k and t from ChooseK) with 30%
// dropping after sharing keys, before their masked input (so that their
// pair masks must be rebuilt); and, to keep the suite fast, 40 clients
// with 30% dropping at each step in turn and at a mix of all four.
func TestExactness(t *testing.T) {
	for _, tc := range []struct {
		n     int
		name  string
		steps []int
	}{
		{100, "masked-input", []int{dropMaskInput}},
		{40, "none", nil},
		{40, "mixed", []int{dropAdvertise, dropShareKeys, dropMaskInput, dropUnmask}},
		{40, "advertise", []int{dropAdvertise}},
		{40, "share-keys", []int{dropShareKeys}},
		{40, "masked-input", []int{dropMaskInput}},
		{40, "unmask", []int{dropUnmask}},
	} {
		t.Run(fmt.Sprintf("n%d-%s", tc.n, tc.name), func(t *testing.T) {
			const d = 300
			ch, ok := ChooseK(tc.n, 0.3, 0.1, 30, 40)
			if !ok {
				t.Fatal("no k for", tc.n)
			}
			p := Params{Session: 11, IDs: testIDs(tc.n), K: ch.K, T: ch.T, D: d, GraphSeed: 5}
			g, err := NewGraph(p)
			must(t, err)
			x := testInputs(tc.n, d, 1)
			drop := map[uint64]int{}
			if tc.steps != nil {
				drop = pickDrops(p.IDs, tc.n*3/10, tc.steps, 3)
			}
			o := runRound(t, g, x, drop, 9)
			must(t, o.err)
			wantN := tc.n
			for _, s := range drop {
				if s < dropUnmask {
					wantN--
				}
			}
			if len(o.survivors) != wantN {
				t.Fatalf("%d survivors, want %d", len(o.survivors), wantN)
			}
			if want := plainSum(p, x, o.survivors); !slices.Equal(o.sum, want) {
				t.Fatalf("recovered sum differs from the survivors' plain sum")
			}
		})
	}
}

// TestTooManyDropouts: when fewer than t holders of a needed secret
// answer, Sum returns ErrTooFewShares and no sum; when the missing answers
// arrive, the same server recovers the exact sum.
func TestTooManyDropouts(t *testing.T) {
	p := Params{Session: 2, IDs: testIDs(12), K: 6, T: 4, D: 50, GraphSeed: 1}
	g, err := NewGraph(p)
	if err != nil {
		t.Fatal(err)
	}
	x := testInputs(12, p.D, 4)
	drop := map[uint64]int{}
	for _, id := range p.IDs[:8] {
		drop[id] = dropUnmask // 8 of 12 sent masked input but never answer
	}
	o := runRound(t, g, x, drop, 1)
	if !errors.Is(o.err, ErrTooFewShares) || o.sum != nil {
		t.Fatalf("Sum = %v, %v; want ErrTooFewShares and no sum", o.sum != nil, o.err)
	}

	// Too few masked inputs: the server stops before unmasking.
	drop = map[uint64]int{}
	for _, id := range p.IDs[:9] {
		drop[id] = dropMaskInput
	}
	if o := runRound(t, g, x, drop, 1); !errors.Is(o.err, ErrTooFewSurvivors) || o.sum != nil {
		t.Fatalf("err = %v; want ErrTooFewSurvivors", o.err)
	}

	// Too few adverts.
	drop = map[uint64]int{}
	for _, id := range p.IDs[:9] {
		drop[id] = dropAdvertise
	}
	if o := runRound(t, g, x, drop, 1); !errors.Is(o.err, ErrTooFewSurvivors) {
		t.Fatalf("err = %v; want ErrTooFewSurvivors", o.err)
	}
}

// TestLateUnmaskRecovers: Sum fails while answers are missing and succeeds,
// exactly, once they arrive.
func TestLateUnmaskRecovers(t *testing.T) {
	p := Params{Session: 3, IDs: testIDs(10), K: 6, T: 4, D: 40, GraphSeed: 2}
	g, _ := NewGraph(p)
	x := testInputs(10, p.D, 5)
	srv := NewServer(g)
	cl := make([]*Client, len(p.IDs))
	for i, id := range p.IDs {
		cl[i], _ = NewClient(g, id, clientRand(1, id))
		a, _ := cl[i].Advertise()
		must(t, srv.AddAdvert(id, a))
	}
	must(t, srv.EndAdvertise())
	for i, id := range p.IDs {
		m, err := cl[i].ShareKeys(srv.AdvertsFor(id))
		must(t, err)
		must(t, srv.AddShares(id, m))
	}
	must(t, srv.EndShareKeys())
	for i, id := range p.IDs[:8] { // two drop before masking
		m, err := cl[i].MaskInput(x[i], srv.SharesFor(id))
		must(t, err)
		must(t, srv.AddMasked(id, m))
	}
	must(t, srv.EndMaskedInput())
	for i, id := range p.IDs[:2] {
		m, err := cl[i].Unmask(srv.UnmaskRequestFor(id))
		must(t, err)
		must(t, srv.AddUnmask(id, m))
	}
	if _, err := srv.Sum(); !errors.Is(err, ErrTooFewShares) {
		t.Fatalf("Sum with 2 answers: %v, want ErrTooFewShares", err)
	}
	for i, id := range p.IDs[2:8] {
		m, err := cl[i+2].Unmask(srv.UnmaskRequestFor(id))
		must(t, err)
		must(t, srv.AddUnmask(id, m))
	}
	sum, err := srv.Sum()
	must(t, err)
	if !slices.Equal(sum, plainSum(p, x, p.IDs[:8])) {
		t.Fatal("sum differs from the survivors' plain sum")
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestServerRefusesBothSecrets: the server never gathers both the b-shares
// and the s-shares of one client. It refuses a response revealing the
// wrong kind and a request to reconstruct it; and an honest client reveals
// one share per neighbour, of the kind its status calls for.
func TestServerRefusesBothSecrets(t *testing.T) {
	p := Params{Session: 4, IDs: testIDs(10), K: 6, T: 4, D: 8, GraphSeed: 3}
	g, _ := NewGraph(p)
	x := testInputs(10, p.D, 6)
	srv := NewServer(g)
	cl := make([]*Client, len(p.IDs))
	for i, id := range p.IDs {
		cl[i], _ = NewClient(g, id, clientRand(2, id))
		a, _ := cl[i].Advertise()
		must(t, srv.AddAdvert(id, a))
	}
	must(t, srv.EndAdvertise())
	for i, id := range p.IDs {
		m, err := cl[i].ShareKeys(srv.AdvertsFor(id))
		must(t, err)
		must(t, srv.AddShares(id, m))
	}
	must(t, srv.EndShareKeys())
	dropped := p.IDs[9]
	for i, id := range p.IDs[:9] {
		m, err := cl[i].MaskInput(x[i], srv.SharesFor(id))
		must(t, err)
		must(t, srv.AddMasked(id, m))
	}
	must(t, srv.EndMaskedInput())
	survivor := p.IDs[0]
	if _, err := srv.Reconstruct(survivor, MaskKeyShare); !errors.Is(err, ErrBothShares) {
		t.Fatalf("Reconstruct(survivor, s) = %v, want ErrBothShares", err)
	}
	if _, err := srv.Reconstruct(dropped, SelfMaskShare); !errors.Is(err, ErrBothShares) {
		t.Fatalf("Reconstruct(dropped, b) = %v, want ErrBothShares", err)
	}
	for i, id := range p.IDs[:9] {
		m, err := cl[i].Unmask(srv.UnmaskRequestFor(id))
		must(t, err)
		nbs := g.Neighbours(id)
		if len(m.Shares) != len(nbs) {
			t.Fatalf("client %d revealed %d shares for %d neighbours", id, len(m.Shares), len(nbs))
		}
		for _, r := range m.Shares {
			want := SelfMaskShare
			if r.Owner == dropped {
				want = MaskKeyShare
			}
			if r.Kind != want {
				t.Fatalf("client %d revealed kind %d of %d, want %d", id, r.Kind, r.Owner, want)
			}
		}
		// A forged response: every share relabelled as the other kind.
		forged := m
		forged.Shares = slices.Clone(m.Shares)
		for k := range forged.Shares {
			forged.Shares[k].Kind ^= SelfMaskShare | MaskKeyShare
		}
		if err := srv.AddUnmask(id, forged); !errors.Is(err, ErrBothShares) {
			t.Fatalf("forged response: %v, want ErrBothShares", err)
		}
		must(t, srv.AddUnmask(id, m))
	}
	if _, err := srv.Reconstruct(dropped, MaskKeyShare); err != nil {
		t.Fatal(err)
	}
	sum, err := srv.Sum()
	must(t, err)
	if !slices.Equal(sum, plainSum(p, x, p.IDs[:9])) {
		t.Fatal("wrong sum")
	}
	if _, err := cl[0].Unmask(srv.UnmaskRequestFor(p.IDs[0])); !errors.Is(err, ErrStep) {
		t.Fatalf("second Unmask: %v, want ErrStep", err)
	}
}

// TestMaskedUniform: one client's masked vector is uniform (chi-square on
// its bytes, 255 degrees of freedom, below the 0.1% critical value 330.5),
// although its input is constant; without the masks the same test fails.
func TestMaskedUniform(t *testing.T) {
	p := Params{Session: 5, IDs: testIDs(8), K: 4, T: 3, D: 1 << 15, GraphSeed: 4}
	g, _ := NewGraph(p)
	x := make([][]uint32, 8)
	for i := range x {
		x[i] = make([]uint32, p.D)
		for j := range x[i] {
			x[i][j] = uint32(j % 7) // far from uniform
		}
	}
	o := runRound(t, g, x, map[uint64]int{}, 17)
	must(t, o.err)
	if chi := chiSquareBytes(x[0]); chi < 330.5 {
		t.Fatalf("the raw input passes the uniformity test (chi² %.1f): the test has no power", chi)
	}
	for _, id := range p.IDs[:3] {
		if chi := chiSquareBytes(o.masked[id]); chi > 330.5 {
			t.Fatalf("client %d's masked vector: chi² %.1f over 255 dof, not uniform", id, chi)
		}
	}
}

func chiSquareBytes(v []uint32) float64 {
	var counts [256]float64
	for _, w := range v {
		counts[byte(w)]++
		counts[byte(w>>8)]++
		counts[byte(w>>16)]++
		counts[byte(w>>24)]++
	}
	e := float64(4*len(v)) / 256
	chi := 0.0
	for _, c := range counts {
		chi += (c - e) * (c - e) / e
	}
	return chi
}

// TestDeterministic: the same seeds give the same masked vectors and sum;
// another session gives other masks and the same sum.
func TestDeterministic(t *testing.T) {
	p := Params{Session: 6, IDs: testIDs(9), K: 4, T: 3, D: 64, GraphSeed: 8}
	g, _ := NewGraph(p)
	x := testInputs(9, p.D, 7)
	a := runRound(t, g, x, map[uint64]int{}, 3)
	b := runRound(t, g, x, map[uint64]int{}, 3)
	must(t, a.err)
	must(t, b.err)
	for id, y := range a.masked {
		if !slices.Equal(y, b.masked[id]) {
			t.Fatalf("client %d: masked vectors differ between identical runs", id)
		}
	}
	p.Session = 7
	g2, _ := NewGraph(p)
	c := runRound(t, g2, x, map[uint64]int{}, 3)
	must(t, c.err)
	if slices.Equal(a.masked[p.IDs[0]], c.masked[p.IDs[0]]) {
		t.Fatal("another session gave the same masks")
	}
	if !slices.Equal(a.sum, c.sum) {
		t.Fatal("sums differ")
	}
}

// TestTamperedShares: a sealed share altered in transit, sent to another
// client, or replayed into another session does not open.
func TestTamperedShares(t *testing.T) {
	p := Params{Session: 8, IDs: testIDs(6), K: 4, T: 3, D: 4, GraphSeed: 9}
	for _, tc := range []struct {
		name   string
		tamper func(b *ShareBundle)
	}{
		{"bit flip", func(b *ShareBundle) { b.Shares[0].Sealed[5] ^= 1 }},
		{"wrong sender", func(b *ShareBundle) { b.Shares[0].From, b.Shares[1].From = b.Shares[1].From, b.Shares[0].From }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g, _ := NewGraph(p)
			srv := NewServer(g)
			cl := map[uint64]*Client{}
			for _, id := range p.IDs {
				cl[id], _ = NewClient(g, id, clientRand(5, id))
				a, _ := cl[id].Advertise()
				must(t, srv.AddAdvert(id, a))
			}
			must(t, srv.EndAdvertise())
			for _, id := range p.IDs {
				m, err := cl[id].ShareKeys(srv.AdvertsFor(id))
				must(t, err)
				must(t, srv.AddShares(id, m))
			}
			must(t, srv.EndShareKeys())
			id := p.IDs[0]
			b := srv.SharesFor(id)
			tc.tamper(&b)
			if _, err := cl[id].MaskInput(make([]uint32, p.D), b); !errors.Is(err, ErrDecrypt) {
				t.Fatalf("MaskInput: %v, want ErrDecrypt", err)
			}
		})
	}
	// Replay: shares sealed in session 8 given to the same client (same
	// keys, complete graph) in session 9.
	bundleFor := func(session uint64) (*Client, ShareBundle) {
		q := p
		q.Session, q.K = session, len(p.IDs)-1
		g, _ := NewGraph(q)
		srv := NewServer(g)
		cl := map[uint64]*Client{}
		for _, id := range q.IDs {
			cl[id], _ = NewClient(g, id, clientRand(5, id))
			a, _ := cl[id].Advertise()
			must(t, srv.AddAdvert(id, a))
		}
		must(t, srv.EndAdvertise())
		for _, id := range q.IDs {
			m, err := cl[id].ShareKeys(srv.AdvertsFor(id))
			must(t, err)
			must(t, srv.AddShares(id, m))
		}
		must(t, srv.EndShareKeys())
		return cl[q.IDs[0]], srv.SharesFor(q.IDs[0])
	}
	_, old := bundleFor(8)
	c9, _ := bundleFor(9)
	if _, err := c9.MaskInput(make([]uint32, p.D), old); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("replayed session: %v, want ErrDecrypt", err)
	}
}

// TestStepOrder: steps out of order or repeated are refused.
func TestStepOrder(t *testing.T) {
	p := Params{Session: 1, IDs: testIDs(5), K: 4, T: 3, D: 4}
	g, _ := NewGraph(p)
	c, _ := NewClient(g, p.IDs[0], clientRand(1, 1))
	if _, err := c.MaskInput(make([]uint32, 4), ShareBundle{}); !errors.Is(err, ErrStep) {
		t.Fatalf("MaskInput first: %v", err)
	}
	c, _ = NewClient(g, p.IDs[0], clientRand(1, 1))
	if _, err := c.Advertise(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Advertise(); !errors.Is(err, ErrStep) {
		t.Fatalf("second Advertise: %v", err)
	}
	srv := NewServer(g)
	if _, err := srv.Sum(); !errors.Is(err, ErrStep) {
		t.Fatalf("Sum first: %v", err)
	}
	if _, err := NewClient(g, 999, clientRand(1, 1)); !errors.Is(err, ErrUnknownClient) {
		t.Fatalf("NewClient(stranger): %v", err)
	}
}

// TestServerRefusesStrangers: messages from clients outside the step's set
// or naming non-neighbours are refused and change nothing.
func TestServerRefusesStrangers(t *testing.T) {
	p := Params{Session: 1, IDs: testIDs(8), K: 4, T: 3, D: 4, GraphSeed: 2}
	g, _ := NewGraph(p)
	srv := NewServer(g)
	cl := map[uint64]*Client{}
	for _, id := range p.IDs {
		cl[id], _ = NewClient(g, id, clientRand(3, id))
		a, _ := cl[id].Advertise()
		must(t, srv.AddAdvert(id, a))
	}
	a, _ := NewClient(g, p.IDs[0], clientRand(4, 0))
	adv, _ := a.Advertise()
	if err := srv.AddAdvert(p.IDs[0], adv); !errors.Is(err, ErrDuplicate) {
		t.Fatalf("second advert: %v", err)
	}
	if err := srv.AddAdvert(p.IDs[1], adv); !errors.Is(err, ErrUnknownClient) {
		t.Fatalf("advert for another: %v", err)
	}
	must(t, srv.EndAdvertise())
	m, err := cl[p.IDs[0]].ShareKeys(srv.AdvertsFor(p.IDs[0]))
	must(t, err)
	if err := srv.AddShares(p.IDs[1], m); !errors.Is(err, ErrUnknownClient) {
		t.Fatalf("shares sent by another: %v", err)
	}
	short := ShareBundle{Shares: m.Shares[1:]}
	if err := srv.AddShares(p.IDs[0], short); !errors.Is(err, ErrUnknownClient) {
		t.Fatalf("bundle missing a neighbour: %v", err)
	}
	must(t, srv.AddShares(p.IDs[0], m))
	// A key list holding a non-neighbour is refused by the client.
	var stranger uint64
	for _, id := range p.IDs[1:] {
		if !slices.Contains(g.Neighbours(p.IDs[1]), id) && id != p.IDs[1] {
			stranger = id
		}
	}
	l := srv.AdvertsFor(p.IDs[1])
	l.Adverts = append(l.Adverts, srv.adverts[stranger])
	if _, err := cl[p.IDs[1]].ShareKeys(l); !errors.Is(err, ErrUnknownClient) {
		t.Fatalf("key list with a stranger: %v", err)
	}
}

// TestKeyReuseRefused: a key list in which two neighbours share a key
// (a server trying to make two pairs agree one mask) is refused by the
// client, and an advert reusing a key by the server.
func TestKeyReuseRefused(t *testing.T) {
	p := Params{Session: 1, IDs: testIDs(7), K: 4, T: 3, D: 4, GraphSeed: 2}
	g, _ := NewGraph(p)
	srv := NewServer(g)
	cl := map[uint64]*Client{}
	for _, id := range p.IDs {
		cl[id], _ = NewClient(g, id, clientRand(3, id))
		a, _ := cl[id].Advertise()
		must(t, srv.AddAdvert(id, a))
	}
	must(t, srv.EndAdvertise())
	l := srv.AdvertsFor(p.IDs[0])
	l.Adverts[1].SPK = l.Adverts[0].SPK
	if _, err := cl[p.IDs[0]].ShareKeys(l); !errors.Is(err, ErrBadKey) {
		t.Fatalf("reused key: %v", err)
	}
	// The server refuses a client that copies another's key.
	srv2 := NewServer(g)
	a0, a1 := srv.adverts[p.IDs[0]], srv.adverts[p.IDs[1]]
	must(t, srv2.AddAdvert(p.IDs[0], a0))
	a1.SPK = a0.CPK
	if err := srv2.AddAdvert(p.IDs[1], a1); !errors.Is(err, ErrBadKey) {
		t.Fatalf("copied key: %v", err)
	}
	a1 = srv.adverts[p.IDs[1]]
	a1.SPK = a1.CPK
	if err := srv2.AddAdvert(p.IDs[1], a1); !errors.Is(err, ErrBadKey) {
		t.Fatalf("one key twice: %v", err)
	}
	must(t, srv2.AddAdvert(p.IDs[1], srv.adverts[p.IDs[1]]))
}

func TestParamsValidate(t *testing.T) {
	ok := Params{IDs: testIDs(10), K: 4, T: 3, D: 1}
	must(t, ok.Validate())
	for _, tc := range []struct {
		name string
		edit func(*Params)
	}{
		{"few clients", func(p *Params) { p.IDs = p.IDs[:2] }},
		{"odd k", func(p *Params) { p.K = 5 }},
		{"k too big", func(p *Params) { p.K = 10 }},
		{"t minority", func(p *Params) { p.T = 2 }},
		{"t above k", func(p *Params) { p.T = 5 }},
		{"d zero", func(p *Params) { p.D = 0 }},
		{"d huge", func(p *Params) { p.D = MaxDim + 1 }},
		{"unsorted", func(p *Params) { p.IDs = slices.Clone(p.IDs); p.IDs[3] = p.IDs[2] }},
	} {
		p := ok
		tc.edit(&p)
		if err := p.Validate(); !errors.Is(err, ErrParams) {
			t.Errorf("%s: %v, want ErrParams", tc.name, err)
		}
	}
	full := Params{IDs: testIDs(10), K: 9, T: 5, D: 1} // complete graph, odd k
	must(t, full.Validate())
}

// TestGraph: symmetric, k-regular, deterministic, connected, seeded.
func TestGraph(t *testing.T) {
	for _, tc := range []struct{ n, k int }{{10, 4}, {100, 62}, {101, 100}, {7, 6}, {1000, 20}} {
		t.Run(fmt.Sprintf("n%d-k%d", tc.n, tc.k), func(t *testing.T) {
			p := Params{IDs: testIDs(tc.n), K: tc.k, T: tc.k/2 + 1, D: 1, GraphSeed: 1}
			g, err := NewGraph(p)
			must(t, err)
			seen := map[int]bool{0: true}
			queue := []int{0}
			for len(queue) > 0 {
				u := queue[0]
				queue = queue[1:]
				for _, v := range g.nbrs[u] {
					if !seen[int(v)] {
						seen[int(v)] = true
						queue = append(queue, int(v))
					}
				}
			}
			if len(seen) != tc.n {
				t.Fatalf("graph not connected: %d of %d reached", len(seen), tc.n)
			}
			for u := range tc.n {
				if len(g.nbrs[u]) != tc.k {
					t.Fatalf("client %d has %d neighbours", u, len(g.nbrs[u]))
				}
				for _, v := range g.nbrs[u] {
					if int(v) == u || !g.adjacent(int(v), u) {
						t.Fatalf("edge %d-%d not symmetric or a loop", u, v)
					}
				}
			}
			g2, _ := NewGraph(p)
			p.GraphSeed = 2
			g3, _ := NewGraph(p)
			same := true
			for u := range tc.n {
				if !slices.Equal(g.nbrs[u], g2.nbrs[u]) {
					t.Fatal("same params, different graphs")
				}
				same = same && slices.Equal(g.nbrs[u], g3.nbrs[u])
			}
			if same && tc.k < tc.n-1 {
				t.Fatal("another seed gave the same sparse graph")
			}
		})
	}
}
