package remote

import (
	"errors"
	"runtime"
	"slices"
	"testing"

	"github.com/fedzip/fedzip/secagg"
	"github.com/fedzip/fedzip/transport/fedzippb"
)

// announcedTask is a valid advertise-step task with an announced support
// of a model of n parameters: blocks of 4, 4 blocks of which 1 random, as
// a coordinator's FSM announces it before anything is observed.
func announcedTask(n int) (*fedzippb.SecAggStepResponse, []int32) {
	const seed, session = 77, 1234
	idx, top, _ := secagg.NewImportance(n).Announce(seed, 4, 4, 1)
	return &fedzippb.SecAggStepResponse{Session: session, Dim: uint32(len(idx)), SupportSeed: seed,
		Announced: secagg.AppendAnnounced(nil, top, secagg.NumBlocks(n, 4)), AnnounceBlock: 4, AnnounceBlocks: 4, AnnounceExplore: 1}, idx
}

// TestSecAggAnnouncementRefused: a client rebuilds the coordinator's
// support from a genuine announcement and binds its session to it; a
// coordinator that sends a forged one (beyond the bound of the round's
// blocks, with counts beyond the model, another number of blocks, a dim
// that disagrees, garbage) is refused with ErrTaskRefused before the
// client takes part, and an oversized one is refused before it is
// decoded: without allocating for it.
func TestSecAggAnnouncementRefused(t *testing.T) {
	const n = testParams * 4
	good, want := announcedTask(n)
	idx, session, err := taskSupport(good, n)
	if err != nil || !slices.Equal(idx, want) || session != secagg.BindSupport(good.GetSession(), want) {
		t.Fatalf("a genuine announcement: support %v (want %v), session %d, %v", idx, want, session, err)
	}
	nb := secagg.NumBlocks(n, 4)
	huge := make([]byte, 1<<20)
	huge[0], huge[1] = 1, 3 // a bitmap of three blocks, then a megabyte
	for _, tc := range []struct {
		name string
		edit func(*fedzippb.SecAggStepResponse)
	}{
		{"beyond the bound", func(r *fedzippb.SecAggStepResponse) { r.Announced = huge }},
		{"one byte beyond the bound", func(r *fedzippb.SecAggStepResponse) {
			r.Announced = append(slices.Clone(r.Announced), make([]byte, secagg.MaxAnnouncedLen(nb)-len(r.Announced)+1)...)
		}},
		{"a block size beyond the model", func(r *fedzippb.SecAggStepResponse) { r.AnnounceBlock = 1 << 31 }},
		{"more blocks than the model has", func(r *fedzippb.SecAggStepResponse) { r.AnnounceBlocks = uint32(nb + 1) }},
		{"more random blocks than blocks", func(r *fedzippb.SecAggStepResponse) { r.AnnounceExplore = 5 }},
		{"one announced block short", func(r *fedzippb.SecAggStepResponse) { r.AnnounceBlocks = 5 }},
		{"a dim that disagrees", func(r *fedzippb.SecAggStepResponse) { r.Dim++ }},
		{"garbage", func(r *fedzippb.SecAggStepResponse) { r.Announced = []byte{7, 1, 2} }},
		{"empty", func(r *fedzippb.SecAggStepResponse) { r.Announced = nil }},
	} {
		res, _ := announcedTask(n)
		tc.edit(res)
		if _, _, err := taskSupport(res, n); !errors.Is(err, ErrTaskRefused) {
			t.Errorf("%s: %v, want ErrTaskRefused", tc.name, err)
		}
	}
	res, _ := announcedTask(n)
	res.Announced = huge
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range 10 {
		taskSupport(res, n)
	}
	runtime.ReadMemStats(&after)
	if b := (after.TotalAlloc - before.TotalAlloc) / 10; b > 4<<10 {
		t.Errorf("refusing a %d-byte announcement allocated %d bytes", len(huge), b)
	}
}

// FuzzTaskSupport: whatever announcement and shape a coordinator sends,
// taskSupport returns an error or a support of dim ascending coordinates
// of the model, with the session bound to an announced one; it never
// panics.
func FuzzTaskSupport(f *testing.F) {
	const n = 61
	good, _ := announcedTask(n)
	f.Add(good.GetAnnounced(), uint32(4), uint32(4), uint32(1), good.GetDim())
	f.Add([]byte{1, 2, 0xff, 0xff}, uint32(1), uint32(3), uint32(0), uint32(3))
	f.Add([]byte{0, 200, 1, 9, 9}, uint32(16), uint32(2), uint32(2), uint32(32))
	f.Fuzz(func(t *testing.T, msg []byte, block, blocks, explore, dim uint32) {
		res := &fedzippb.SecAggStepResponse{Session: 5, SupportSeed: 9, Dim: dim, Announced: msg,
			AnnounceBlock: block, AnnounceBlocks: blocks, AnnounceExplore: explore}
		idx, session, err := taskSupport(res, n)
		if err != nil {
			if !errors.Is(err, ErrTaskRefused) {
				t.Fatalf("refused without ErrTaskRefused: %v", err)
			}
			return
		}
		want := uint64(5) // a random support keeps the task's session
		if block != 0 {
			want = secagg.BindSupport(5, idx)
		}
		if len(idx) != int(dim) || !slices.IsSorted(idx) || session != want {
			t.Fatalf("support %v of dim %d, session %d", idx, dim, session)
		}
		for i, j := range idx {
			if j < 0 || j >= n || (i > 0 && idx[i-1] == j) {
				t.Fatalf("support %v", idx)
			}
		}
	})
}
