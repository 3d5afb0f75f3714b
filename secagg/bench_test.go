package secagg

import (
	"fmt"
	"runtime"
	"slices"
	"testing"
)

// Benchmarks: go test -run '^$' -bench 'ClientRound|ServerUnmask' -benchtime 10x ./secagg/
// and -bench 'PRG|Shamir' -benchtime 1000x
// (docs/secagg.md has the figures).

func BenchmarkPRG(b *testing.B) {
	for _, d := range []int{2000, 199210} {
		b.Run(fmt.Sprintf("d=%d", d), func(b *testing.B) {
			v := make([]uint32, d)
			seed := [32]byte{1}
			buf := prgScratch()
			b.SetBytes(int64(4 * d))
			b.ReportAllocs()
			runtime.GC() // the setup's garbage is not the loop's CPU
			cpu, ops := cpuTime(), 0
			for b.Loop() {
				ops++
				addPRG(v, &seed, false, buf)
			}
			if ns := float64(cpuTime()-cpu) / float64(ops); ns > 0 {
				b.ReportMetric(float64(4*d)/ns*1e3, "cpu-MB/s")
			}
		})
	}
}

// recorded holds every message of one round, to replay to a server.
type recorded struct {
	g       *Graph
	adverts []KeyAdvert
	bundles map[uint64]ShareBundle
	masked  []MaskedInput
	resp    []UnmaskResponse
	srv     *Server // the server after step 2, for the clients' requests
	clients map[uint64]*Client
}

// record runs a round up to and including the masked inputs, with the
// clients in dropped leaving before their masked input; if unmask is true it
// also collects the survivors' step-3 answers.
func record(tb testing.TB, g *Graph, d int, dropped map[uint64]bool, unmask bool) *recorded {
	p := g.Params()
	r := &recorded{g: g, bundles: map[uint64]ShareBundle{}, clients: map[uint64]*Client{}}
	srv := NewServer(g)
	for _, id := range p.IDs {
		c, err := NewClient(g, id, clientRand(1, id))
		if err != nil {
			tb.Fatal(err)
		}
		r.clients[id] = c
		a, _ := c.Advertise()
		r.adverts = append(r.adverts, a)
		if err := srv.AddAdvert(id, a); err != nil {
			tb.Fatal(err)
		}
	}
	if err := srv.EndAdvertise(); err != nil {
		tb.Fatal(err)
	}
	for _, id := range p.IDs {
		m, err := r.clients[id].ShareKeys(srv.AdvertsFor(id))
		if err != nil {
			tb.Fatal(err)
		}
		r.bundles[id] = m
		if err := srv.AddShares(id, m); err != nil {
			tb.Fatal(err)
		}
	}
	if err := srv.EndShareKeys(); err != nil {
		tb.Fatal(err)
	}
	x := make([]uint32, d)
	for i := range x {
		x[i] = uint32(i)
	}
	for _, id := range p.IDs {
		if dropped[id] {
			continue
		}
		m, err := r.clients[id].MaskInput(x, srv.SharesFor(id))
		if err != nil {
			tb.Fatal(err)
		}
		r.masked = append(r.masked, m)
		if err := srv.AddMasked(id, m); err != nil {
			tb.Fatal(err)
		}
	}
	if err := srv.EndMaskedInput(); err != nil {
		tb.Fatal(err)
	}
	r.srv = srv
	if unmask {
		for _, id := range srv.Survivors() {
			m, err := r.clients[id].Unmask(srv.UnmaskRequestFor(id))
			if err != nil {
				tb.Fatal(err)
			}
			r.resp = append(r.resp, m)
		}
	}
	return r
}

// replay runs the server's side of the recorded round and returns its sum.
func (r *recorded) replay(tb testing.TB) []uint32 {
	srv := NewServer(r.g)
	for _, a := range r.adverts {
		_ = srv.AddAdvert(a.ID, a)
	}
	_ = srv.EndAdvertise()
	for id, m := range r.bundles {
		_ = srv.AddShares(id, m)
	}
	_ = srv.EndShareKeys()
	for _, m := range r.masked {
		_ = srv.AddMasked(m.From, m)
	}
	_ = srv.EndMaskedInput()
	for _, m := range r.resp {
		if err := srv.AddUnmask(m.From, m); err != nil {
			tb.Fatal(err)
		}
	}
	sum, err := srv.Sum()
	if err != nil {
		tb.Fatal(err)
	}
	return sum
}

func dropEvery(ids []uint64, every int) map[uint64]bool {
	m := map[uint64]bool{}
	for i, id := range ids {
		if i%every == every-1 {
			m[id] = true
		}
	}
	return m
}

