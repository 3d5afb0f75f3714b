package sim

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"testing"

	"github.com/fedzip/fedzip/client"
	"github.com/fedzip/fedzip/gradient"
	"github.com/fedzip/fedzip/nn"
	"github.com/fedzip/fedzip/round"
	"github.com/fedzip/fedzip/runspec"
	"github.com/fedzip/fedzip/secagg"
)

// TestDownloadBytes checks the per-round byte counts: dense downloads cost
// the dense model per client; a sparse download codec costs less, and
// nothing in the first round, where every client already holds the initial
// model (rebuilt from the run's seed).
func TestDownloadBytes(t *testing.T) {
	data, model := synthetic(t, 20)
	init := make([]float32, model.NumParams())
	model.Init(init, 1)
	dense := 4 * int64(model.NumParams())
	for _, tc := range []struct {
		codec   string
		smaller bool // than dense after the first round
	}{
		{"", false},
		{"none", false},
		{"topk=0.1,bits=8", true},
		{"topk=0.05,bits=ternary", true},
		{"bits=16", true},
	} {
		t.Run(tc.codec, func(t *testing.T) {
			cfg := config(6, 0.5)
			cfg.Workers = 2
			cfg.DownloadCodec = tc.codec
			res, err := Run(context.Background(), cfg, model, init, data, nil)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range res.Rounds {
				want := int64(m.Clients) * dense
				if m.DenseDownloadBytes != want || m.DenseUploadBytes != want {
					t.Fatalf("round %d: dense bytes %d up, %d down, want %d", m.Round, m.DenseUploadBytes, m.DenseDownloadBytes, want)
				}
				switch {
				case !tc.smaller && m.DownloadBytes != want:
					t.Fatalf("round %d: %d bytes downloaded, want the dense %d", m.Round, m.DownloadBytes, want)
				case tc.smaller && m.Round == 1 && m.DownloadBytes != 0:
					t.Fatalf("round 1: %d bytes downloaded, want none (the clients hold the initial model)", m.DownloadBytes)
				case tc.smaller && m.Round > 1 && m.DownloadBytes >= want:
					t.Fatalf("round %d: %d bytes downloaded, dense is %d", m.Round, m.DownloadBytes, want)
				}
				if tc.smaller != m.GlobalEvaluated && m.Round == len(res.Rounds) {
					t.Fatalf("last round: global model evaluated %v", m.GlobalEvaluated)
				}
			}
		})
	}
}

// TestDownloadsApply replays what every client is sent: a client that
// applies its downloads (gradient.ApplyDownload from the version it held)
// holds the model the server says clients train from, bit for bit, and the
// metrics count exactly those bytes. Clients that wait more than MaxLag
// rounds get the full model. A client starts from the initial model when
// the run's InitSeed builds it (seeded), and from nothing, with a full
// model as its first download, when it does not.
func TestDownloadsApply(t *testing.T) {
	data, model := synthetic(t, 12)
	init := make([]float32, model.NumParams())
	model.Init(init, 4)
	for _, tc := range []struct {
		codec  string
		seeded bool
	}{{"topk=0.05,bits=ternary", true}, {"topk=0.05,bits=ternary", false}, {"randk=0.1,bits=8,stochastic=on", true}, {"topk=0.2,entropy=zstd", false}} {
		codec := tc.codec
		t.Run(fmt.Sprintf("%s/seeded=%v", codec, tc.seeded), func(t *testing.T) {
			clients := map[round.ClientID][]float32{}
			versions := map[round.ClientID]int{}
			var sent []int64
			var full, deltas int
			cfg := config(12, 0.25)
			cfg.DownloadCodec, cfg.DownloadMaxLag, cfg.Workers = codec, 3, 2
			if tc.seeded {
				cfg.InitSeed = 4
			}
			firstFull := 0
			cfg.downloadHook = func(id round.ClientID, have int, msg []byte, want []float32) {
				m, ok := clients[id]
				switch {
				case ok && have != versions[id]:
					t.Fatalf("client %d: the server thinks it holds version %d, it holds %d", id, have, versions[id])
				case !ok && tc.seeded && have != 0, !ok && !tc.seeded && have != -1:
					t.Fatalf("client %d: first download from version %d", id, have)
				case !ok && tc.seeded:
					m = slices.Clone(init)
				case !ok:
					m = make([]float32, len(init))
				}
				// Byte 5 of a message is its flags (see package gradient).
				isFull := len(msg) > 5 && msg[5]&gradient.FlagFull != 0
				v, err := gradient.ApplyDownload(m, have, msg, gradient.Limits{})
				if err != nil {
					t.Fatalf("client %d from version %d: %v", id, have, err)
				}
				if isFull {
					full++
					if !ok {
						firstFull++
					}
					// Holding version 0, a client gets the deltas while
					// the server keeps them all.
					if !ok && tc.seeded && v <= cfg.DownloadMaxLag {
						t.Fatalf("client %d: its first download, at version %d, is the full model", id, v)
					}
				} else if len(msg) > 0 {
					deltas++
				}
				for i := range m {
					if math.Float32bits(m[i]) != math.Float32bits(want[i]) {
						t.Fatalf("client %d at version %d: parameter %d = %v, the server's client model has %v", id, v, i, m[i], want[i])
					}
				}
				clients[id], versions[id] = m, v
				sent = append(sent, int64(len(msg)))
			}
			res, err := Run(context.Background(), cfg, model, init, data, nil)
			if err != nil {
				t.Fatal(err)
			}
			var total, counted int64
			for _, n := range sent {
				total += n
			}
			for _, m := range res.Rounds {
				counted += m.DownloadBytes
			}
			if total != counted || total == 0 {
				t.Fatalf("clients received %d bytes, metrics count %d", total, counted)
			}
			if tc.seeded && firstFull == len(clients) || !tc.seeded && firstFull != len(clients) {
				t.Fatalf("%d of %d clients got a full model first", firstFull, len(clients))
			}
			if full <= firstFull || deltas == 0 {
				t.Fatalf("%d full models (%d first) to %d clients, %d delta streams: the test does not cover both", full, firstFull, len(clients), deltas)
			}
			if slices.Equal(res.ClientModel, res.Model) {
				t.Fatal("a lossy download codec gives the clients the global model exactly")
			}
		})
	}
}

