package coordinator

import (
	"bytes"
	"math"
	"testing"
)

// TestRedteamStaleHavesShareOneSync: an authenticated client that names a
// different stale or future have_version on every DownloadRequest (to
// defeat the composed-sync cache) is served the one sync from version 0,
// the same bytes every time, never the whole model (the encoder shares
// one cached message among all such haves: TestRedteamSyncCacheStaleHaves
// in package gradient).
func TestRedteamStaleHavesShareOneSync(t *testing.T) {
	const rounds, maxLag = 6, 2
	_, parts := downloadLog(t, "lattice", maxLag, rounds)
	f := NewFSM()
	for _, p := range parts {
		applyAll(t, f, p, false)
	}
	v := f.Progress().Version
	if v < maxLag+2 {
		t.Fatalf("version %d: the run did not go beyond the kept deltas", v)
	}
	first, ok := f.ServeDownload(0, true)
	if !ok || !first.Delta || first.Base != 0 || len(first.Payload) == 0 {
		t.Fatalf("have 0: %+v", first)
	}
	haves := []uint64{v + 1, v + 1000, 1 << 40, math.MaxInt64, math.MaxUint64}
	for h := uint64(1); h+maxLag < v; h++ {
		haves = append(haves, h)
	}
	for _, have := range haves {
		d, ok := f.ServeDownload(have, true)
		if !ok || !d.Delta || d.Base != 0 || d.Version != v {
			t.Fatalf("have %d: %+v, want the sync from version 0 to %d", have, d, v)
		}
		if !bytes.Equal(d.Payload, first.Payload) || d.PayloadCRC != first.PayloadCRC || d.ModelCRC != first.ModelCRC {
			t.Fatalf("have %d: another sync from version 0 than have 0's", have)
		}
	}
}
