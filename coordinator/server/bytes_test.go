package server

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fedzip/fedzip/client"
	"github.com/fedzip/fedzip/client/remote"
	"github.com/fedzip/fedzip/metrics"
	"github.com/fedzip/fedzip/nn"
	"github.com/fedzip/fedzip/transport/fedzippb"
)

// TestServerCountsEveryByte: a node with real gRPC and Raft and three
// clients, with codecs both ways, counts every byte. Its payload counters
// equal the sum of what the clients say they sent and received; the
// uploads' and downloads' bytes with their framing are more, and the
// bytes its gRPC port read and wrote (on the wire) more again; every
// "round closed" line leads with the round's total, upload plus download,
// and its ratio against dense FedAvg; the metrics and the dashboard serve
// them.
func TestServerCountsEveryByte(t *testing.T) {
	var logs logBuffer
	run := testRun(3, 3)
	run.DownloadCodec = "topk=0.5,bits=8"
	cfg := testConfig(t, run, &logs)
	cfg.MetricsAddr, cfg.UIAddr = "127.0.0.1:0", "127.0.0.1:0"
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	s, err := Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	regs := make([]*prometheus.Registry, 3)
	clients := make(chan error, len(regs))
	for i := range regs {
		regs[i] = prometheus.NewRegistry()
		go func() { clients <- runMeteredClient(ctx, t, s.GRPCAddr(), i, metrics.NewClient(regs[i])) }()
	}
	if err := waitRun(t, s, &logs); err != nil {
		t.Fatalf("run: %v\n%s", err, logs.String())
	}
	for range regs {
		if err := <-clients; err != nil {
			t.Fatalf("client: %v", err)
		}
	}
	// What the clients say they sent (updates, out) and received (models,
	// in): payload bytes.
	var sent, received float64
	for _, reg := range regs {
		sent += sumCounter(t, reg, "fedzip_client_bytes_total", "direction", metrics.Out)
		received += sumCounter(t, reg, "fedzip_client_bytes_total", "direction", metrics.In)
	}
	tot := s.obs.metrics.Totals()
	all := s.svc.TrafficTotals()
	if sent == 0 || received == 0 || float64(tot.BytesIn) != sent || float64(tot.BytesOut) != received || all.BytesIn != tot.BytesIn || all.BytesOut != tot.BytesOut {
		t.Fatalf("payload: the node counted %d bytes in, %d out (traffic %d, %d); its clients sent %v and received %v", tot.BytesIn, tot.BytesOut, all.BytesIn, all.BytesOut, sent, received)
	}
	if tot.UploadBytes <= tot.BytesIn || tot.DownloadBytes <= tot.BytesOut || all.UploadBytes != tot.UploadBytes || all.DownloadBytes != tot.DownloadBytes {
		t.Fatalf("uploads %d and downloads %d bytes with framing (traffic %d, %d), payloads %d and %d", tot.UploadBytes, tot.DownloadBytes, all.UploadBytes, all.DownloadBytes, tot.BytesIn, tot.BytesOut)
	}
	if tot.WireIn < tot.BytesIn || tot.WireOut < tot.BytesOut || tot.WireIn+tot.WireOut <= tot.UploadBytes+tot.DownloadBytes {
		t.Fatalf("on the wire %d in, %d out; uploads and downloads %d + %d", tot.WireIn, tot.WireOut, tot.UploadBytes, tot.DownloadBytes)
	}
	if r := tot.TotalRatio(); !(r > 1) || tot.DenseUpload != tot.DenseIn || tot.DenseDownload <= 0 {
		t.Fatalf("total ratio %v, dense %d up, %d down (accepted %d)", r, tot.DenseUpload, tot.DenseDownload, tot.DenseIn)
	}
	t.Logf("payload %d in, %d out; with framing %d up, %d down; on the wire %d in, %d out; total ratio %.2f",
		tot.BytesIn, tot.BytesOut, tot.UploadBytes, tot.DownloadBytes, tot.WireIn, tot.WireOut, tot.TotalRatio())

	lines := logs.lines("round closed")
	var sum float64
	for _, l := range lines {
		total, up, down := l["total_bytes"].(float64), l["upload_bytes"].(float64), l["download_bytes"].(float64)
		if total <= 0 || total != up+down || up <= l["upload_payload_bytes"].(float64) || down <= l["download_payload_bytes"].(float64) ||
			!(l["total_ratio"].(float64) > 0) || l["wire_bytes"] == nil {
			t.Errorf("round closed line: %v", l)
		}
		sum += total
		if c := l["cumulative_total_bytes"].(float64); c < sum {
			t.Errorf("round %v: cumulative total %v below the rounds' sum %v", l["round"], c, sum)
		}
	}
	if len(lines) < 3 || sum > float64(all.TotalBytes()) {
		t.Fatalf("%d round closed lines, their totals %v, the node's %d:\n%s", len(lines), sum, all.TotalBytes(), logs.String())
	}
	// The log line leads with the total.
	for _, line := range strings.Split(logs.String(), "\n") {
		if strings.Contains(line, `"round closed"`) && strings.Index(line, `"total_bytes"`) > strings.Index(line, `"upload_bytes"`) {
			t.Errorf("the total does not lead the bytes: %s", line)
		}
	}

	get := func(url string) string {
		res, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, err := io.ReadAll(res.Body)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	m := get("http://" + s.MetricsAddr() + "/metrics")
	for _, want := range []string{`fedzip_wire_bytes_total{direction="in"}`, `fedzip_wire_bytes_total{direction="out"}`,
		fmt.Sprintf(`fedzip_transfer_bytes_total{kind="upload"} %d`, tot.UploadBytes), `fedzip_dense_bytes_total{kind="download"}`, "fedzip_total_ratio "} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %q:\n%s", want, m)
		}
	}
	if st := get("http://" + s.UIAddr() + "/api/state"); !strings.Contains(st, `"dense_bytes":`) || !strings.Contains(st, `"wire_bytes":`) {
		t.Errorf("dashboard state without the dense or wire bytes:\n%s", st)
	}
}

// runMeteredClient is startClients' client i, recording in m.
func runMeteredClient(ctx context.Context, t *testing.T, addr string, i int, m *metrics.Client) error {
	r := rand.New(rand.NewPCG(uint64(i), 7))
	const examples = 64
	x, y, idx := make([]float32, examples*testDim), make([]uint8, examples), make([]int, examples)
	for j := range x {
		x[j] = float32(r.NormFloat64())
	}
	for j := range y {
		y[j], idx[j] = uint8(r.IntN(testClasses)), j
	}
	cfg := remote.Config{Addrs: []string{addr}, Insecure: true, Name: fmt.Sprintf("c%d", i), StateDir: filepath.Join(t.TempDir(), "c"),
		Examples: examples, MaxBackoff: 200 * time.Millisecond, Metrics: m,
		NewTrainer: func(task *fedzippb.Task) (client.Trainer, error) {
			m, err := remote.TaskModel(task)
			if err != nil {
				return nil, err
			}
			return client.DataTrainer{NN: nn.NewTrainer(m, int(task.GetBatchSize())), X: x, Y: y, Index: idx}, nil
		}}
	sum, err := remote.Run(ctx, cfg)
	if err == nil && len(sum.Rounds) == 0 {
		err = fmt.Errorf("client %s: no update accepted", cfg.Name)
	}
	return err
}

// sumCounter sums the counters name in reg whose label has value.
func sumCounter(t *testing.T, reg *prometheus.Registry, name, label, value string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					sum += m.GetCounter().GetValue()
				}
			}
		}
	}
	return sum
}
