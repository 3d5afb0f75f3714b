package coordinator

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fedzip/fedzip/client"
	"github.com/fedzip/fedzip/client/remote"
	"github.com/fedzip/fedzip/dataset"
	"github.com/fedzip/fedzip/metrics"
	"github.com/fedzip/fedzip/nn"
	"github.com/fedzip/fedzip/round"
	"github.com/fedzip/fedzip/transport"
	"github.com/fedzip/fedzip/transport/fedzippb"
)

// scrape reads a Prometheus text page into sample -> value, the sample
// written as on the page: name{label="v",...}.
func scrape(t *testing.T, url string) map[string]float64 {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("GET %s: %s", url, res.Status)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(res.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("bad sample line %q", line)
		}
		out[line[:i]] = v
	}
	return out
}

// TestMetricsMoveAfterRounds runs two rounds with three real client
// runtimes over gRPC on 127.0.0.1 against an instrumented node, scrapes
// the node's and the clients' /metrics over HTTP before and after, and
// checks that the round, Raft, update, byte, ratio and latency metrics
// moved as the rounds say they should.
func TestMetricsMoveAfterRounds(t *testing.T) {
	const nclients = 3
	fed, _ := dataset.Synthetic(1, 1, nclients, 3)
	run := testRun(2)
	run.UploadCodec = "topk1"
	// Every round waits for all the clients: with fewer, a client that a
	// starved machine started late could miss both rounds, and its
	// metrics would rightly not move.
	run.Round.PerRound, run.Round.MinClients = nclients, nclients
	node := leaderOf(t, inmemCluster(t, 1, run))
	waitFor(t, "init", func() bool { return node.FSM().View().Initialised })
	model, _ := node.FSM().Model()
	svc := NewService(node, transport.LimitsFor(len(model), 0))
	svc.LongPoll = 200 * time.Millisecond
	reg := metrics.NewRegistry()
	svc.Instrument(metrics.NewCoordinator(reg, nil))
	srv := transport.NewServer(transport.ServerConfig{Insecure: true, Authenticator: svc, Limits: svc.Limits})
	fedzippb.RegisterCoordinatorServer(srv, svc)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(lis)
	defer transport.Shutdown(srv, time.Second)
	hs := httptest.NewServer(metrics.Handler(reg))
	defer hs.Close()

	before := scrape(t, hs.URL)
	for sample, want := range map[string]float64{
		"fedzip_round": 0, "fedzip_updates_accepted_total": 0, "fedzip_clients_registered": 0,
		`fedzip_raft_role{role="leader"}`: 1, `fedzip_raft_role{role="follower"}`: 0, "fedzip_raft_nodes": 1,
		`fedzip_round_phase{phase="idle"}`: 1,
	} {
		if got, ok := before[sample]; !ok || got != want {
			t.Errorf("before: %s = %v (present %v), want %v", sample, got, ok, want)
		}
	}
	if _, ok := before["go_goroutines"]; !ok {
		t.Error("the node's registry has no Go runtime metrics")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	clientURLs := make([]string, nclients)
	for k := 0; k < nclients; k++ {
		creg := metrics.NewRegistry()
		chs := httptest.NewServer(metrics.Handler(creg))
		defer chs.Close()
		clientURLs[k] = chs.URL
		cfg := remote.Config{Addrs: []string{lis.Addr().String()}, Insecure: true, Name: fmt.Sprintf("c%d", k), JoinSecret: "s3cret",
			StateDir: t.TempDir(), Examples: uint64(len(fed.TrainParts[k])), MaxBackoff: 100 * time.Millisecond, Metrics: metrics.NewClient(creg),
			NewTrainer: func(task *fedzippb.Task) (client.Trainer, error) {
				m, err := nn.ParseArch(task.GetModel(), int(task.GetInputDim()), int(task.GetClasses()))
				if err != nil {
					return nil, err
				}
				return client.DataTrainer{NN: nn.NewTrainer(m, int(task.GetBatchSize())), X: fed.Train.X, Y: fed.Train.Y, Index: fed.TrainParts[k]}, nil
			}}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := remote.Run(ctx, cfg); err != nil {
				t.Errorf("client %d: %v", k, err)
			}
		}()
	}
	wg.Wait()
	if v := node.FSM().View(); v.Phase != round.Finished {
		t.Fatalf("clients returned in phase %v", v.Phase)
	}

	// One refused update: an authenticated client submits for a round that
	// is not open.
	conn, err := transport.Dial(ctx, []string{lis.Addr().String()}, transport.ClientConfig{Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	reg1, err := fedzippb.NewCoordinatorClient(conn).Register(ctx, &fedzippb.RegisterRequest{JoinSecret: "s3cret"})
	if err != nil {
		t.Fatal(err)
	}
	authed, err := transport.Dial(ctx, []string{lis.Addr().String()}, transport.ClientConfig{Insecure: true,
		Credentials: transport.NewTokenCredentials(reg1.GetClientId(), reg1.GetToken())})
	if err != nil {
		t.Fatal(err)
	}
	defer authed.Close()
	_, err = transport.Upload(ctx, fedzippb.NewCoordinatorClient(authed),
		&fedzippb.UpdateHeader{ClientId: reg1.GetClientId(), Round: 77, ModelVersion: 2, Examples: 1}, []byte("x"), 0)
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("update for round 77: %v", err)
	}

	after := scrape(t, hs.URL)
	accepted := after["fedzip_updates_accepted_total"]
	for sample, want := range map[string]float64{
		"fedzip_round": 2, "fedzip_model_version": 2, `fedzip_round_phase{phase="finished"}`: 1,
		"fedzip_clients_registered": nclients + 1, "fedzip_clients_late": 0,
		`fedzip_updates_refused_total{reason="wrong_round"}`: 1,
		"fedzip_client_reported_train_seconds_count":         accepted,
		"fedzip_client_reported_download_seconds_count":      accepted,
		"fedzip_client_reported_encode_seconds_count":        accepted,
	} {
		if got, ok := after[sample]; !ok || got != want {
			t.Errorf("after: %s = %v (present %v), want %v", sample, got, ok, want)
		}
	}
	if accepted < 4 { // two rounds of at least MinClients
		t.Errorf("after: %v updates accepted, want at least 4", accepted)
	}
	// A client reports an upload's duration with its next update: every
	// update but each client's first.
	if got := after["fedzip_client_reported_upload_seconds_count"]; got < accepted-nclients || got == 0 {
		t.Errorf("after: %v upload durations reported for %v updates", got, accepted)
	}
	in := after[`fedzip_bytes_total{codec="topk1",direction="in"}`]
	out := after[`fedzip_bytes_total{codec="float32",direction="out"}`]
	dense := accepted * 4 * float64(len(model))
	if in <= 0 || in >= dense || out < accepted*4*float64(len(model)) {
		t.Errorf("after: bytes in %v (dense %v), out %v", in, dense, out)
	}
	if r := after["fedzip_compression_ratio"]; r <= 1 {
		t.Errorf("after: compression ratio %v for top-k 1%% updates", r)
	}
	for _, s := range []string{"fedzip_raft_applied_index", "fedzip_raft_commit_index", "fedzip_raft_last_log_index"} {
		if after[s] <= before[s] {
			t.Errorf("%s did not grow: %v then %v", s, before[s], after[s])
		}
	}
	if after["fedzip_raft_term"] < 1 {
		t.Errorf("raft term %v", after["fedzip_raft_term"])
	}
	// The round's traffic, as the dashboard reads it.
	if rt := svc.RoundTraffic(2); rt.Accepted < 2 || rt.BytesIn <= 0 || rt.BytesOut <= 0 || !(rt.TrainLoss > 0) || rt.DenseIn != int64(rt.Accepted)*4*int64(len(model)) {
		t.Errorf("round 2 traffic %+v", rt)
	}

	var clientAccepted float64
	for _, u := range clientURLs {
		c := scrape(t, u)
		clientAccepted += c["fedzip_client_updates_accepted_total"]
		if c["fedzip_client_round"] != 2 || c[`fedzip_client_bytes_total{codec="topk1",direction="out"}`] <= 0 ||
			c[`fedzip_client_bytes_total{codec="float32",direction="in"}`] <= 0 || c["fedzip_client_train_seconds_count"] < 1 ||
			c["fedzip_client_compression_ratio"] <= 1 {
			t.Errorf("client metrics did not move: round %v, out %v, in %v, train count %v, ratio %v", c["fedzip_client_round"],
				c[`fedzip_client_bytes_total{codec="topk1",direction="out"}`], c[`fedzip_client_bytes_total{codec="float32",direction="in"}`],
				c["fedzip_client_train_seconds_count"], c["fedzip_client_compression_ratio"])
		}
	}
	if clientAccepted != accepted {
		t.Errorf("clients count %v accepted updates, the node %v", clientAccepted, accepted)
	}
}

// TestRefusalReasons maps node errors and statuses to metric labels.
func TestRefusalReasons(t *testing.T) {
	st := func(c codes.Code) error { return status.Error(c, "x") }
	for _, tc := range []struct {
		cause, err error
		want       string
	}{
		{nil, st(codes.ResourceExhausted), "resource_exhausted"},
		{nil, st(codes.DataLoss), "data_loss"},
		{fmt.Errorf("%w: r", round.ErrLate), st(codes.FailedPrecondition), "late"},
		{fmt.Errorf("x: %w", round.ErrNotSelected), st(codes.FailedPrecondition), "not_selected"},
		{&NotLeaderError{Leader: "a"}, st(codes.Unavailable), "not_leader"},
		{fmt.Errorf("%w: crc", ErrBadUpdate), st(codes.InvalidArgument), "bad_update"},
		{fmt.Errorf("something new"), st(codes.Unavailable), "unavailable"},
	} {
		if got := refusalReason(tc.cause, tc.err); got != tc.want {
			t.Errorf("refusalReason(%v, %v) = %q, want %q", tc.cause, tc.err, got, tc.want)
		}
	}
}
