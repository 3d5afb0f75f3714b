package secagg

import (
	"bytes"
	"crypto/rand"
	"errors"
	"testing"
)

// TestPeerReplays: a Peer asked for a step again answers the same bytes,
// where its Client would refuse a second step (ErrStep), and a Peer's
// answers make a round that sums exactly.
func TestPeerReplays(t *testing.T) {
	ids := []uint64{3, 5, 8, 13}
	g, err := NewGraph(Params{Session: 7, IDs: ids, K: 3, T: 2, D: 6, GraphSeed: 1})
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer(g)
	peers := make([]*Peer, len(ids))
	xs := make([][]uint32, len(ids))
	want := make([]uint32, 6)
	for i, id := range ids {
		c, err := NewClient(g, id, rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		peers[i] = NewPeer(c, nil)
		xs[i] = []uint32{uint32(i), 1, 2, 3, 4, uint32(10 * i)}
		for j, v := range xs[i] {
			want[j] += v
		}
	}
	ask := func(i, step int, in []byte) []byte {
		t.Helper()
		a, err := peers[i].Answer(step, in, xs[i])
		if err != nil {
			t.Fatal(err)
		}
		again, err := peers[i].Answer(step, in, xs[i])
		if err != nil || !bytes.Equal(a, again) {
			t.Fatalf("step %d asked again: %v, same bytes %v", step, err, bytes.Equal(a, again))
		}
		return a
	}
	for i, id := range ids {
		var a KeyAdvert
		if err := a.UnmarshalBinary(ask(i, 0, nil)); err != nil || srv.AddAdvert(id, a) != nil {
			t.Fatal(err)
		}
	}
	if _, err := peers[0].c.Advertise(); !errors.Is(err, ErrStep) {
		t.Fatalf("the client advertised twice: %v", err)
	}
	if err := srv.EndAdvertise(); err != nil {
		t.Fatal(err)
	}
	for i, id := range ids {
		l := srv.AdvertsFor(id)
		in, _ := l.MarshalBinary()
		var b ShareBundle
		if err := b.UnmarshalBinary(ask(i, 1, in)); err != nil || srv.AddShares(id, b) != nil {
			t.Fatal(err)
		}
	}
	if err := srv.EndShareKeys(); err != nil {
		t.Fatal(err)
	}
	for i, id := range ids {
		sb := srv.SharesFor(id)
		in, _ := sb.MarshalBinary()
		var m MaskedInput
		if err := m.UnmarshalBinary(ask(i, 2, in)); err != nil || srv.AddMasked(id, m) != nil {
			t.Fatal(err)
		}
	}
	if err := srv.EndMaskedInput(); err != nil {
		t.Fatal(err)
	}
	for i, id := range ids {
		q := srv.UnmaskRequestFor(id)
		in, _ := q.MarshalBinary()
		var u UnmaskResponse
		if err := u.UnmarshalBinary(ask(i, 3, in)); err != nil || srv.AddUnmask(id, u) != nil {
			t.Fatal(err)
		}
	}
	sum, err := srv.Sum()
	if err != nil {
		t.Fatal(err)
	}
	for j := range want {
		if sum[j] != want[j] {
			t.Fatalf("sum %v, want %v", sum, want)
		}
	}
	if _, err := peers[0].Answer(4, nil, nil); !errors.Is(err, ErrStep) {
		t.Fatalf("step 4: %v", err)
	}
}
