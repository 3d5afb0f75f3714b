package coordinator

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	"github.com/fedzip/fedzip/client"
	"github.com/fedzip/fedzip/client/remote"
	"github.com/fedzip/fedzip/dataset"
	"github.com/fedzip/fedzip/gradient"
	"github.com/fedzip/fedzip/internal/syncbuf"
	"github.com/fedzip/fedzip/metrics"
	"github.com/fedzip/fedzip/nn"
	"github.com/fedzip/fedzip/round"
	"github.com/fedzip/fedzip/transport"
	"github.com/fedzip/fedzip/transport/fedzippb"
)

const testDownloadCodec = "topk=0.1,bits=8"

// TestServiceDownloadDeltas runs rounds on a 3-node cluster with a
// download codec and downloads through the real gRPC service (bufconn):
// a client at version v gets a DELTA from v whose application reproduces
// the served client model bit for bit; one too far behind, holding nothing,
// or sending a garbage version gets the whole client model (FULL); the
// replicas would serve the same bytes; the task names the codec; and the
// bytes sent are counted as sent.
func TestServiceDownloadDeltas(t *testing.T) {
	const maxLag = 2
	fed, _ := dataset.Synthetic(1, 1, 4, 3)
	run := testRun(0)
	run.DownloadCodec, run.DownloadMaxLag = testDownloadCodec, maxLag
	// No deadline: on a starved machine a round could otherwise close at
	// its deadline on MinClients updates, and driveRound would drive
	// another, leaving a version whose model the test never held.
	run.Round.Deadline = 0
	nodes := inmemCluster(t, 3, run)
	node := leaderOf(t, nodes)
	waitFor(t, "init", func() bool { return node.FSM().View().Initialised })
	// Rounds go through whoever leads (elections churn on a starved
	// machine); node, which serves the downloads, may then be a follower
	// that lags: each model is read once node has applied its round.
	clients := registerClientsVia(t, func() *Node { return leaderOf(t, nodes) }, fed, 4)
	held := map[uint64][]float32{}
	m0, _ := node.FSM().ClientModel()
	held[0] = m0
	const rounds = 4
	for r := 1; r <= rounds; r++ {
		driveRound(t, func() []*Node { return nodes }, clients, fed)
		waitFor(t, "node to apply the round", func() bool { return node.FSM().Progress().Version >= uint64(r) })
		m, v := node.FSM().ClientModel()
		held[v] = m
	}
	n := len(m0)

	svc := NewService(node, transport.LimitsFor(n, 0))
	svc.LongPoll = 200 * time.Millisecond
	svc.Instrument(metrics.NewCoordinator(metrics.NewRegistry(), nil))
	srv := transport.NewServer(transport.ServerConfig{Insecure: true, Authenticator: svc, Limits: svc.Limits})
	fedzippb.RegisterCoordinatorServer(srv, svc)
	lis := bufconn.Listen(1 << 20)
	go srv.Serve(lis)
	defer transport.Shutdown(srv, time.Second)
	var me *simClient
	for _, c := range clients {
		if me == nil || c.id < me.id {
			me = c
		}
	}
	conn, err := transport.Dial(context.Background(), []string{"bufnet:0"}, transport.ClientConfig{Insecure: true,
		Credentials: transport.NewTokenCredentials(uint64(me.id), me.token),
		Dialer:      func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	api := fedzippb.NewCoordinatorClient(conn)
	ctx := context.Background()

	task, err := api.GetTask(ctx, &fedzippb.GetTaskRequest{ClientId: uint64(me.id)})
	if err != nil && !transport.IsNoTask(err) {
		t.Fatal(err)
	}
	if err == nil && task.GetDownloadCodec() != testDownloadCodec {
		t.Fatalf("task download codec %q", task.GetDownloadCodec())
	}
	current, v := node.FSM().ClientModel()
	if v != rounds {
		t.Fatalf("version %d after %d rounds", v, rounds)
	}
	lim := transport.LimitsFor(n, 0)
	var sent, downloads int64
	for _, tc := range []struct {
		have  uint64
		delta bool
	}{
		{v, true}, {v - 1, true}, {v - maxLag, true}, {v - maxLag - 1, false}, {0, false},
		{v + 1, false}, {1 << 40, false}, {math.MaxUint64, false},
	} {
		// have_version 0 without has_model is "none": the whole model.
		h, body, err := transport.DownloadModel(ctx, api, &fedzippb.DownloadRequest{ClientId: uint64(me.id), HaveVersion: tc.have, WantVersion: v, HasModel: tc.have != 0}, lim, nil)
		if err != nil {
			t.Fatalf("have %d: %v", tc.have, err)
		}
		sent += int64(len(body))
		downloads++
		if h.GetVersion() != v {
			t.Fatalf("have %d: version %d, want %d", tc.have, h.GetVersion(), v)
		}
		if !tc.delta {
			if h.GetKind() != fedzippb.ModelKind_MODEL_KIND_FULL || h.GetBaseVersion() != 0 || !slices.Equal(decodeFloat32s(body), current) {
				t.Fatalf("have %d: kind %v base %d, %d bytes: want the whole client model", tc.have, h.GetKind(), h.GetBaseVersion(), len(body))
			}
			continue
		}
		if h.GetKind() != fedzippb.ModelKind_MODEL_KIND_DELTA || h.GetBaseVersion() != tc.have {
			t.Fatalf("have %d: kind %v base %d", tc.have, h.GetKind(), h.GetBaseVersion())
		}
		if h.ModelCrc32C == nil || h.GetModelCrc32C() != gradient.ModelCRC(current) {
			t.Fatalf("have %d: model crc32c %v, want %08x", tc.have, h.ModelCrc32C, gradient.ModelCRC(current))
		}
		m := slices.Clone(held[tc.have])
		got, err := gradient.ApplyDownload(m, int(tc.have), body, gradient.Limits{MaxParams: n})
		if err != nil || uint64(got) != v || !slices.Equal(m, current) {
			t.Fatalf("have %d: the delta leads to version %d (%v), bit-identical %v", tc.have, got, err, slices.Equal(m, current))
		}
		if tc.have < v && len(body) >= 4*n {
			t.Errorf("have %d: a delta of %d bytes, not smaller than the %d-byte model", tc.have, len(body), 4*n)
		}
		// Every replica serves the same bytes.
		for _, nd := range nodes {
			waitFor(t, "the replica to catch up", func() bool { return nd.FSM().Progress().Version == v })
			if d, _ := nd.FSM().ServeDownload(tc.have, tc.have != 0); !bytes.Equal(d.Payload, body) {
				t.Fatalf("have %d: replica %s serves other bytes", tc.have, nd.cfg.ID)
			}
		}
	}
	s, err := api.Download(ctx, &fedzippb.DownloadRequest{ClientId: uint64(me.id), HaveVersion: v - 1, WantVersion: 42})
	if err == nil {
		_, err = s.Recv()
	}
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("download of a missing version: %v", err)
	}
	rt := svc.RoundTraffic(node.FSM().Progress().Round)
	if rt.BytesOut != sent || int64(rt.Downloads) != downloads {
		t.Fatalf("traffic: %d bytes in %d downloads counted, %d in %d sent", rt.BytesOut, rt.Downloads, sent, downloads)
	}
}

// TestClientRestartKeepsDownloading runs the real client runtime against
// a node with a download codec (and with the lattice codec, one client's
// replica file damaged while it is stopped), stops every client after round 2 and
// starts them again on the same state directories: they finish the run,
// and download only deltas: before the restart from the initial model
// they rebuilt, after it from the model they kept on disk.
func TestClientRestartKeepsDownloading(t *testing.T) {
	for _, codec := range []string{testDownloadCodec, "lattice"} {
		t.Run(codec, func(t *testing.T) { clientRestartKeepsDownloading(t, codec) })
	}
}

func clientRestartKeepsDownloading(t *testing.T, codec string) {
	const nclients, rounds = 3, 4
	fed, _ := dataset.Synthetic(1, 1, nclients, 3)
	run := testRun(rounds)
	run.DownloadCodec, run.UploadCodec = codec, "topk1"
	node := leaderOf(t, inmemCluster(t, 1, run))
	waitFor(t, "init", func() bool { return node.FSM().View().Initialised })
	model, _ := node.FSM().Model()
	svc := NewService(node, transport.LimitsFor(len(model), 0))
	svc.LongPoll = 200 * time.Millisecond
	srv := transport.NewServer(transport.ServerConfig{Insecure: true, Authenticator: svc, Limits: svc.Limits})
	fedzippb.RegisterCoordinatorServer(srv, svc)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(lis)
	defer transport.Shutdown(srv, time.Second)

	dirs := make([]string, nclients)
	for k := range dirs {
		dirs[k] = t.TempDir()
	}
	// runClients runs every client until ctx ends or the run is over and
	// returns their metrics registries.
	runClients := func(ctx context.Context) []*prometheus.Registry {
		var wg sync.WaitGroup
		regs := make([]*prometheus.Registry, nclients)
		for k := range nclients {
			regs[k] = metrics.NewRegistry()
			cfg := remote.Config{Addrs: []string{lis.Addr().String()}, Insecure: true, Name: fmt.Sprintf("c%d", k), JoinSecret: "s3cret",
				StateDir: dirs[k], Examples: uint64(len(fed.TrainParts[k])), MaxBackoff: 100 * time.Millisecond, Metrics: metrics.NewClient(regs[k]),
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
				if _, err := remote.Run(ctx, cfg); err != nil && ctx.Err() == nil {
					t.Errorf("client %d: %v", k, err)
				}
			}()
		}
		wg.Wait()
		return regs
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	first, stop := context.WithCancel(ctx)
	go func() {
		for first.Err() == nil && node.FSM().Progress().Version < 2 {
			time.Sleep(5 * time.Millisecond)
		}
		stop()
	}()
	before := runClients(first)
	stop()
	if v := node.FSM().Progress(); v.Version < 2 || v.Phase == round.Finished {
		t.Fatalf("clients stopped at version %d, phase %v", v.Version, v.Phase)
	}
	if codec == "lattice" {
		// A damaged replica file is discarded: the client starts again
		// from the initial model, and gets a sync from version 0.
		path := filepath.Join(dirs[0], "replica.bin")
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		b[len(b)/2] ^= 0x40
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	after := runClients(ctx)
	if v := node.FSM().Progress(); v.Phase != round.Finished || v.Version != rounds {
		t.Fatalf("after the restart: phase %v, version %d", v.Phase, v.Version)
	}
	var full, delta float64
	for k := range nclients {
		b := gather(t, before[k])
		full += b[`fedzip_client_bytes_total{codec="float32",direction="in"}`]
		a := gather(t, after[k])
		if got := a[`fedzip_client_bytes_total{codec="float32",direction="in"}`]; got != 0 {
			t.Errorf("client %d downloaded %v bytes of whole models after its restart", k, got)
		}
		delta += a[fmt.Sprintf(`fedzip_client_bytes_total{codec=%q,direction="in"}`, codec)]
	}
	if full != 0 || delta == 0 {
		t.Fatalf("whole-model bytes before the restart %v, delta bytes after %v", full, delta)
	}
}

// gather returns a registry's samples by name and labels.
func gather(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	hs := httptest.NewServer(metrics.Handler(reg))
	defer hs.Close()
	return scrape(t, hs.URL)
}

// hookedDownload is a Download stream whose first Send runs hook before
// it returns: what happens while the model is on its way.
type hookedDownload struct {
	fedzippb.Coordinator_DownloadServer
	ctx  context.Context
	hook func()
}

func (s *hookedDownload) Context() context.Context { return s.ctx }

func (s *hookedDownload) Send(*fedzippb.ModelChunk) error {
	if s.hook != nil {
		s.hook()
		s.hook = nil
	}
	return nil
}

// TestDownloadCountsInTheRoundServed serves a download in round 1 that is
// still being sent when round 1 closes and round 2 opens: it counts in
// round 1's traffic, where the round log reports it, not in round 2's.
// (Counted in the round open when the send ended, a download in flight
// across an abort went to the round before, already logged.)
func TestDownloadCountsInTheRoundServed(t *testing.T) {
	fed, _ := dataset.Synthetic(1, 1, 3, 3)
	run := testRun(0)
	run.DownloadCodec = testDownloadCodec
	nodes := inmemCluster(t, 1, run)
	node := leaderOf(t, nodes)
	waitFor(t, "init", func() bool { return node.FSM().View().Initialised })
	clients := registerClients(t, node, fed, 3)
	model, _ := node.FSM().Model()
	svc := NewService(node, transport.LimitsFor(len(model), 0))
	svc.Instrument(metrics.NewCoordinator(metrics.NewRegistry(), nil))
	waitFor(t, "round 1 to open", func() bool {
		for id := range clients {
			node.touch(id)
		}
		v := node.FSM().Progress()
		return v.Round == 1 && v.Phase == round.Collecting
	})
	var id round.ClientID
	for c := range clients {
		id = c
	}
	ctx := transport.ContextWithClientID(context.Background(), uint64(id))
	stream := &hookedDownload{ctx: ctx, hook: func() {
		driveRound(t, func() []*Node { return nodes }, clients, fed)
		waitFor(t, "round 2 to open", func() bool {
			for id := range clients {
				node.touch(id)
			}
			return node.FSM().Progress().Round == 2
		})
	}}
	if err := svc.Download(&fedzippb.DownloadRequest{ClientId: uint64(id)}, stream); err != nil {
		t.Fatal(err)
	}
	if r1, r2 := svc.RoundTraffic(1), svc.RoundTraffic(2); r1.Downloads < 1 || r1.BytesOut < int64(4*len(model)) || r2.Downloads != 0 {
		t.Fatalf("round 1: %d downloads of %d bytes; round 2: %d downloads: want the %d-byte model in round 1", r1.Downloads, r1.BytesOut, r2.Downloads, 4*len(model))
	}
}

// servedLog is the Coordinator service with what it serves recorded:
// the request and the header of every download, and, when tamper is set,
// every task's init_crc32c flipped (a client whose initial model differs).
type servedLog struct {
	*Service
	tamper bool
	mu     sync.Mutex
	served []servedDownload
}

// servedDownload is one download a client asked for and what it got.
type servedDownload struct {
	client   uint64
	hasModel bool
	have     uint64
	kind     fedzippb.ModelKind
	base, to uint64
	total    uint64
}

func (s *servedLog) GetTask(ctx context.Context, req *fedzippb.GetTaskRequest) (*fedzippb.Task, error) {
	t, err := s.Service.GetTask(ctx, req)
	if err == nil && s.tamper && t.InitCrc32C != nil {
		crc := ^t.GetInitCrc32C()
		t.InitCrc32C = &crc
	}
	return t, err
}

func (s *servedLog) Download(req *fedzippb.DownloadRequest, stream fedzippb.Coordinator_DownloadServer) error {
	return s.Service.Download(req, &headerTap{Coordinator_DownloadServer: stream, tap: func(h *fedzippb.ModelHeader) {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.served = append(s.served, servedDownload{client: req.GetClientId(), hasModel: req.GetHasModel(), have: req.GetHaveVersion(),
			kind: h.GetKind(), base: h.GetBaseVersion(), to: h.GetVersion(), total: h.GetTotalBytes()})
	}})
}

// headerTap passes a download stream through and shows tap its header.
type headerTap struct {
	fedzippb.Coordinator_DownloadServer
	tap func(*fedzippb.ModelHeader)
}

func (s *headerTap) Send(c *fedzippb.ModelChunk) error {
	if h := c.GetHeader(); h != nil {
		s.tap(h)
	}
	return s.Coordinator_DownloadServer.Send(c)
}

// readHeldModel reads a client's held-model file (client/remote's
// model.bin: magic, version, count, float32s, CRC-32C).
func readHeldModel(t *testing.T, path string) ([]float32, uint64) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) < 20 || string(b[:4]) != "FZHM" || transport.Checksum(b[:len(b)-4]) != binary.LittleEndian.Uint32(b[len(b)-4:]) {
		t.Fatalf("%s: not a held-model file", path)
	}
	m, err := gradient.DecodeFloat32s(nil, b[16:len(b)-4])
	if err != nil {
		t.Fatal(err)
	}
	return m, binary.LittleEndian.Uint64(b[4:])
}

// TestFirstContactCostsNothing runs the real client runtime against a
// single-node coordinator over gRPC on 127.0.0.1, with the STC download
// codec and with the lattice codec (lag 1, so that clients further behind
// get syncs from version 0). A client that holds nothing rebuilds the
// initial model from the task's init seed: its first download asks for
// the deltas since version 0 and gets a DELTA (empty at version 0), no
// download is ever a whole model, and what it ends up holding is the
// coordinator's client model bit for bit. With the task's init checksum
// tampered with, the client logs why it cannot hold the initial model,
// downloads the whole model first (with lattice, every time: it cannot
// apply a sync from version 0), and still trains to the end of the run.
func TestFirstContactCostsNothing(t *testing.T) {
	for _, tc := range []struct {
		codec  string
		lag    int
		tamper bool
	}{{"stc", 0, false}, {"stc", 0, true}, {"lattice", 1, false}, {"lattice", 1, true}} {
		t.Run(fmt.Sprintf("%s,tampered=%v", tc.codec, tc.tamper), func(t *testing.T) {
			const nclients, rounds = 5, 5
			lattice := tc.codec == "lattice"
			fed, _ := dataset.Synthetic(1, 1, nclients, 3)
			run := testRun(rounds)
			run.DownloadCodec, run.DownloadMaxLag, run.UploadCodec = tc.codec, tc.lag, "topk1"
			node := leaderOf(t, inmemCluster(t, 1, run))
			waitFor(t, "init", func() bool { return node.FSM().View().Initialised })
			svc := NewService(node, transport.LimitsFor(node.FSM().Params(), 0))
			svc.LongPoll = 200 * time.Millisecond
			rec := &servedLog{Service: svc, tamper: tc.tamper}
			srv := transport.NewServer(transport.ServerConfig{Insecure: true, Authenticator: svc, Limits: svc.Limits})
			fedzippb.RegisterCoordinatorServer(srv, rec)
			lis, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			go srv.Serve(lis)
			defer transport.Shutdown(srv, time.Second)

			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			var logs syncbuf.Buffer
			dirs := make([]string, nclients)
			var wg sync.WaitGroup
			for k := range nclients {
				dirs[k] = t.TempDir()
				cfg := remote.Config{Addrs: []string{lis.Addr().String()}, Insecure: true, Name: fmt.Sprintf("c%d", k), JoinSecret: "s3cret",
					StateDir: dirs[k], Examples: uint64(len(fed.TrainParts[k])), MaxBackoff: 100 * time.Millisecond,
					Logger: slog.New(slog.NewTextHandler(&logs, nil)),
					NewTrainer: func(task *fedzippb.Task) (client.Trainer, error) {
						m, err := remote.TaskModel(task)
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
			if v := node.FSM().Progress(); v.Phase != round.Finished || v.Version != rounds {
				t.Fatalf("phase %v, version %d\n%s", v.Phase, v.Version, logs.String())
			}
			rec.mu.Lock()
			served := slices.Clone(rec.served)
			rec.mu.Unlock()
			first := map[uint64]servedDownload{}
			fromZero := 0 // lattice syncs from version 0 to a client that held a later one
			for _, d := range served {
				if _, ok := first[d.client]; !ok {
					first[d.client] = d
				}
				full := d.kind != fedzippb.ModelKind_MODEL_KIND_DELTA
				switch {
				case !tc.tamper && full:
					t.Errorf("client %d, from version %d (has_model %v): a %v download", d.client, d.have, d.hasModel, d.kind)
				case tc.tamper && lattice && (!full || d.hasModel):
					t.Errorf("client %d without the initial model: a %v download from version %d (has_model %v)", d.client, d.kind, d.have, d.hasModel)
				case !full && d.base != d.have && d.base != 0:
					t.Errorf("client %d at version %d: a delta from version %d", d.client, d.have, d.base)
				case !full && d.base == 0 && d.have > 0:
					fromZero++
				}
			}
			if len(first) < 3 {
				t.Fatalf("%d clients downloaded, want at least 3", len(first))
			}
			if lattice && !tc.tamper && fromZero == 0 {
				t.Errorf("no client was sent a sync from version 0: the test does not cover it")
			}
			for id, d := range first {
				switch {
				case !tc.tamper && (!d.hasModel || d.have != 0 || d.kind != fedzippb.ModelKind_MODEL_KIND_DELTA || d.base != 0):
					t.Errorf("client %d: first download %+v, want a DELTA from version 0", id, d)
				case tc.tamper && (d.hasModel || d.kind != fedzippb.ModelKind_MODEL_KIND_FULL):
					t.Errorf("client %d: first download %+v with a tampered init checksum, want the whole model", id, d)
				}
			}
			if tc.tamper != strings.Contains(logs.String(), "cannot hold the initial model") {
				t.Errorf("tampered %v, the log:\n%s", tc.tamper, logs.String())
			}
			if lattice && tc.tamper {
				return // the clients hold no replica
			}
			// What each client holds is the coordinator's client model:
			// the deltas since then lead to it bit for bit.
			want, v := node.FSM().ClientModel()
			init := make([]float32, len(want))
			nw, _ := run.Network()
			nw.Init(init, run.InitSeed)
			checked := 0
			for k, dir := range dirs {
				file := filepath.Join(dir, "model.bin")
				if lattice {
					file = filepath.Join(dir, "replica.bin")
				}
				if _, err := os.Stat(file); errors.Is(err, os.ErrNotExist) {
					continue // never selected (or only at version 0)
				}
				checked++
				var (
					got  int
					err  error
					m    []float32
					have uint64
				)
				if lattice {
					b, e := os.ReadFile(file)
					if e != nil {
						t.Fatal(e)
					}
					rep, e := gradient.ReadReplica(init, b, gradient.Limits{MaxParams: len(init)})
					if e != nil {
						t.Fatalf("client %d: replica file: %v", k, e)
					}
					have = uint64(rep.Version())
					d, _ := node.FSM().ServeDownload(have, true)
					got, err = rep.Apply(d.Payload, gradient.Limits{MaxParams: len(init)})
					m = rep.Model()
				} else {
					m, have = readHeldModel(t, file)
					d, _ := node.FSM().ServeDownload(have, true)
					if !d.Delta {
						t.Fatalf("client %d at version %d: no delta to version %d", k, have, v)
					}
					got, err = gradient.ApplyDownload(m, int(have), d.Payload, gradient.Limits{MaxParams: len(m)})
				}
				if err != nil || uint64(got) != v || !slices.Equal(m, want) {
					t.Fatalf("client %d: from its version %d to %d (%v): bit-identical %v", k, have, got, err, slices.Equal(m, want))
				}
			}
			if checked < 3 {
				t.Fatalf("%d clients hold a model, want at least 3", checked)
			}
		})
	}
}
