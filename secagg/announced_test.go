package secagg

import (
	"errors"
	"math/rand/v2"
	"slices"
	"testing"
)

// publish returns a round's published mean on idx: large on the
// coordinates below hot, small elsewhere.
func publish(idx []int32, hot int32, rng *rand.Rand) []float32 {
	mean := make([]float32, len(idx))
	for i, j := range idx {
		mean[i] = float32(rng.NormFloat64()) * 0.001
		if j < hot {
			mean[i] += 1
		}
	}
	return mean
}

// TestAnnounceDeterministic: two servers that observe the same published
// rounds announce the same supports, bit for bit; a replica that replays
// them later, from the published (support, mean) pairs only, does too.
func TestAnnounceDeterministic(t *testing.T) {
	const d, k, e = 5000, 100, 25
	a, b := NewImportance(d), NewImportance(d)
	var log [][2]any
	rng := rand.New(rand.NewPCG(1, 2))
	for r := 1; r <= 30; r++ {
		ia, ta, ea := a.Announce(uint64(r)*77, 1, k, e)
		ib, tb, eb := b.Announce(uint64(r)*77, 1, k, e)
		if !slices.Equal(ia, ib) || !slices.Equal(ea, eb) || !slices.Equal(ta, tb) {
			t.Fatalf("round %d: two servers announce different supports", r)
		}
		if !slices.IsSorted(ia) || len(slices.Compact(slices.Clone(ia))) != k {
			t.Fatalf("round %d: support not ascending and distinct", r)
		}
		for _, j := range ea {
			if _, ok := slices.BinarySearch(ia, j); !ok {
				t.Fatalf("round %d: random coordinate %d not on the support", r, j)
			}
		}
		mean := publish(ia, 300, rng)
		a.Observe(r, ia, mean)
		b.Observe(r, ib, mean)
		log = append(log, [2]any{ia, mean})
	}
	c := NewImportance(d)
	for r, l := range log {
		c.Observe(r+1, l[0].([]int32), l[1].([]float32))
	}
	ic, _, _ := c.Announce(9, 1, k, e)
	ia, _, _ := a.Announce(9, 1, k, e)
	if !slices.Equal(ic, ia) {
		t.Fatal("a replay of the published rounds announces another support")
	}
}

// TestAnnounceFollowsAggregate: when the published means are large on a
// set of coordinates, the announced support covers that set once it has
// been seen, keeps its random part from the round seed, and still visits
// every coordinate within a bounded number of rounds (the random part).
func TestAnnounceFollowsAggregate(t *testing.T) {
	const d, k, e, hot = 2000, 100, 20, 60
	im := NewImportance(d)
	rng := rand.New(rand.NewPCG(3, 4))
	seen := make([]bool, d)
	var lastAll int
	for r := 1; r <= 400; r++ {
		idx, _, exp := im.Announce(uint64(r), 1, k, e)
		want := make([]int32, e)
		Support(want, d, uint64(r))
		if !slices.Equal(exp, want) {
			t.Fatalf("round %d: random part is not Support from the round seed", r)
		}
		for _, j := range idx {
			seen[j] = true
		}
		if !slices.Contains(seen, false) && lastAll == 0 {
			lastAll = r
		}
		if r > 60 {
			covered := 0
			for _, j := range idx {
				if j < hot {
					covered++
				}
			}
			// The hot coordinates fill at 1 per round, the rest at ~0:
			// after their first visit they are back at least every
			// other round.
			if covered < hot/2 {
				t.Fatalf("round %d: %d of the %d hot coordinates on the support", r, covered, hot)
			}
		}
		im.Observe(r, idx, publish(idx, hot, rng))
	}
	if lastAll == 0 {
		t.Fatal("some coordinate was never on the support in 400 rounds")
	}
	t.Logf("every coordinate visited by round %d", lastAll)
}

// TestAnnouncedRoundTrip encodes supports of several densities and reads
// them back; the encoding is the smaller of a bitmap and Rice gaps.
func TestAnnouncedRoundTrip(t *testing.T) {
	const d = 10000
	for _, k := range []int{0, 1, 10, 100, 1000, 5000, d} {
		idx := make([]int32, k)
		Support(idx, d, uint64(k))
		msg := AppendAnnounced(nil, idx, d)
		got, err := ReadAnnounced(nil, msg, d, k)
		if err != nil {
			t.Fatalf("k = %d: %v", k, err)
		}
		if !slices.Equal(got, idx) {
			t.Fatalf("k = %d: read back another support", k)
		}
		if len(msg) > 2+3+(d+7)/8 {
			t.Fatalf("k = %d: %d bytes, more than a bitmap", k, len(msg))
		}
		if k > 0 {
			if _, err := ReadAnnounced(nil, msg, d, k-1); !errors.Is(err, ErrSupport) {
				t.Fatalf("k = %d: a support above the round's size accepted: %v", k, err)
			}
		}
		if _, err := ReadAnnounced(nil, append(msg, 0), d, k); !errors.Is(err, ErrSupport) {
			t.Fatalf("k = %d: trailing byte accepted: %v", k, err)
		}
	}
}

