package report

import (
	"bytes"
	"reflect"
	"strings"
	"testing"

	"github.com/fedzip/fedzip/sim"
)

// simRounds is a small run: evaluated in rounds 2 and 3, the target 0.9
// reached in round 2, DP noise from round 1.
func simRounds() []sim.Metrics {
	return []sim.Metrics{
		{Round: 1, Clients: 10, UploadBytes: 100, DownloadBytes: 1000, DenseUploadBytes: 4000, DenseDownloadBytes: 4000, Seconds: 1, Epsilon: 0.5, DPClip: 1},
		{Round: 2, Evaluated: true, TestAccuracy: 0.92, TestLoss: 0.3, Clients: 10, UploadBytes: 100, DownloadBytes: 1000, DenseUploadBytes: 4000, DenseDownloadBytes: 4000, Seconds: 2, Epsilon: 0.8, DPClip: 1},
		{Round: 3, Evaluated: true, TestAccuracy: 0.91, TestLoss: 0.35, Clients: 9, UploadBytes: 200, DownloadBytes: 2000, DenseUploadBytes: 3600, DenseDownloadBytes: 3600, Seconds: 3, Epsilon: 1.1, DPClip: 0.9, ClientStateBytes: 2e6, Clipped: 2},
	}
}

func TestSimulationFigures(t *testing.T) {
	s := Simulation{Target: 0.9, DPDelta: 1e-5}
	for _, m := range simRounds() {
		s.Add(m)
	}
	s.Finish(10)
	want := Simulation{Target: 0.9, PerRound: 9, FinalAccuracy: 0.91, FinalLoss: 0.35, BestAccuracy: 0.92, BestRound: 2,
		RoundsToTarget: 2, UploadToTarget: 200, DownloadToTarget: 2000, TotalToTarget: 2200, TotalRatioToTarget: 16000.0 / 2200,
		TotalBytes: 4400, DenseTotalBytes: 23200, TotalRatio: 23200.0 / 4400, UploadBytes: 400, DownloadBytes: 4000,
		DenseUploadBytes: 11600, DenseDownloadBytes: 11600, UploadRatio: 29, DownloadRatio: 2.9, ClientStateMB: 2,
		Seconds: 10, SecondsPerRound: 2, Epsilon: 1.1, DPDelta: 1e-5, DPClip: 0.9, Updates: 29, Clipped: 2, run: s.run}
	if !reflect.DeepEqual(s, want) {
		t.Fatalf("got  %+v\nwant %+v", s, want)
	}
	var b bytes.Buffer
	if err := s.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	for _, row := range []string{"final test accuracy  91.00% (loss 0.3500)", "rounds to 90.00%", "2 (2.1 KiB in total, 7.27× smaller than dense FedAvg: 200 B uploaded, 2.0 KiB downloaded)",
		"total bytes          4.3 KiB uploaded + downloaded, 5.27× smaller than dense FedAvg's 22.7 KiB", "(ε = 1.1, δ = 1e-05)-DP", "2 of 29 updates"} {
		if !strings.Contains(b.String(), row) {
			t.Errorf("table lacks %q:\n%s", row, b.String())
		}
	}
	if i, j := strings.Index(b.String(), "total bytes"), strings.Index(b.String(), "uploaded  "); i < 0 || j < 0 || i > j {
		t.Errorf("the total does not lead the bytes rows:\n%s", b.String())
	}
	// Not reached, and no noise: no round, bytes or δ to report.
	s = Simulation{Target: 0.95, DPDelta: 1e-5}
	for _, m := range simRounds() {
		m.Epsilon = 0
		s.Add(m)
	}
	s.Finish(1)
	if s.RoundsToTarget != 0 || s.UploadToTarget != 0 || s.DownloadToTarget != 0 || s.TotalToTarget != 0 || s.TotalRatioToTarget != 0 || s.DPDelta != 0 || s.Epsilon != 0 {
		t.Fatalf("unreached target or no DP: %+v", s)
	}
}

// TestWriteRoundReadsBack: the lines simulate writes are read back by Read
// as the rounds RoundOf gives.
func TestWriteRoundReadsBack(t *testing.T) {
	var b bytes.Buffer
	var want []Round
	for _, m := range simRounds() {
		if err := WriteRound(&b, m); err != nil {
			t.Fatal(err)
		}
		want = append(want, RoundOf(m))
	}
	run, err := Read(&b, "x")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(run.Rounds, want) {
		t.Fatalf("read %+v\nwant %+v", run.Rounds, want)
	}
}

func TestBytesIEC(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 2411725: "2.3 MiB", 796840000: "759.9 MiB"} {
		if got := BytesIEC(n); got != want {
			t.Errorf("BytesIEC(%d) = %q, want %q", n, got, want)
		}
	}
}
