package coordinator

import (
	"fmt"
	"io"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/fedzip/fedzip/metrics"
	"github.com/fedzip/fedzip/round"
	"github.com/fedzip/fedzip/transport"
	"github.com/fedzip/fedzip/transport/fedzippb"
)

// BenchmarkIngestMetrics is BenchmarkIngest without and with metrics: the
// service instrumented and /metrics scraped every 100 ms (Prometheus's
// default is every 15 s). Compare updates/s of the two.
//
//	go test -run x -bench IngestMetrics -benchtime 3x -count 5 ./coordinator/
func BenchmarkIngestMetrics(b *testing.B) {
	for _, m := range []int{10, 100} {
		for _, on := range []bool{false, true} {
			b.Run(fmt.Sprintf("nodes=1/clients=%d/metrics=%v", m, on), func(b *testing.B) { benchIngest(b, 1, m, on) })
		}
	}
}

// scrapeWhileBenchmarking instruments svc and scrapes its metrics every
// 100 ms until the returned function is called.
func scrapeWhileBenchmarking(b *testing.B, svc *Service) (stop func()) {
	reg := metrics.NewRegistry()
	svc.Instrument(metrics.NewCoordinator(reg, nil))
	h := metrics.Handler(reg)
	done, quit := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-quit:
				return
			case <-t.C:
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
				if rec.Code != 200 {
					b.Errorf("scrape: %d", rec.Code)
				}
				io.Copy(io.Discard, rec.Body)
			}
		}
	}()
	return func() { close(quit); <-done }
}

// BenchmarkObserveSubmit is the metrics' own cost per update: what an
// instrumented Submit adds (counters, histograms, the round's traffic).
func BenchmarkObserveSubmit(b *testing.B) {
	svc := &Service{}
	svc.metrics = metrics.NewCoordinator(metrics.NewRegistry(), nil)
	v := &Progress{Initialised: true, Round: 3, Config: *testRun(1)}
	h := &fedzippb.UpdateHeader{ClientId: 1, Round: 3, Examples: 600, TrainLoss: 0.5,
		DownloadSeconds: 0.2, TrainSeconds: 1.5, EncodeSeconds: 0.05, UploadSeconds: 0.1}
	for b.Loop() {
		svc.observeSubmit(v, h, 12345, 12400, round.Receipt{}, nil, nil)
	}
}

// BenchmarkScrape is the cost of one scrape of a node's /metrics: the
// state read (FSM view, Raft stats) and the Go runtime and process
// collectors, rendered as text.
func BenchmarkScrape(b *testing.B) {
	ds := diskCluster(b, 1, testRun(0), nil)
	node := leaderOfDisk(b, ds)
	svc := NewService(node, transport.LimitsFor(1000, 0))
	reg := metrics.NewRegistry()
	svc.Instrument(metrics.NewCoordinator(reg, nil))
	h := metrics.Handler(reg)
	for b.Loop() {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		if rec.Code != 200 {
			b.Fatal(rec.Code)
		}
	}
}
