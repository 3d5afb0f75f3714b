package metrics

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"
)

func TestCodeReason(t *testing.T) {
	for c, want := range map[codes.Code]string{codes.ResourceExhausted: "resource_exhausted", codes.DataLoss: "data_loss",
		codes.InvalidArgument: "invalid_argument", codes.Unavailable: "unavailable", codes.OK: "o_k"} {
		if got := CodeReason(c); got != want {
			t.Errorf("CodeReason(%v) = %q, want %q", c, got, want)
		}
	}
}

// TestNilIsOff: a nil *Coordinator or *Client ignores every call, so
// instrumented code paths need no checks.
func TestNilIsOff(t *testing.T) {
	var c *Coordinator
	c.Accepted("x", 1, 4, false)
	c.Refused("late", "x", 3)
	c.Sent("float32", 9)
	c.Transferred(Upload, 10, 40)
	c.CountWire(func() (int64, int64) { return 1, 2 })
	c.ClientTimings(1, 2, 3, 4)
	c.Evaluated(0.9, 0.1)
	c.FedEvaluated(0.9, 0.1, 10, 2)
	c.Excluded(2)
	c.SetState(nil)
	if c.CompressionRatio() != 0 || c.Totals() != (Totals{}) {
		t.Fatal("nil coordinator reports values")
	}
	var cl *Client
	cl.Downloaded(1, time.Second)
	cl.Trained(time.Second, time.Second, 0.5, 40, 4)
	cl.Uploaded(1, "x", 4, time.Second)
	cl.Refused("x")
	cl.Retried()
}

func TestCoordinatorCounts(t *testing.T) {
	reg := NewRegistry()
	m := NewCoordinator(reg, func() CoordinatorState { return CoordinatorState{Round: 4, RaftRole: "follower", Phase: "collecting"} })
	m.Accepted("topk1", 100, 4000, false)
	m.Accepted("topk1", 100, 4000, true)
	m.Refused("late", "topk1", 50)
	m.Sent("float32", 4000)
	m.ClientTimings(0.5, math.NaN(), -1, 2*MaxSeconds) // only the download is valid
	if r := m.CompressionRatio(); r != 40 {
		t.Fatalf("ratio %v, want 40", r)
	}
	if got := (m.Totals()); got != (Totals{Accepted: 2, Refused: 1, BytesIn: 200, DenseIn: 8000, BytesOut: 4000}) {
		t.Fatalf("totals %+v", got)
	}
	if n := testutil.CollectAndCount(m.train); n != 1 {
		t.Fatalf("%d train histograms", n)
	}
	want := `
# HELP fedzip_round The open round, or the last one when none is open.
# TYPE fedzip_round gauge
fedzip_round 4
# HELP fedzip_updates_refused_total Updates refused, by reason: a sentinel (late, wrong_round, not_selected, bad_update, not_leader, ...) or the gRPC code (resource_exhausted, data_loss, ...).
# TYPE fedzip_updates_refused_total counter
fedzip_updates_refused_total{reason="late"} 1
# HELP fedzip_bytes_total Payload bytes of updates received (direction in, codec: the upload codec) and of models sent (direction out, codec float32 for whole models, the download codec for deltas).
# TYPE fedzip_bytes_total counter
fedzip_bytes_total{codec="float32",direction="out"} 4000
fedzip_bytes_total{codec="topk1",direction="in"} 250
# HELP fedzip_raft_role 1 for this node's current Raft role.
# TYPE fedzip_raft_role gauge
fedzip_raft_role{role="candidate"} 0
fedzip_raft_role{role="follower"} 1
fedzip_raft_role{role="leader"} 0
fedzip_raft_role{role="shutdown"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "fedzip_round", "fedzip_updates_refused_total", "fedzip_bytes_total", "fedzip_raft_role"); err != nil {
		t.Fatal(err)
	}
	if n, _ := testutil.GatherAndCount(reg, "fedzip_client_reported_download_seconds", "fedzip_client_reported_train_seconds"); n != 2 {
		t.Fatalf("%d histograms", n)
	}
	if n, _ := testutil.GatherAndCount(reg, "fedzip_test_accuracy"); n != 0 {
		t.Fatal("test accuracy before any evaluation")
	}
	m.Evaluated(0.93, 0.2)
	m.Evaluated(0.95, 0.1)
	if err := testutil.GatherAndCompare(reg, strings.NewReader("# HELP fedzip_test_accuracy Test accuracy of the last evaluated global model (--eval).\n# TYPE fedzip_test_accuracy gauge\nfedzip_test_accuracy 0.95\n"), "fedzip_test_accuracy"); err != nil {
		t.Fatal(err)
	}
}

// TestExcludedCounts: the exclusion counter sums the rounds' exclusions
// and the gauge holds the last round's, 0 included.
func TestExcludedCounts(t *testing.T) {
	reg := NewRegistry()
	m := NewCoordinator(reg, nil)
	m.Excluded(2)
	m.Excluded(3)
	want := `
# HELP fedzip_clients_excluded Clients whose update the strategy left out of the last closed round's aggregate.
# TYPE fedzip_clients_excluded gauge
fedzip_clients_excluded 3
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "fedzip_clients_excluded"); err != nil {
		t.Fatal(err)
	}
	m.Excluded(0)
	if got := testutil.ToFloat64(m.excluded); got != 5 {
		t.Fatalf("fedzip_updates_excluded_total = %v, want 5", got)
	}
	if got := testutil.ToFloat64(m.excludedLast); got != 0 {
		t.Fatalf("fedzip_clients_excluded = %v after a round without exclusions, want 0", got)
	}
}

