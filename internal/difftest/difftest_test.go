package difftest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/fedzip/fedzip/client"
	"github.com/fedzip/fedzip/client/remote"
	"github.com/fedzip/fedzip/coordinator"
	"github.com/fedzip/fedzip/dataset"
	"github.com/fedzip/fedzip/gradient"
	"github.com/fedzip/fedzip/membership"
	"github.com/fedzip/fedzip/nn"
	"github.com/fedzip/fedzip/round"
	"github.com/fedzip/fedzip/runspec"
	"github.com/fedzip/fedzip/sim"
	"github.com/fedzip/fedzip/transport"
	"github.com/fedzip/fedzip/transport/fedzippb"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// clients is the number of clients of every run: the simulator's virtual
// clients, and the client runtimes that register with the coordinator.
const clients = 6

// run is the run both drivers execute: 6 clients, 3 per round, 3 rounds
// on synthetic data, with the given strategy and codecs; seed shifts every
// seed of the run.
func run(strategy, upload, download string, seed uint64) coordinator.RunConfig {
	return coordinator.RunConfig{Spec: runspec.Spec{Model: "mlp:16", InputDim: dataset.SyntheticDim, Classes: dataset.SyntheticClasses, InitSeed: 3 + seed,
		Strategy: strategy, Round: round.Config{PerRound: 3, MinClients: clients, Rounds: 3, Seed: 11 + seed},
		TaskSeed: 7 + seed, LocalEpochs: 2, BatchSize: 10, LR: 0.05, Momentum: 0.5,
		UploadCodec: upload, DownloadCodec: download}}
}

// data is the federated data set both drivers train on: the coordinator's
// client with ID sim.ClientID(k) holds the simulator's Parts[k].
func data(t *testing.T, seed uint64) sim.Data {
	t.Helper()
	d, err := dataset.Spec{Dataset: "synthetic", Clients: clients, SyntheticAlpha: 0.5, SyntheticBeta: 0.5, Seed: 2 + seed}.Load()
	if err != nil {
		t.Fatal(err)
	}
	return sim.DataOf(d)
}

// TestSimulationAndClusterAgree drives the same run through sim.Run and
// through a coordinator with client runtimes, and requires the same
// global model bit for bit: the same selection, task seeds, local
// training, codecs with their client state, decoding of the uploads
// (sparse for a compressed codec, gradient.UploadDecoder in both) and
// aggregation order, whatever order the uploads reach the coordinator in.
func TestSimulationAndClusterAgree(t *testing.T) {
	for _, tc := range []struct {
		strategy, upload, download string
		seed                       uint64
		model                      string // on the synthetic data as 1×6×10 images ("": mlp:16)
		lag                        int    // DownloadMaxLag (0: the default)
	}{
		{"fedavg", "stcm", "", 0, "", 0},
		{"fedavg", "stcm", "", 1000, "", 0}, // seeds nobody picked
		{"fedavg", "none", "", 0, "", 0},
		{"fedavg", "topk=0.05,bits=4,ef=on", "stc", 0, "", 0},
		// Lattice syncs: composed deltas, and with a lag of 1 syncs from
		// version 0 for clients further behind.
		{"fedavg", "topk=0.05,bits=4,ef=on", "lattice", 0, "", 0},
		{"fedavg", "stcm", "lattice", 0, "", 1},
		{"fedadam", "stcm", "", 0, "", 0}, // server state across rounds
		// The input quorum needs the model's shapes in both drivers.
		{"fedavgm,lr=3,momentum=0,anneal=200,quorum=2,quorum-by=input", "stcw", "lattice", 0, "", 0},
		{"median", "topk1", "", 0, "", 0}, // sparse updates densified
		{"fedavg", "stcm", "", 0, "conv:4x3,pool:2,fc:10", 0},
	} {
		t.Run(fmt.Sprintf("%s,up=%s,down=%s,seed+%d,%s,lag=%d", tc.strategy, tc.upload, tc.download, tc.seed, tc.model, tc.lag), func(t *testing.T) {
			rc := run(tc.strategy, tc.upload, tc.download, tc.seed)
			rc.DownloadMaxLag = tc.lag
			d := data(t, tc.seed)
			if tc.model != "" {
				shape := nn.Shape{C: 1, H: 6, W: dataset.SyntheticDim / 6}
				rc.Model, rc.InputShape = tc.model, shape
				d.Train.Shape, d.Test.Shape = shape, shape
			}
			simHash, simModel := simulate(t, rc, d)
			clusterHash, clusterModel := cluster(t, rc, d)
			if simHash != clusterHash {
				diff := 0
				for i := range simModel {
					if math.Float32bits(simModel[i]) != math.Float32bits(clusterModel[i]) {
						diff++
					}
				}
				t.Fatalf("the simulation ends with model %x, the cluster with %x: %d of %d parameters differ", simHash[:8], clusterHash[:8], diff, len(simModel))
			}
			t.Logf("both end with model %s", hex.EncodeToString(simHash[:8]))
		})
	}
}

