package remote

import (
	"errors"
	"math"
	"runtime"
	"slices"
	"testing"

	"github.com/fedzip/fedzip/secagg"
	"github.com/fedzip/fedzip/transport/fedzippb"
)

// Red team of a client's side of secure aggregation against a malicious
// coordinator (issue 17): what the tasks it sends can make a client
// allocate or accept.

// saGraphTask is a valid advertise-step task of n clients (IDs 1..n) on a
// graph of k neighbours with threshold t, a random support of 4 of the
// model's coordinates.
func saGraphTask(n, k, t int) *fedzippb.SecAggStepResponse {
	ids := make([]uint64, n)
	for i := range ids {
		ids[i] = uint64(i + 1)
	}
	return &fedzippb.SecAggStepResponse{Session: 3, Ids: ids, Neighbours: uint32(k), Threshold: uint32(t), Dim: 4,
		SupportSeed: 5, GraphSeed: 6, Clip: 1, Bits: 8, MaskBits: 16}
}

// TestRedteamSecAggTaskGraphBound is a coordinator that sends a client a
// task of secagg.MaxClients IDs on the complete graph: 65,536 IDs are
// under 200 KB on the wire, and secagg.NewGraph would have built 65,536 ×
// 65,535 neighbour entries, 16 GiB, before the client refused anything.
// The client now refuses the task (ErrTaskRefused) before it builds the
// graph, allocating nothing in proportion to it; a graph of honest size
// is taken.
func TestRedteamSecAggTaskGraphBound(t *testing.T) {
	delta := make([]float32, testParams)
	if p, err := newSecAggPeer(saGraphTask(5, 4, 3), 1, delta, make([]float32, testParams), 1); err != nil || p == nil {
		t.Fatalf("a round of 5 on the complete graph: %v", err)
	}
	n := secagg.MaxClients
	huge := saGraphTask(n, n-1, n/2+1)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err := newSecAggPeer(huge, 1, delta, make([]float32, testParams), 1)
	runtime.ReadMemStats(&after)
	if !errors.Is(err, ErrTaskRefused) {
		t.Fatalf("a complete graph of %d clients: %v, want ErrTaskRefused", n, err)
	}
	if b := after.TotalAlloc - before.TotalAlloc; b > 64<<10 {
		t.Fatalf("refusing a graph of %d clients allocated %d bytes", n, b)
	}
	// Just over the bound with the default graph's degree is refused too;
	// the default graph of secagg.MaxClients clients is within it.
	k, tt := secagg.RoundKT(n, 0, 0, 0)
	if n*k > maxGraphEntries {
		t.Fatalf("the default graph of %d clients (k = %d) is beyond the client's bound", n, k)
	}
	if _, err := newSecAggPeer(saGraphTask(maxGraphEntries/k+1, k, tt), 1, delta, make([]float32, testParams), 1); !errors.Is(err, ErrTaskRefused) {
		t.Fatalf("a graph of %d entries: %v", (maxGraphEntries/k+1)*k, err)
	}
}

// TestRedteamSecAggAnnouncedExtremes pins what a client does with the
// extreme announcements a malicious coordinator can send, within the
// model: every coordinate (taken: a secure sum over all of them is the
// plain protocol, and the threat model says the server may choose the
// support), every block random and nothing announced (taken), no block
// (refused: a task needs a support of at least one coordinate), counts
// at the top of uint32 (refused before anything is allocated for them),
// and a random-support task in an announced run (taken, under the
// unbound session: the client's neighbours, bound to the announced
// support, then cannot open its shares, as with another support).
func TestRedteamSecAggAnnouncedExtremes(t *testing.T) {
	const n = testParams * 4
	nb := secagg.NumBlocks(n, 4)
	all := make([]int32, nb)
	for b := range all {
		all[b] = int32(b)
	}
	task := func(msg []byte, blocks, explore, dim uint32) *fedzippb.SecAggStepResponse {
		return &fedzippb.SecAggStepResponse{Session: 1234, SupportSeed: 77, Dim: dim, Announced: msg,
			AnnounceBlock: 4, AnnounceBlocks: blocks, AnnounceExplore: explore}
	}
	idx, session, err := taskSupport(task(secagg.AppendAnnounced(nil, all, nb), uint32(nb), 0, n), n)
	if err != nil || len(idx) != n || idx[0] != 0 || idx[n-1] != n-1 || session != secagg.BindSupport(1234, idx) {
		t.Fatalf("every coordinate announced: %d coordinates, %v", len(idx), err)
	}
	idx, _, err = taskSupport(task(secagg.AppendAnnounced(nil, nil, nb), uint32(nb), uint32(nb), n), n)
	if err != nil || len(idx) != n {
		t.Fatalf("every block random: %d coordinates, %v", len(idx), err)
	}
	if _, _, err := taskSupport(task(secagg.AppendAnnounced(nil, nil, nb), 0, 0, 0), n); !errors.Is(err, ErrTaskRefused) {
		t.Fatalf("an empty support: %v", err)
	}
	for _, tc := range []struct {
		name                   string
		block, blocks, explore uint32
	}{
		{"block size", math.MaxUint32, 1, 0},
		{"blocks", 4, math.MaxUint32, 0},
		{"random blocks", 4, math.MaxUint32, math.MaxUint32},
		{"random blocks alone", 4, 4, math.MaxUint32},
	} {
		res := task(secagg.AppendAnnounced(nil, all[:3], nb), tc.blocks, tc.explore, 12)
		res.AnnounceBlock = tc.block
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		_, _, err := taskSupport(res, n)
		runtime.ReadMemStats(&after)
		if !errors.Is(err, ErrTaskRefused) {
			t.Errorf("%s at 2^32−1: %v", tc.name, err)
		}
		if b := after.TotalAlloc - before.TotalAlloc; b > 4<<10 {
			t.Errorf("%s at 2^32−1: refusing allocated %d bytes", tc.name, b)
		}
	}
	random := task(nil, 0, 0, 12)
	random.AnnounceBlock = 0
	idx, session, err = taskSupport(random, n)
	if err != nil || len(idx) != 12 || session != 1234 || !slices.IsSorted(idx) {
		t.Fatalf("a random-support task: %d coordinates, session %d, %v", len(idx), session, err)
	}
}