// TestFedEvaluatedGauges: the federated evaluation gauges appear with the
// first evaluation and hold the last one.
func TestFedEvaluatedGauges(t *testing.T) {
	reg := NewRegistry()
	m := NewCoordinator(reg, nil)
	if n, _ := testutil.GatherAndCount(reg, "fedzip_fed_accuracy"); n != 0 {
		t.Fatal("federated accuracy before any evaluation")
	}
	m.FedEvaluated(0.5, 1.5, 100, 3)
	m.FedEvaluated(0.75, 0.5, 120, 4)
	for name, want := range map[string]float64{"fedzip_fed_accuracy": 0.75, "fedzip_fed_loss": 0.5, "fedzip_fed_examples": 120, "fedzip_fed_reports": 4} {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, mf := range mfs {
			if mf.GetName() == name {
				found = true
				if got := mf.GetMetric()[0].GetGauge().GetValue(); got != want {
					t.Errorf("%s = %v, want %v", name, got, want)
				}
			}
		}
		if !found {
			t.Errorf("%s is not exported", name)
		}
	}
}

// TestTransferAndWire: uploads and downloads with their framing, dense
// FedAvg's bytes for them, the total ratio and the wire counters are
// exported and totalled; a refused upload counts its bytes and no dense
// ones.
func TestTransferAndWire(t *testing.T) {
	reg := NewRegistry()
	m := NewCoordinator(reg, nil)
	m.Transferred(Upload, 120, 4000)
	m.Transferred(Upload, 30, 0) // refused
	m.Transferred(Download, 850, 4000)
	var in, out int64 = 1500, 9000
	m.CountWire(func() (int64, int64) { return in, out })
	want := `
# HELP fedzip_dense_bytes_total What the accepted uploads (kind upload) and the downloads served (kind download) would have cost as dense float32 models, 4 bytes per parameter each: dense FedAvg's bytes.
# TYPE fedzip_dense_bytes_total counter
fedzip_dense_bytes_total{kind="download"} 4000
fedzip_dense_bytes_total{kind="upload"} 4000
# HELP fedzip_total_ratio Dense FedAvg's bytes both ways (fedzip_dense_bytes_total) over the uploads' and downloads' (fedzip_transfer_bytes_total), since the node started (0 before the first).
# TYPE fedzip_total_ratio gauge
fedzip_total_ratio 8
# HELP fedzip_transfer_bytes_total Bytes of uploads (kind upload: every message of the Submit calls both ways, refused ones too) and downloads (kind download: every message of the Download calls both ways), each message with gRPC's 5-byte framing; HTTP/2 and TLS framing are in fedzip_wire_bytes_total.
# TYPE fedzip_transfer_bytes_total counter
fedzip_transfer_bytes_total{kind="download"} 850
fedzip_transfer_bytes_total{kind="upload"} 150
# HELP fedzip_wire_bytes_total Every byte the node's gRPC port read (direction in) and wrote (direction out), below TLS: TLS, HTTP/2 and gRPC framing, and every call (task polls, registrations, uploads, downloads, keepalives).
# TYPE fedzip_wire_bytes_total counter
fedzip_wire_bytes_total{direction="in"} 1500
fedzip_wire_bytes_total{direction="out"} 9000
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "fedzip_transfer_bytes_total", "fedzip_dense_bytes_total", "fedzip_total_ratio", "fedzip_wire_bytes_total"); err != nil {
		t.Fatal(err)
	}
	in, out = 1600, 9100 // read at every scrape
	tot := m.Totals()
	if tot.UploadBytes != 150 || tot.DownloadBytes != 850 || tot.DenseUpload != 4000 || tot.DenseDownload != 4000 || tot.WireIn != 1600 || tot.WireOut != 9100 || tot.TotalRatio() != 8 {
		t.Fatalf("totals %+v", tot)
	}
	if (Totals{}).TotalRatio() != 0 {
		t.Fatal("a ratio before any byte")
	}
}
