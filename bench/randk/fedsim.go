package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/fedzip/fedzip/dataset"
	"github.com/fedzip/fedzip/nn"
	"github.com/fedzip/fedzip/report"
	"github.com/fedzip/fedzip/round"
	"github.com/fedzip/fedzip/runspec"
	"github.com/fedzip/fedzip/sim"
)

// supportModel is an nn.Model whose clients train only the coordinates of
// the current round's support: its scratch zeroes the gradient elsewhere,
// so a client's SGD (nn.Trainer, which then takes the unfused step) moves
// nothing off the support and its update is zero there. A client knows
// the support before it trains, since it is drawn from the round seed.
// The round is set between rounds (Restrict.Observe, as sim.Run's
// observe), when no client trains.
//
// With a local optimizer other than "sgd" (Restrict.Opt), the scratch
// returns the optimizer's direction on the support instead of the
// gradient, and nn.Trainer's plain SGD step (momentum 0) at rate lr then
// takes the optimizer's step at rate lr: "adam" (Adam with fresh moments
// for each client, as the oracle) or "sign" (signSGD). Its state is reset
// every Restrict.ClientSteps steps, the steps of one client's training:
// the simulator runs with one worker, so clients train one after another.
type supportModel struct {
	nn.Model
	r *Restrict
}

// Restrict holds the support the clients of the current round train on.
type Restrict struct {
	seed     uint64
	fraction float64
	idx      []int32
	on       []bool
	// Opt is the local optimizer: "sgd" (the default), "adam" or "sign".
	Opt string
	// ClientSteps is the number of steps of one client's local training,
	// after which Opt's state starts afresh.
	ClientSteps int
	step        int
	m, v        []float32 // Adam's moments, on idx
}

// NewRestrict returns the support of round 1 of a run with seed, for a
// model of d parameters and supports of fraction of them.
func NewRestrict(d int, seed uint64, fraction float64) *Restrict {
	k := SupportLen(d, fraction)
	s := &Restrict{seed: seed, fraction: fraction, idx: make([]int32, k), on: make([]bool, d), Opt: "sgd",
		m: make([]float32, k), v: make([]float32, k)}
	s.set(1)
	return s
}

// Observe makes the support of the round after m's the current one: pass
// it to sim.Run as its observe function.
func (s *Restrict) Observe(m sim.Metrics) { s.set(m.Round + 1) }

// set makes round r's support the current one.
func (s *Restrict) set(r int) {
	for _, j := range s.idx {
		s.on[j] = false
	}
	SupportOf(s.idx, len(s.on), s.seed, r)
	for _, j := range s.idx {
		s.on[j] = true
	}
	s.step = 0
}

// direction turns grad, zero off the support, into the local optimizer's
// direction.
func (s *Restrict) direction(grad []float32) {
	switch s.Opt {
	case "adam":
		t := s.step + 1
		if s.ClientSteps > 0 {
			t = s.step%s.ClientSteps + 1
		}
		if t == 1 {
			clear(s.m)
			clear(s.v)
		}
		s.step++
		const b1, b2, eps = 0.9, 0.999, 1e-8
		c1 := 1 - math.Pow(b1, float64(t))
		c2 := 1 - math.Pow(b2, float64(t))
		scale := float32(math.Sqrt(c2) / c1)
		for i, j := range s.idx {
			g := grad[j]
			s.m[i] = b1*s.m[i] + (1-b1)*g
			s.v[i] = b2*s.v[i] + (1-b2)*g*g
			grad[j] = scale * s.m[i] / (float32(math.Sqrt(float64(s.v[i]))) + eps)
		}
	case "sign":
		for _, j := range s.idx {
			switch g := grad[j]; {
			case g > 0:
				grad[j] = 1
			case g < 0:
				grad[j] = -1
			}
		}
	}
}

// ScratchFloats is the wrapped model's (nn.ScratchSizer): the simulator
// sizes its evaluation batch by it.
func (m supportModel) ScratchFloats(batch int) uint64 { return nn.ScratchFloats(m.Model, batch) }

func (m supportModel) Scratch(batch int) nn.Scratch {
	return supportScratch{Scratch: m.Model.Scratch(batch), r: m.r}
}

// supportScratch is a Scratch whose gradients are zero off the support.
// It does not have the fused SGD step, so nn.Trainer goes through LossGrad.
type supportScratch struct {
	nn.Scratch
	r *Restrict
}

func (s supportScratch) LossGrad(params, grad []float32, n int) float64 {
	loss := s.Scratch.LossGrad(params, grad, n)
	for j, on := range s.r.on {
		if !on {
			grad[j] = 0
		}
	}
	s.r.direction(grad)
	return loss
}