// hash is the model hash the coordinator reports (FSM.ModelHash): SHA-256
// of the parameters as little-endian float32.
func hash(p []float32) [32]byte { return sha256.Sum256(gradient.AppendFloat32s(nil, p)) }

// simulate runs rc in the simulator and returns the global model.
func simulate(t *testing.T, rc coordinator.RunConfig, d sim.Data) ([32]byte, []float32) {
	t.Helper()
	model, err := rc.Network()
	if err != nil {
		t.Fatal(err)
	}
	init := make([]float32, model.NumParams())
	model.Init(init, rc.InitSeed)
	// One run spec drives both: the simulator takes the coordinator's.
	cfg := sim.Config{Spec: rc.Spec, Workers: 2}
	res, err := sim.Run(context.Background(), cfg, model, init, d, nil)
	if err != nil {
		t.Fatal(err)
	}
	if hash(res.Model) == hash(init) {
		t.Fatal("the simulation did not move the model")
	}
	return hash(res.Model), res.Model
}

// cluster runs rc on a single-node coordinator, Raft on disk and gRPC on
// 127.0.0.1, with one client runtime per part of d, and returns the
// global model once the run is finished.
func cluster(t *testing.T, rc coordinator.RunConfig, d sim.Data) ([32]byte, []float32) {
	t.Helper()
	v, hash, global := runCluster(t, rc, d, clusterOpts{examples: 1 << 20}) // at least its examples: the weights are not capped
	if v.Config.AggregateOrder != coordinator.OrderSelection {
		t.Fatalf("the leader committed the run with aggregate order %q", v.Config.AggregateOrder)
	}
	return hash, global
}

// clusterOpts vary runCluster: the examples each client declares, a
// wrapper of each client's partTrainer (nil: the partTrainer), and a
// function called with every new version's progress while the run goes.
type clusterOpts struct {
	examples uint64
	maxAbs   float32 // remote.Config.MaxAbsParam (0: its default)
	trainer  func(p partTrainer, id *atomic.Uint64) client.Trainer
	watch    func(coordinator.Progress)
}

