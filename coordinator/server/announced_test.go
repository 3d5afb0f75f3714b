package server

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/fedzip/fedzip/round"
	"github.com/fedzip/fedzip/runspec"
	"github.com/fedzip/fedzip/secagg"
)

// TestServerSecAggAnnounced: one node with real gRPC and Raft on disk and
// three in-process clients (remote.Run) run three secure aggregation
// rounds on an announced support to the end: each client rebuilds the
// support from its advertise task and binds its session to it (a client
// that rebuilt another would make the round abandoned). Every round counts
// the announcement it sent each client among its downloads: the first
// round's, announced before anything was observed, is exactly three times
// the announcement an estimate without observations gives; every "round
// closed" line says the round's announced bytes, and no round is
// abandoned.
func TestServerSecAggAnnounced(t *testing.T) {
	const rounds, clients = 3, 3
	var logs logBuffer
	run := testRun(rounds, clients)
	run.UploadCodec = "none"
	run.SecAgg = &runspec.SecAgg{Fraction: 0.3, Bits: 8, Support: "announced,block=4"}
	cfg := testConfig(t, run, &logs)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	s, err := Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	results := startClients(ctx, t, s.GRPCAddr(), clients)
	if err := waitRun(t, s, &logs); err != nil {
		t.Fatalf("run: %v\n%s", err, logs.String())
	}
	for range clients {
		if err := <-results; err != nil {
			t.Fatalf("client: %v", err)
		}
	}
	if ab := logs.lines("round abandoned: secure aggregation failed"); len(ab) > 0 {
		t.Fatalf("rounds abandoned: %v", ab)
	}
	d := s.Node().FSM().Params()
	nb := secagg.NumBlocks(d, 4)
	blocks, explore := secagg.AnnouncedBlocks(d, int(math.Round(0.3*float64(d))), 4, runspec.DefaultSecAggExplore)
	_, top, _ := secagg.NewImportance(d).Announce(round.TaskSeed(run.TaskSeed^0x737570706f7274, 1, 0), 4, blocks, explore) // "support"
	first := int64(len(secagg.AppendAnnounced(nil, top, nb)))
	var sum int64
	for r := 1; r <= rounds; r++ {
		a := s.svc.RoundTraffic(r).AnnouncedBytes
		if r == 1 && a != clients*first {
			t.Fatalf("round 1: %d announced bytes, want %d clients × %d", a, clients, first)
		}
		if a <= 0 || a%clients != 0 || a > int64(clients*secagg.MaxAnnouncedLen(nb)) {
			t.Fatalf("round %d: %d announced bytes for %d clients", r, a, clients)
		}
		sum += a
	}
	closed := logs.lines("round closed")
	if len(closed) != rounds {
		t.Fatalf("%d round closed lines, want %d", len(closed), rounds)
	}
	for _, l := range closed {
		r := int(l["round"].(float64))
		if got := int64(l["announced_bytes"].(float64)); got != s.svc.RoundTraffic(r).AnnouncedBytes {
			t.Fatalf("round %d's line says %d announced bytes, its traffic %d", r, got, s.svc.RoundTraffic(r).AnnouncedBytes)
		}
	}
	if all := s.svc.TrafficTotals(); all.AnnouncedBytes != sum || all.DownloadBytes < sum || all.BytesOut < sum {
		t.Fatalf("totals: %d announced, %d download bytes, %d payload out; the rounds announced %d", all.AnnouncedBytes, all.DownloadBytes, all.BytesOut, sum)
	}
	t.Logf("announced bytes per round: %d, %d, %d", s.svc.RoundTraffic(1).AnnouncedBytes, s.svc.RoundTraffic(2).AnnouncedBytes, s.svc.RoundTraffic(3).AnnouncedBytes)
}