// FedRun is one 'fedzip simulate --secagg' run on the iid 2NN (100
// clients, 10 a round, one worker, dense downloads), optionally with
// clients that train only the round's support (Restrict).
type FedRun struct {
	Seed                 uint64
	Rounds               int
	Strategy             string
	LR, Momentum         float64
	Epochs, Batch        int
	Fraction             float64 // --secagg-k
	Bits                 int     // --secagg-bits
	Clip                 float64 // --secagg-clip (0: automatic)
	Restrict             bool
	LocalOpt             string // with Restrict: "sgd", "adam" or "sign"
	Target               float64
	Stop                 bool   // stop at the first round at Target
	DownloadCodec        string // --download-codec ("" or "none": dense downloads)
	DataDir              string
	Clients, ClientRound int
}

// Run runs it and returns the simulator's summary, the one 'fedzip
// simulate -o json' prints, and the rounds' metrics.
func (f FedRun) Run(ctx context.Context) (*report.Simulation, []sim.Metrics, error) {
	switch f.LocalOpt {
	case "", "sgd", "adam", "sign":
	default:
		return nil, nil, fmt.Errorf("randk: local optimizer %q: want sgd, adam or sign", f.LocalOpt)
	}
	fed, err := dataset.Spec{Dataset: "mnist", DataDir: f.DataDir, Clients: f.Clients, Partition: "iid", Seed: f.Seed}.Load()
	if err != nil {
		return nil, nil, err
	}
	spec := runspec.Spec{Model: "2nn", Classes: fed.Train.Classes, InitSeed: f.Seed, Strategy: runspec.SecAggStrategy(f.Strategy),
		Round:    round.Config{Fraction: float64(f.ClientRound) / float64(f.Clients), Rounds: f.Rounds, Seed: f.Seed},
		TaskSeed: f.Seed, DownloadCodec: f.DownloadCodec, LocalEpochs: f.Epochs, BatchSize: f.Batch, LR: f.LR, Momentum: f.Momentum,
		SecAgg: &runspec.SecAgg{Fraction: f.Fraction, Bits: f.Bits, Clip: f.Clip}}
	spec.SetInput(nn.Flat(fed.Train.Dim))
	if err := spec.Validate(); err != nil {
		return nil, nil, err
	}
	base, err := spec.Network()
	if err != nil {
		return nil, nil, err
	}
	init := make([]float32, base.NumParams())
	base.Init(init, spec.InitSeed)
	model := base
	var rs *Restrict
	if f.Restrict {
		rs = NewRestrict(base.NumParams(), f.Seed, f.Fraction)
		model = supportModel{Model: base, r: rs}
	}
	data := sim.DataOf(fed)
	if rs != nil && f.LocalOpt != "" && f.LocalOpt != "sgd" {
		if f.Momentum != 0 {
			return nil, nil, fmt.Errorf("randk: local optimizer %q takes no client momentum", f.LocalOpt)
		}
		n := len(data.Parts[0])
		for _, p := range data.Parts {
			if len(p) != n {
				return nil, nil, fmt.Errorf("randk: local optimizer %q needs equal client data (%d and %d examples)", f.LocalOpt, n, len(p))
			}
		}
		rs.Opt, rs.ClientSteps = f.LocalOpt, f.Epochs*((n+f.Batch-1)/f.Batch)
	}
	codec := fmt.Sprintf("secagg randk=%g,bits=%d", f.Fraction, f.Bits)
	if f.Restrict {
		codec += ", clients train the support only"
		if rs.Opt != "sgd" {
			codec += " with " + rs.Opt
		}
	}
	s := report.Simulation{Dataset: "mnist", Model: base.Name(), Params: base.NumParams(), Clients: len(data.Parts), Rounds: f.Rounds,
		Target: f.Target, Workers: 1, UploadCodec: codec, DownloadCodec: cmp.Or(f.DownloadCodec, "none"), Strategy: spec.Strategy, Partition: "iid"}
	var mets []sim.Metrics
	start := time.Now()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	reached := false
	_, err = sim.Run(ctx, sim.Config{Spec: spec, Workers: 1, EvalEvery: 1}, model, init, data, func(m sim.Metrics) {
		s.Add(m)
		mets = append(mets, m)
		if rs != nil {
			rs.Observe(m)
		}
		if f.Stop && m.Evaluated && m.TestAccuracy >= f.Target {
			reached = true
			cancel()
		}
	})
	if err != nil && !(reached && errors.Is(err, context.Canceled)) {
		return nil, nil, err
	}
	s.Finish(time.Since(start).Seconds())
	return &s, mets, nil
}