// runCluster runs rc on a single-node coordinator and six client runtimes
// and returns the final progress, the model hash and the global model.
func runCluster(t *testing.T, rc coordinator.RunConfig, d sim.Data, o clusterOpts) (coordinator.Progress, [32]byte, []float32) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	// Rounds open only once all six clients are alive (MinClients is
	// clients; a client is alive while it polls, or while gossip vouches
	// for it, which the claims below stand in for), so that every round
	// selects among the same candidates as the simulator's.
	var (
		mu     sync.Mutex
		claims []coordinator.ClientClaim
	)
	alive := func() []coordinator.ClientClaim {
		mu.Lock()
		defer mu.Unlock()
		if len(claims) < clients {
			return nil
		}
		return claims
	}
	node, err := coordinator.Open(coordinator.Config{ID: "n1", Dir: filepath.Join(t.TempDir(), "n1"), RaftAddr: "127.0.0.1:0", Bootstrap: true,
		Run: &rc, JoinSecret: "s3cret", GRPCAddr: addr, Tick: 10 * time.Millisecond, Alive: alive})
	if err != nil {
		lis.Close()
		t.Fatal(err)
	}
	defer node.Close()
	model, err := rc.Network()
	if err != nil {
		t.Fatal(err)
	}
	svc := coordinator.NewService(node, transport.LimitsFor(model.NumParams(), 0))
	srv := transport.NewServer(transport.ServerConfig{Insecure: true, Authenticator: svc, Limits: svc.Limits, PublicMethods: coordinator.ClusterMethods})
	fedzippb.RegisterCoordinatorServer(srv, svc)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	defer func() {
		transport.Shutdown(srv, time.Second)
		<-served
	}()

	watchCtx, stopWatch := context.WithCancel(context.Background())
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		var version uint64
		for {
			v := node.FSM().Progress()
			if v.Version > version && o.watch != nil {
				version = v.Version
				o.watch(v)
			}
			select {
			case <-watchCtx.Done():
				return
			case <-v.Changed:
			}
		}
	}()
	defer func() {
		stopWatch()
		<-watched
	}()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	errs := make(chan error, clients)
	for k := range clients {
		var id atomic.Uint64
		cfg := remote.Config{Addrs: []string{addr}, Insecure: true, Name: fmt.Sprintf("c%d", k), JoinSecret: "s3cret",
			StateDir: filepath.Join(t.TempDir(), fmt.Sprint(k)), Examples: o.examples, MaxBackoff: 200 * time.Millisecond, MaxAbsParam: o.maxAbs,
			OnIdentity: func(cid uint64, token string) {
				id.Store(cid)
				name := fmt.Sprintf("c%d", k)
				mu.Lock()
				claims = append(claims, coordinator.ClientClaim{ID: round.ClientID(cid), Member: name, Proof: membership.TokenProof(token, name, cid)})
				mu.Unlock()
			},
			NewTrainer: func(task *fedzippb.Task) (client.Trainer, error) {
				m, err := remote.TaskModel(task)
				if err != nil {
					return nil, err
				}
				p := partTrainer{nn: nn.NewTrainer(m, int(task.GetBatchSize())), data: d, id: &id}
				if o.trainer != nil {
					return o.trainer(p, &id), nil
				}
				return p, nil
			}}
		go func() {
			_, err := remote.Run(ctx, cfg)
			errs <- err
		}()
	}
	for range clients {
		if err := <-errs; err != nil {
			t.Fatalf("client: %v", err)
		}
	}
	stopWatch()
	<-watched
	v := node.FSM().Progress()
	if v.Phase != round.Finished || v.Version != uint64(rc.Round.Rounds) {
		t.Fatalf("the run ended in phase %v at version %d, want %d rounds", v.Phase, v.Version, rc.Round.Rounds)
	}
	global, _ := node.FSM().Model()
	return v, node.FSM().ModelHash(), global
}

// partTrainer trains on the part of the data that the simulator gives the
// client with the runtime's ID (sim.ClientID(k) holds Parts[k]).
type partTrainer struct {
	nn   *nn.Trainer
	data sim.Data
	id   *atomic.Uint64
}

func (p partTrainer) Train(ctx context.Context, params []float32, task client.Task) (client.Result, error) {
	id := round.ClientID(p.id.Load())
	for k, part := range p.data.Parts {
		if sim.ClientID(k) == id {
			return client.DataTrainer{NN: p.nn, X: p.data.Train.X, Y: p.data.Train.Y, Index: part}.Train(ctx, params, task)
		}
	}
	return client.Result{}, fmt.Errorf("client %d holds no part of the data", id)
}
