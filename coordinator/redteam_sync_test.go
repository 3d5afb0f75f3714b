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

// TestRedteamTrafficRoundsBounded: the per-round traffic map is keyed by
// the FSM's round (a client cannot name it), and keeps the last
// keptRounds rounds however long the run, while the totals count all.
func TestRedteamTrafficRoundsBounded(t *testing.T) {
	s := &Service{}
	const rounds = 10 * keptRounds
	for r := 1; r <= rounds; r++ {
		s.observeDownload(r, "lattice", 10, 20, 40)
		s.observeDownload(r, "float32", 10, 20, 40)
	}
	s.traffic.mu.Lock()
	kept := len(s.traffic.rounds)
	s.traffic.mu.Unlock()
	if kept > keptRounds {
		t.Fatalf("%d rounds of traffic kept, want at most %d", kept, keptRounds)
	}
	if got := s.TrafficTotals(); got.Downloads != 2*rounds || got.BytesOut != 20*rounds || got.DownloadBytes != 40*rounds {
		t.Fatalf("totals %+v, want %d downloads", got, 2*rounds)
	}
	if got := s.RoundTraffic(rounds); got.Downloads != 2 {
		t.Fatalf("last round: %+v", got)
	}
}