// TestMergeSupport: the union of the announced and the random part is the
// support; a coordinate in both is refused.
func TestMergeSupport(t *testing.T) {
	all := []int32{1, 4, 5, 9, 12}
	rnd := []int32{4, 12}
	top := RemoveSupport(nil, all, rnd)
	if !slices.Equal(top, []int32{1, 5, 9}) {
		t.Fatalf("RemoveSupport = %v", top)
	}
	got, err := MergeSupport(nil, top, rnd)
	if err != nil || !slices.Equal(got, all) {
		t.Fatalf("MergeSupport = %v, %v", got, err)
	}
	if _, err := MergeSupport(nil, []int32{1, 4}, rnd); !errors.Is(err, ErrSupport) {
		t.Fatalf("overlap: %v", err)
	}
}

// TestBindSupportSeparates: a client announced another support than the
// others derives other masks, so the server's sum of the round does not
// unmask to the inputs' sum (a server cannot single a client out by
// announcing it its own support).
func TestBindSupportSeparates(t *testing.T) {
	s1 := []int32{1, 2, 3}
	s2 := []int32{1, 2, 4}
	if BindSupport(7, s1) == BindSupport(7, s2) || BindSupport(7, s1) == BindSupport(8, s1) {
		t.Fatal("BindSupport ignores the support or the session")
	}
	ids := []uint64{1, 2, 3, 4}
	in := [][]uint32{{1, 2, 3}, {4, 5, 6}, {7, 8, 9}, {10, 11, 12}}
	sum := func(split bool) []uint32 {
		p := Params{IDs: ids, K: 3, T: 2, D: 3, GraphSeed: 1}
		g, err := NewGraph(withSession(p, BindSupport(5, s1)))
		if err != nil {
			t.Fatal(err)
		}
		// Client 4 was told s2: its graph's session differs.
		g4, err := NewGraph(withSession(p, BindSupport(5, s2)))
		if err != nil {
			t.Fatal(err)
		}
		srv := NewServer(g)
		cls := make([]*Client, len(ids))
		for i, id := range ids {
			gg := g
			if split && id == 4 {
				gg = g4
			}
			if cls[i], err = NewClient(gg, id, rand.NewChaCha8([32]byte{byte(id)})); err != nil {
				t.Fatal(err)
			}
		}
		for _, c := range cls {
			a, err := c.Advertise()
			if err != nil {
				t.Fatal(err)
			}
			if err := srv.AddAdvert(c.ID(), a); err != nil {
				t.Fatal(err)
			}
		}
		if err := srv.EndAdvertise(); err != nil {
			t.Fatal(err)
		}
		for _, c := range cls {
			b, err := c.ShareKeys(srv.AdvertsFor(c.ID()))
			if err != nil {
				t.Fatal(err)
			}
			if err := srv.AddShares(c.ID(), b); err != nil {
				t.Fatal(err)
			}
		}
		if err := srv.EndShareKeys(); err != nil {
			t.Fatal(err)
		}
		for i, c := range cls {
			y, err := c.MaskInput(in[i], srv.SharesFor(c.ID()))
			if err != nil {
				// The shares sealed under another session do not open.
				return nil
			}
			if err := srv.AddMasked(c.ID(), y); err != nil {
				t.Fatal(err)
			}
		}
		if err := srv.EndMaskedInput(); err != nil {
			t.Fatal(err)
		}
		for _, c := range cls {
			u, err := c.Unmask(srv.UnmaskRequestFor(c.ID()))
			if err != nil {
				t.Fatal(err)
			}
			if err := srv.AddUnmask(c.ID(), u); err != nil {
				t.Fatal(err)
			}
		}
		s, err := srv.Sum()
		if err != nil {
			return nil
		}
		return s
	}
	want := []uint32{22, 26, 30}
	if got := sum(false); !slices.Equal(got, want) {
		t.Fatalf("one support: sum %v, want %v", got, want)
	}
	if got := sum(true); slices.Equal(got, want) {
		t.Fatal("a client announced another support still unmasks into the sum")
	}
}

func withSession(p Params, s uint64) Params {
	p.Session = s
	return p
}