// BenchmarkClientRound is one client's CPU for the whole protocol (key
// generation, sharing, sealing and opening shares, masking, revealing) with
// k = 100 neighbours, 10% of which drop before their masked input. It
// reports the client's bytes for keys and shares both ways (the masked
// vector, 4d bytes, excluded).
func BenchmarkClientRound(b *testing.B) {
	const n = 101 // k = n-1 = 100: the complete graph; a client's cost depends on k and d only
	ids := testIDs(n)
	for _, d := range []int{2000, 199210} {
		b.Run(fmt.Sprintf("k=100/d=%d", d), func(b *testing.B) {
			p := Params{Session: 1, IDs: ids, K: n - 1, T: 51, D: d}
			g, err := NewGraph(p)
			if err != nil {
				b.Fatal(err)
			}
			me := ids[0]
			// The other clients' messages do not depend on d: record them
			// with d = 1.
			p1 := p
			p1.D = 1
			g1, _ := NewGraph(p1)
			r := record(b, g1, 1, dropEvery(ids, 10), false)
			list := r.srv.AdvertsFor(me)
			in := ShareBundle{}
			for _, id := range ids[1:] {
				for _, e := range r.bundles[id].Shares {
					if e.To == me {
						in.Shares = append(in.Shares, e)
					}
				}
			}
			req := r.srv.UnmaskRequestFor(me)
			x := make([]uint32, d)
			var up, down int
			b.ReportAllocs()
			runtime.GC() // the setup's garbage is not the loop's CPU
			cpu, ops := cpuTime(), 0
			for b.Loop() {
				ops++
				c, _ := NewClient(g, me, clientRand(1, me))
				a, _ := c.Advertise()
				m, err := c.ShareKeys(list)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := c.MaskInput(x, in); err != nil {
					b.Fatal(err)
				}
				u, err := c.Unmask(req)
				if err != nil {
					b.Fatal(err)
				}
				up = size(&a) + size(&m) + size(&u)
				down = size(&list) + size(&in) + size(&req)
			}
			b.ReportMetric(float64(cpuTime()-cpu)/1e6/float64(ops), "cpu-ms/op")
			b.ReportMetric(float64(up), "up-B")
			b.ReportMetric(float64(down), "down-B")
		})
	}
}

func size(m message) int {
	b, _ := m.MarshalBinary()
	return len(b)
}

// BenchmarkServerUnmask is the server's CPU for a whole round (taking every
// message, then Sum) with 10% of the clients dropping before their masked
// input, d = 2000: against k at n = 200, and against n at k = 40. The cost
// grows with k (the pair masks of the dropped clients' surviving
// neighbours, and Shamir in O(k²) per client) and linearly with n.
func BenchmarkServerUnmask(b *testing.B) {
	const d = 2000
	for _, c := range []struct{ n, k int }{{200, 20}, {200, 40}, {200, 80}, {200, 160}, {100, 40}, {400, 40}} {
		b.Run(fmt.Sprintf("n=%d/k=%d", c.n, c.k), func(b *testing.B) {
			p := Params{Session: 2, IDs: testIDs(c.n), K: c.k, T: c.k/2 + 1, D: d, GraphSeed: 3}
			g, err := NewGraph(p)
			if err != nil {
				b.Fatal(err)
			}
			r := record(b, g, d, dropEvery(p.IDs, 10), true)
			b.ReportAllocs()
			runtime.GC() // the setup's garbage is not the loop's CPU
			cpu, ops := cpuTime(), 0
			for b.Loop() {
				ops++
				r.replay(b)
			}
			b.ReportMetric(float64(cpuTime()-cpu)/1e6/float64(ops), "cpu-ms/op")
		})
	}
}

// BenchmarkShamir splits a 32-byte secret among k = 100 holders with
// t = 51 and combines it from all 100 shares (t to rebuild, the rest
// checked against the polynomial), as the server does per client.
func BenchmarkShamir(b *testing.B) {
	var secret [SecretLen]byte
	xs := make([]uint32, 100)
	for i := range xs {
		xs[i] = uint32(i + 1)
	}
	rnd := clientRand(1, 1)
	shares, _ := Split(&secret, xs, 51, rnd)
	b.Run("split/k=100/t=51", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_, _ = Split(&secret, xs, 51, rnd)
		}
	})
	b.Run("combine/k=100/t=51", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := Combine(shares, 51); err != nil {
				b.Fatal(err)
			}
		}
	})
	// The server's rebuild of a self-mask seed with its commitment
	// check: from 100 honest shares; from 100 shares whose (t+1)-th is
	// wrong, the worst place for it: every subset but the last holds it
	// (t+2 interpolations); and from 100 shares of which 24 are wrong.
	commit := commitSelfMask(1, 1, &secret)
	check := func(s *[SecretLen]byte) bool { return commitSelfMask(1, 1, s) == commit }
	bad := slices.Clone(shares)
	bad[51].Y[0] = addmod(bad[51].Y[0], 1)
	// 24 shares wrong in every chunk, the most Berlekamp–Welch corrects
	// among 100 with t = 51: the subsets fail, then one decode.
	worst := slices.Clone(shares)
	for i := range 24 {
		for c := range chunks {
			worst[2*i].Y[c] = addmod(worst[2*i].Y[c], uint64(1+i+c))
		}
	}
	for _, c := range []struct {
		name   string
		shares []Share
	}{{"checked/k=100/t=51", shares}, {"corrected/k=100/t=51", bad}, {"corrected-24/k=100/t=51", worst}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if s, err := combineChecked(c.shares, 51, check); err != nil || s != secret {
					b.Fatal(err)
				}
			}
		})
	}
}