func TestDownloadValidates(t *testing.T) {
	data, model := synthetic(t, 4)
	init := make([]float32, model.NumParams())
	for _, c := range []struct{ codec string }{{"stcm"}, {"topk=2"}, {"nonsense"}} {
		cfg := config(1, 1)
		cfg.DownloadCodec = c.codec
		if _, err := Run(context.Background(), cfg, model, init, data, nil); err == nil {
			t.Errorf("download codec %q accepted", c.codec)
		}
	}
	cfg := config(1, 1)
	cfg.DownloadCodec, cfg.DownloadMaxLag = "stc", -1
	if _, err := Run(context.Background(), cfg, model, init, data, nil); err == nil {
		t.Error("negative max lag accepted")
	}
}

// TestClientsTrainFromDownloadedModel checks that with a download codec the
// clients start from the model they reconstruct, not from the server's
// global model: round 2 of a FedAvg run must equal the global model after
// round 1 plus the weighted mean of the clients' changes, each trained here
// from the round-1 client model, and differ from training from the global
// model.
func TestClientsTrainFromDownloadedModel(t *testing.T) {
	data, model := synthetic(t, 6)
	init := make([]float32, model.NumParams())
	model.Init(init, 2)
	cfg := config(1, 1)
	cfg.Workers, cfg.DownloadCodec = 2, "topk=0.05,bits=4"
	cfg.Strategy = "fedavg,bound=off" // the exact weighted mean
	one, err := Run(context.Background(), cfg, model, init, data, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Round.Rounds = 2
	two, err := Run(context.Background(), cfg, model, init, data, nil)
	if err != nil {
		t.Fatal(err)
	}
	// What round 2 gives when the clients start from start.
	round2 := func(start []float32) []float64 {
		want := make([]float64, len(start))
		var total float64
		for k := range data.Parts {
			local := slices.Clone(start)
			tr := client.DataTrainer{NN: nn.NewTrainer(model, cfg.BatchSize), X: data.Train.X, Y: data.Train.Y, Index: data.Parts[k]}
			task := client.Task{Round: 2, Seed: round.TaskSeed(cfg.TaskSeed, 2, ClientID(k)), Epochs: cfg.LocalEpochs, BatchSize: cfg.BatchSize, Optimizer: cfg.Optimizer()}
			r, err := tr.Train(context.Background(), local, task)
			if err != nil {
				t.Fatal(err)
			}
			w := float64(r.Examples)
			total += w
			for i := range local {
				want[i] += w * float64(local[i]-start[i])
			}
		}
		for i := range want {
			want[i] = float64(one.Model[i]) + want[i]/total
		}
		return want
	}
	dist := func(a []float64) float64 {
		var d float64
		for i := range a {
			d = max(d, math.Abs(a[i]-float64(two.Model[i])))
		}
		return d
	}
	fromClient, fromGlobal := dist(round2(one.ClientModel)), dist(round2(one.Model))
	if fromClient > 1e-5 || fromGlobal < 100*fromClient {
		t.Fatalf("round 2 is %g from training from the client model, %g from training from the global model", fromClient, fromGlobal)
	}
}

// TestLatticeDownloadsApply replays what every client is sent with the
// lattice codec: each client keeps a gradient.Replica, and after every
// download holds the model the server says clients train from, bit for
// bit. Clients that hold the initial model are never sent the whole model,
// however long they wait (MaxLag 2: longer waits get syncs from version
// 0); without it (an init the clients cannot rebuild) a client's first
// download is the whole model.
func TestLatticeDownloadsApply(t *testing.T) {
	data, model := synthetic(t, 12)
	init := make([]float32, model.NumParams())
	model.Init(init, 4)
	for _, seeded := range []bool{true, false} {
		t.Run(fmt.Sprintf("seeded=%v", seeded), func(t *testing.T) {
			reps := map[round.ClientID]*gradient.Replica{}
			var sent, full, fromZero int64
			cfg := config(10, 0.25)
			cfg.DownloadCodec, cfg.DownloadMaxLag, cfg.Workers = "lattice", 2, 2
			if seeded {
				cfg.InitSeed = 4
			}
			cfg.downloadHook = func(id round.ClientID, have int, msg []byte, want []float32) {
				rep, ok := reps[id]
				if !ok {
					var err error
					if rep, err = gradient.NewReplica(init); err != nil {
						t.Fatal(err)
					}
				}
				switch {
				case !seeded && have != -1:
					t.Fatalf("client %d without the initial model: the server thinks it holds version %d", id, have)
				case !seeded:
					rep, _ = gradient.NewReplica(init) // it holds nothing
				case ok && have != rep.Version() || !ok && have != 0:
					t.Fatalf("client %d: the server thinks it holds version %d", id, have)
				}
				if len(msg) > 0 {
					h, err := gradient.ReadHeader(msg, gradient.Limits{})
					if err != nil {
						t.Fatal(err)
					}
					switch {
					case h.Full():
						full++
						if seeded {
							t.Fatalf("client %d holding version %d: the whole model", id, have)
						}
					case h.Base == 0 && have > 0:
						fromZero++
					}
				}
				v, err := rep.Apply(msg, gradient.Limits{})
				if err != nil || !slices.Equal(rep.Model(), want) {
					t.Fatalf("client %d from version %d to %d (%v): bit-identical %v", id, have, v, err, slices.Equal(rep.Model(), want))
				}
				reps[id] = rep
				sent += int64(len(msg))
			}
			res, err := Run(context.Background(), cfg, model, init, data, nil)
			if err != nil {
				t.Fatal(err)
			}
			var counted int64
			for _, m := range res.Rounds {
				counted += m.DownloadBytes
			}
			if sent != counted || sent == 0 {
				t.Fatalf("clients received %d bytes, metrics count %d", sent, counted)
			}
			if seeded && fromZero == 0 || seeded != (full == 0) {
				t.Fatalf("%d syncs from version 0, %d whole models: the test does not cover them", fromZero, full)
			}
		})
	}
}

// TestSeededDownloadsApply: under secure aggregation with a random
// support and the seeded download codec, each client
// keeps a gradient.Replica that rebuilds supports from their seeds, and
// after every download holds the model the server says clients train
// from, bit for bit. Syncs across the rounds' supports name keys, not
// indices. Without secure aggregation the seeded codec is refused.
func TestSeededDownloadsApply(t *testing.T) {
	data, model := synthetic(t, 20)
	init := make([]float32, model.NumParams())
	model.Init(init, 4)
	cfg := secAggConfig(8)
	cfg.InitSeed, cfg.Workers, cfg.EvalEvery = 4, 2, 0
	cfg.DownloadCodec, cfg.DownloadMaxLag = runspec.SeededDownloadCodec, 3
	n := len(init)
	reps := map[round.ClientID]*gradient.Replica{}
	var sent, seeded, counted int64
	cfg.downloadHook = func(id round.ClientID, have int, msg []byte, want []float32) {
		rep, ok := reps[id]
		if !ok {
			var err error
			if rep, err = gradient.NewReplica(init); err != nil {
				t.Fatal(err)
			}
			rep.SetSupportFunc(secagg.Supports(n)) // k travels in the sync
			reps[id] = rep
		}
		if have != rep.Version() {
			t.Fatalf("client %d: the server thinks it holds version %d, it holds %d", id, have, rep.Version())
		}
		if len(msg) > 0 {
			h, err := gradient.ReadHeader(msg, gradient.Limits{})
			if err != nil {
				t.Fatal(err)
			}
			if h.Selection == gradient.RandK {
				seeded++
			}
		}
		v, err := rep.Apply(msg, gradient.Limits{})
		if err != nil || !slices.Equal(rep.Model(), want) {
			t.Fatalf("client %d from version %d to %d (%v): bit-identical %v", id, have, v, err, slices.Equal(rep.Model(), want))
		}
		sent += int64(len(msg))
	}
	res, err := Run(context.Background(), cfg, model, init, data, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range res.Rounds {
		counted += m.DownloadBytes
	}
	// (The metrics also count the protocol's messages.)
	if sent > counted || sent == 0 {
		t.Fatalf("clients received %d bytes of syncs, metrics count %d downloaded", sent, counted)
	}
	if seeded == 0 {
		t.Fatal("no download was a seeded sync")
	}
	plain := config(2, 0.5)
	plain.DownloadCodec = runspec.SeededDownloadCodec
	if _, err := Run(context.Background(), plain, model, init, data, nil); !errors.Is(err, runspec.ErrInvalid) {
		t.Fatalf("seeded downloads without --secagg: %v, want ErrInvalid", err)
	}
}