// FuzzReadAnnounced decodes arbitrary bytes as an announced support: no
// panic, and an accepted support is ascending, in range, within the bound,
// and re-encodes to bytes that read back the same.
func FuzzReadAnnounced(f *testing.F) {
	for _, k := range []int{0, 3, 50, 900} {
		idx := make([]int32, k)
		Support(idx, 1000, uint64(k))
		f.Add(AppendAnnounced(nil, idx, 1000), 1000)
	}
	f.Add([]byte{1, 2, 0x81}, 9)
	f.Add([]byte{0, 0xff, 0xff, 0xff, 0xff, 0x0f}, 1<<20)
	f.Fuzz(func(t *testing.T, b []byte, d int) {
		if d < 0 || d > 1<<16 {
			d = 1000
		}
		got, err := ReadAnnounced(nil, b, d, 1000)
		if err != nil {
			if !errors.Is(err, ErrSupport) {
				t.Fatalf("error %v is not ErrSupport", err)
			}
			return
		}
		if len(got) > 1000 || len(got) > d {
			t.Fatalf("%d coordinates accepted", len(got))
		}
		for i, j := range got {
			if j < 0 || int(j) >= d || (i > 0 && got[i-1] >= j) {
				t.Fatalf("coordinate %d at %d: not ascending in [0, %d)", j, i, d)
			}
		}
		again, err := ReadAnnounced(nil, AppendAnnounced(nil, got, d), d, 1000)
		if err != nil || !slices.Equal(again, got) {
			t.Fatalf("re-encoded support reads back %v, %v", again, err)
		}
	})
}

// TestRebuildSupport: a client that is sent the announced blocks rebuilds
// the server's support, blocks of 7 with a short last block included; an
// announcement with a block too many or too few, or one that repeats a
// random block, is refused.
func TestRebuildSupport(t *testing.T) {
	const d, size, nb, ne = 1000, 7, 20, 5 // 143 blocks, the last of 6
	im := NewImportance(d)
	rng := rand.New(rand.NewPCG(5, 6))
	last := false
	for r := 1; r <= 40; r++ {
		idx, top, exp := im.Announce(uint64(r)^99, size, nb, ne)
		got, err := RebuildSupport(AppendAnnounced(nil, top, NumBlocks(d, size)), d, size, nb, ne, uint64(r)^99)
		if err != nil || !slices.Equal(got, idx) {
			t.Fatalf("round %d: rebuilt %v, %v; announced %v", r, got, err, idx)
		}
		last = last || slices.Contains(idx, d-1)
		extra := int32(0) // a block neither announced nor random
		for slices.Contains(top, extra) || slices.Contains(exp, extra) {
			extra++
		}
		for _, bad := range [][]int32{top[1:], append(slices.Clone(top), extra), append(slices.Clone(top[1:]), exp[0])} {
			slices.Sort(bad)
			if _, err := RebuildSupport(AppendAnnounced(nil, bad, NumBlocks(d, size)), d, size, nb, ne, uint64(r)^99); !errors.Is(err, ErrSupport) {
				t.Fatalf("round %d: bad announcement %v accepted: %v", r, bad, err)
			}
		}
		im.Observe(r, idx, publish(idx, 100, rng))
	}
	if !last {
		t.Fatal("the short last block was never on the support")
	}
}

// FuzzRebuildSupport feeds arbitrary announcements and sizes to a client:
// no panic, and an accepted support is ascending, in range, and made of
// exactly nBlocks blocks.
func FuzzRebuildSupport(f *testing.F) {
	im := NewImportance(1000)
	_, top, _ := im.Announce(3, 7, 20, 5)
	f.Add(AppendAnnounced(nil, top, NumBlocks(1000, 7)), 1000, 7, 20, 5, uint64(3))
	f.Add([]byte{1, 0}, 0, 1, 0, 0, uint64(0))
	f.Fuzz(func(t *testing.T, msg []byte, d, size, nBlocks, nExplore int, seed uint64) {
		if d > 1<<14 {
			d %= 1 << 14
		}
		got, err := RebuildSupport(msg, d, size, nBlocks, nExplore, seed)
		if err != nil {
			if !errors.Is(err, ErrSupport) {
				t.Fatalf("error %v is not ErrSupport", err)
			}
			return
		}
		blocks := map[int32]bool{}
		for i, j := range got {
			if j < 0 || int(j) >= d || (i > 0 && got[i-1] >= j) {
				t.Fatalf("coordinate %d at %d: not ascending in [0, %d)", j, i, d)
			}
			blocks[j/int32(size)] = true
		}
		if len(blocks) != nBlocks {
			t.Fatalf("%d blocks, want %d", len(blocks), nBlocks)
		}
	})
}
