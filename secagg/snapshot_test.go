package secagg

import (
	"bytes"
	"errors"
	"slices"
	"testing"
)

// TestServerSnapshot: after every message of every step, the server's
// state is encoded and restored, and the round goes on with the restored
// server, as a new Raft leader would after a snapshot. Each restored
// server encodes to the same bytes as the one it came from, and the round
// ends with the exact sum.
func TestServerSnapshot(t *testing.T) {
	p := Params{Session: 21, IDs: testIDs(12), K: 6, T: 4, D: 30, GraphSeed: 6}
	g, _ := NewGraph(p)
	x := testInputs(12, p.D, 8)
	srv := NewServer(g)
	hop := func() {
		t.Helper()
		b, err := srv.MarshalBinary()
		must(t, err)
		r, err := RestoreServer(g, b)
		must(t, err)
		again, err := r.MarshalBinary()
		must(t, err)
		if !bytes.Equal(b, again) {
			t.Fatalf("restored server at step %d encodes differently", srv.step)
		}
		srv = r
	}
	cl := map[uint64]*Client{}
	hop()
	for _, id := range p.IDs[1:] { // the first never advertises
		cl[id], _ = NewClient(g, id, clientRand(4, id))
		a, _ := cl[id].Advertise()
		must(t, srv.AddAdvert(id, a))
		hop()
	}
	must(t, srv.EndAdvertise())
	hop()
	for _, id := range p.IDs[1:] {
		m, err := cl[id].ShareKeys(srv.AdvertsFor(id))
		must(t, err)
		must(t, srv.AddShares(id, m))
		hop()
	}
	must(t, srv.EndShareKeys())
	hop()
	var survivors []uint64
	for i, id := range p.IDs[1:] {
		if i == 3 {
			continue // drops before its masked input
		}
		m, err := cl[id].MaskInput(x[i+1], srv.SharesFor(id))
		must(t, err)
		must(t, srv.AddMasked(id, m))
		survivors = append(survivors, id)
		hop()
	}
	must(t, srv.EndMaskedInput())
	hop()
	for _, id := range survivors[1:] { // the first survivor never answers
		m, err := cl[id].Unmask(srv.UnmaskRequestFor(id))
		must(t, err)
		must(t, srv.AddUnmask(id, m))
		hop()
	}
	if _, err := srv.Reconstruct(survivors[0], SelfMaskShare); err != nil {
		t.Fatal(err)
	}
	hop()
	sum, err := srv.Sum()
	must(t, err)
	if !slices.Equal(sum, plainSum(p, x, survivors)) {
		t.Fatal("wrong sum after restores")
	}
	hop()
	if _, err := srv.Sum(); !errors.Is(err, ErrStep) {
		t.Fatalf("Sum after done: %v", err)
	}
}

// TestServerSnapshotRefusesCorrupt: truncated or altered snapshots are
// refused with the sentinels.
func TestServerSnapshotRefusesCorrupt(t *testing.T) {
	p := Params{Session: 22, IDs: testIDs(8), K: 4, T: 3, D: 5, GraphSeed: 1}
	g, _ := NewGraph(p)
	r := record(t, g, p.D, nil, true)
	b, err := r.srv.MarshalBinary()
	must(t, err)
	for cut := 0; cut < len(b); cut += 7 {
		if _, err := RestoreServer(g, b[:cut]); !errors.Is(err, ErrTruncated) && !errors.Is(err, ErrCorrupt) {
			t.Fatalf("cut at %d: %v", cut, err)
		}
	}
	bad := slices.Clone(b)
	bad[2] = 9 // step
	if _, err := RestoreServer(g, bad); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("bad step: %v", err)
	}
	other, _ := NewGraph(Params{Session: 22, IDs: testIDs(8), K: 4, T: 3, D: 6, GraphSeed: 1})
	if _, err := RestoreServer(other, b); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("state of another dimension: %v", err)
	}
}

// FuzzRestoreServer: arbitrary bytes never panic RestoreServer, and a state
// it accepts re-encodes to the same bytes.
func FuzzRestoreServer(f *testing.F) {
	p := Params{Session: 23, IDs: []uint64{1, 2, 3, 4, 5, 6}, K: 4, T: 3, D: 3, GraphSeed: 1}
	g, err := NewGraph(p)
	if err != nil {
		f.Fatal(err)
	}
	srv := NewServer(g)
	add := func() {
		b, _ := srv.MarshalBinary()
		f.Add(b)
	}
	add()
	cl := map[uint64]*Client{}
	for _, id := range p.IDs {
		cl[id], _ = NewClient(g, id, clientRand(1, id))
		a, _ := cl[id].Advertise()
		_ = srv.AddAdvert(id, a)
	}
	_ = srv.EndAdvertise()
	add()
	for _, id := range p.IDs {
		m, _ := cl[id].ShareKeys(srv.AdvertsFor(id))
		_ = srv.AddShares(id, m)
	}
	_ = srv.EndShareKeys()
	add()
	for _, id := range p.IDs[1:] {
		m, _ := cl[id].MaskInput(make([]uint32, p.D), srv.SharesFor(id))
		_ = srv.AddMasked(id, m)
	}
	_ = srv.EndMaskedInput()
	add()
	for _, id := range p.IDs[1:] {
		m, _ := cl[id].Unmask(srv.UnmaskRequestFor(id))
		_ = srv.AddUnmask(id, m)
	}
	add()
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := RestoreServer(g, b)
		if err != nil {
			if !errors.Is(err, ErrTruncated) && !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v wraps no sentinel", err)
			}
			return
		}
		again, err := s.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(again, b) {
			t.Fatal("accepted state re-encodes differently")
		}
		_, _ = s.Sum() // must not panic
	})
}

// TestSnapshotHoldsNoInput: the server's snapshot, at every step, contains
// no client's input, nor the unmasked sum. (It holds the running sum of the
// masked vectors, which equals the first one until a second arrives: the
// server received that vector anyway, and it is uniform.)
func TestSnapshotHoldsNoInput(t *testing.T) {
	p := Params{Session: 24, IDs: testIDs(8), K: 4, T: 3, D: 64, GraphSeed: 2}
	g, _ := NewGraph(p)
	x := testInputs(8, p.D, 9)
	srv := NewServer(g)
	var snaps [][]byte
	snap := func() {
		b, err := srv.MarshalBinary()
		must(t, err)
		snaps = append(snaps, b)
	}
	cl := map[uint64]*Client{}
	for _, id := range p.IDs {
		cl[id], _ = NewClient(g, id, clientRand(7, id))
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
	var secrets [][]byte
	for i, id := range p.IDs {
		m, err := cl[id].MaskInput(x[i], srv.SharesFor(id))
		must(t, err)
		must(t, srv.AddMasked(id, m))
		secrets = append(secrets, u32bytes(x[i][:8]))
		snap()
	}
	must(t, srv.EndMaskedInput())
	for _, id := range p.IDs {
		m, err := cl[id].Unmask(srv.UnmaskRequestFor(id))
		must(t, err)
		must(t, srv.AddUnmask(id, m))
		snap()
	}
	sum, err := srv.Sum()
	must(t, err)
	secrets = append(secrets, u32bytes(sum[:8]))
	snap()
	for _, s := range snaps {
		for _, v := range secrets {
			if bytes.Contains(s, v) {
				t.Fatal("a snapshot holds a client's input or the unmasked sum")
			}
		}
	}
}

func u32bytes(v []uint32) []byte {
	var b []byte
	for _, w := range v {
		b = append(b, byte(w), byte(w>>8), byte(w>>16), byte(w>>24))
	}
	return b
}
