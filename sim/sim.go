// Package sim drives federated rounds in one process: virtual clients train
// in parallel on all cores, and their updates go through the same round
// state machine (package round), client step (package client) and
// aggregation strategy (package aggregate) as on a real cluster. The
// simulator adds scheduling and measurement, no round logic of its own.
//
// Results are bit-identical for a seed whatever the number of workers:
// every client's training depends only on its task, updates are folded into
// the aggregate in selection order, and evaluation sums fixed chunks in a
// fixed order.
//
// Memory grows with the model times the number of workers, plus the data
// set: virtual clients are an index list each, and at most 2×Workers client
// models exist at once. A download codec (Config.DownloadCodec) adds the
// server's encoder, three model-sized buffers and the last DownloadMaxLag
// encoded deltas, and one int32 per client (the version it holds): no
// client model is kept.
//
// For robustness and privacy experiments, Config.Attack makes a seeded
// subset of the clients Byzantine (see Attack), Config.ProxMu gives the
// clients FedProx's proximal term, and a DP strategy (aggregate.DP) has
// its privacy spending accounted after every round (Metrics.Epsilon).
package sim

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"time"

	"github.com/fedzip/fedzip/aggregate"
	"github.com/fedzip/fedzip/client"
	"github.com/fedzip/fedzip/dataset"
	"github.com/fedzip/fedzip/gradient"
	"github.com/fedzip/fedzip/nn"
	"github.com/fedzip/fedzip/round"
	"github.com/fedzip/fedzip/runspec"
)

// Config sets up a simulation: the run (runspec.Spec, the same spec a
// coordinator cluster runs) and how the simulator drives it.
type Config struct {
	// Spec is the run: the model Run is given (Spec.Network builds it
	// from Model, the input shape and Classes), the strategy, the rounds (Spec.Round.Rounds must
	// be positive), the clients' local training, both codecs and the task
	// seed (Spec.TaskSeed drives client tasks and the download codec).
	// Run refuses a spec that Spec.Validate refuses: the simulator runs
	// only what a cluster's clients would accept. Model initialisation is
	// the caller's (Spec.InitSeed).
	runspec.Spec
	// Workers is the number of clients trained at once; 0 means GOMAXPROCS.
	Workers int
	// EvalEvery evaluates the global model on the test set every so many
	// rounds (and after the last); 0 means only after the last.
	EvalEvery int
	// EvalLast also evaluates each of the last EvalLast rounds, for a
	// figure averaged over them (0: none).
	EvalLast int
	// StateStore keeps the clients' codec state: "float32" (default) or
	// "float16" (see NewStateStore).
	StateStore string
	// Attack makes some clients Byzantine; the zero value attacks nothing.
	Attack Attack
	// DPDelta is the δ at which Metrics.Epsilon is reported when the
	// strategy adds DP noise (dp-noise); 0 means DefaultDPDelta.
	DPDelta float64
	// EvalGlobal, with a download codec, also evaluates the server's
	// global model (Metrics.GlobalTestAccuracy) in every evaluated round,
	// not only after the last. It costs a second evaluation.
	EvalGlobal bool

	// SecAggDropout drops clients out of the secure aggregation protocol
	// when Spec.SecAgg is set (see secagg.go).
	SecAggDropout SecAggDropout
	// SecAggWidth, with Spec.SecAgg, is the width m in bits of the masked
	// values (secagg.MaskedWidth): 0 (the default) is the least width that
	// holds the worst-case sum, so no coordinate wraps; a narrower width
	// saves upload bytes, and a coordinate whose sum leaves the signed
	// m-bit range wraps modulo 2^m and is counted (Metrics.SecAggWraps).
	SecAggWidth int

	// downloadHook, if set (tests), sees every download message.
	downloadHook func(id round.ClientID, have int, msg []byte, model []float32)
	// updateHook, if set (tests), may change a client's trained update
	// before it is encoded, as a faulty or malicious client would; it is
	// called from the workers, with the client's task seed.
	updateHook func(id round.ClientID, roundNo int, seed uint64, delta []float32)
	// secaggHook, if set (tests), sees every secure aggregation's sum.
	secaggHook func(r int, selected, survivors []round.ClientID, sum, plain []uint32)
}

// Data is a federated data set: one training set split among clients, and
// a test set for the global model.
type Data struct {
	Train *dataset.Dataset
	Test  *dataset.Dataset
	// Parts[k] holds the indices into Train of client k's examples.
	Parts dataset.Partition
	// HeldOut[k] holds the indices into Train of client k's held-out
	// examples, which it evaluates on in federated evaluation
	// (Config.FedEvalEvery); nil without.
	HeldOut dataset.Partition
}

// Metrics describes one round. Fields that were not measured this round
// (evaluation is not run every round) are NaN-free: Evaluated says whether
// the test fields hold a value.
type Metrics struct {
	Round        int     `json:"round"`
	Evaluated    bool    `json:"-"`
	TestAccuracy float64 `json:"test_accuracy,omitempty"`
	TestLoss     float64 `json:"test_loss,omitempty"`
	TrainLoss    float64 `json:"train_loss"`
	Clients      int     `json:"clients"`
	// Reported is the number of updates the round aggregated: Clients
	// less the refused (and, with secure aggregation, the dropped) ones.
	Reported int `json:"reported,omitempty"`
	Examples int `json:"examples"`
	// UploadBytes and DownloadBytes are the bytes that would cross the
	// network this round: each selected client downloads the model (dense
	// float32, or the encoded deltas or full-model message of a download
	// codec) and uploads its encoded update.
	UploadBytes int64 `json:"upload_bytes"`
	// ClientStateBytes is the memory holding the clients' codec state.
	ClientStateBytes int64 `json:"client_state_bytes,omitempty"`
	DownloadBytes    int64 `json:"download_bytes"`
	// DenseUploadBytes and DenseDownloadBytes are what the round's uploads
	// and downloads would have cost as dense float32 models: 4 bytes per
	// parameter per selected client, each.
	DenseUploadBytes   int64 `json:"dense_upload_bytes"`
	DenseDownloadBytes int64 `json:"dense_download_bytes"`
	// TotalBytes is UploadBytes + DownloadBytes, every byte of the round
	// that crosses the network, and DenseTotalBytes dense FedAvg's
	// (DenseUploadBytes + DenseDownloadBytes). CumulativeTotalBytes sums
	// TotalBytes over the rounds so far, and TotalRatio is dense FedAvg's
	// total over the same rounds divided by it.
	TotalBytes           int64   `json:"total_bytes"`
	DenseTotalBytes      int64   `json:"dense_total_bytes"`
	CumulativeTotalBytes int64   `json:"cumulative_total_bytes"`
	TotalRatio           float64 `json:"total_ratio"`
	// GlobalTestAccuracy and GlobalTestLoss evaluate the server's global
	// model when a download codec is set, so that the test fields evaluate
	// the model the clients receive: after the last round, and in every
	// evaluated round with Config.EvalGlobal. GlobalEvaluated says whether
	// they hold a value.
	GlobalEvaluated    bool    `json:"-"`
	GlobalTestAccuracy float64 `json:"global_test_accuracy,omitempty"`
	GlobalTestLoss     float64 `json:"global_test_loss,omitempty"`
	Seconds            float64 `json:"seconds"`
	// TrainSeconds and EvalSeconds split Seconds.
	TrainSeconds float64 `json:"train_seconds"`
	EvalSeconds  float64 `json:"eval_seconds"`
	// Attackers is the number of selected clients that attacked.
	Attackers int `json:"attackers,omitempty"`
	// Excluded is the number of received updates the strategy left out
	// of the aggregate (aggregate.Excluder, e.g. the direction filter);
	// ExcludedAttackers counts the attackers among them.
	Excluded          int `json:"excluded,omitempty"`
	ExcludedAttackers int `json:"excluded_attackers,omitempty"`
	// Clipped is the number of received updates the strategy bounded in
	// norm or weight (round.Closed.Clipped; aggregate.AutoBound, the
	// default).
	Clipped int `json:"clipped,omitempty"`
	// BoundCapped is true when the strategy capped the round's bound at a
	// multiple of the last round's (round.Closed.Capped; the default's
	// bound-growth).
	BoundCapped bool `json:"bound_capped,omitempty"`
	// Epsilon is the privacy spent after this round, at Config.DPDelta,
	// when the strategy is DP with noise.
	Epsilon float64 `json:"epsilon,omitempty"`
	// DPClip is the clip norm this round used, when the strategy is DP.
	DPClip float64 `json:"dp_clip,omitempty"`
	// FedEval is the round's federated evaluation (Config.FedEvalEvery):
	// the selected clients' evaluations, on their held-out examples, of
	// the model the round trained from (version Round−1), aggregated by
	// round.AggregateEval as a coordinator does; nil in other rounds.
	FedEval *round.EvalSummary `json:"fed_eval,omitempty"`
	// BackdoorSuccess is, under the backdoor attack in an evaluated
	// round, the fraction of the test examples whose label is not the
	// target that the evaluated model classifies as the target once the
	// trigger is stamped on them (the same evaluation as TestAccuracy);
	// nil otherwise.
	BackdoorSuccess *float64 `json:"backdoor_success,omitempty"`
	// Survivors is, with secure aggregation (Spec.SecAgg), the number of
	// selected clients whose update is in the round's sum.
	Survivors int `json:"survivors,omitempty"`
	// SecAggDPNoise is, with distributed DP (Spec.SecAgg.DP), the standard
	// deviation of the noise in each value of the round's mean update on
	// the support, in the model's units; Epsilon is then the privacy the
	// rounds so far spent (secagg.RDP, at Config.DPDelta).
	SecAggDPNoise float64 `json:"secagg_dp_noise,omitempty"`
	// SecAggWraps is, with secure aggregation, the number of coordinates
	// of the round's sum that wrapped modulo 2^m (Config.SecAggWidth
	// narrower than the worst case): each decoded as its true sum minus a
	// multiple of 2^m, within the signed m-bit range.
	SecAggWraps int `json:"secagg_wraps,omitempty"`
	// Refused is the number of selected clients whose update was refused
	// (see Run: values that are not finite, or that the coordinator's
	// decoder or the round machine refuses) and RefusedAttackers the
	// attackers among them. A
	// refused client is dropped from the round, as a coordinator's round
	// goes on without it; its bytes, if it sent any, are in UploadBytes.
	// The counts include the attempts of the round that were aborted.
	Refused          int `json:"refused,omitempty"`
	RefusedAttackers int `json:"refused_attackers,omitempty"`
	// Aborted is the number of attempts at this round that were aborted
	// because, once refusals were dropped, fewer than Round.MinClients
	// (at least 1) updates remained: the round is opened again with a
	// fresh selection, as a coordinator does (round.Machine.Abort).
	Aborted int `json:"aborted,omitempty"`
}

// maxAborted is the number of aborted attempts in a row at one round after
// which Run stops: where every client's update is refused (a model that is
// no longer finite, say), a coordinator would retry for ever.
const maxAborted = 10

// addAborted adds to m what the aborted attempts a at its round cost: the
// refusals and the bytes.
func (m *Metrics) addAborted(a Metrics) {
	m.Aborted = a.Aborted
	m.Refused += a.Refused
	m.RefusedAttackers += a.RefusedAttackers
	m.UploadBytes += a.UploadBytes
	m.DownloadBytes += a.DownloadBytes
	m.DenseUploadBytes += a.DenseUploadBytes
	m.DenseDownloadBytes += a.DenseDownloadBytes
}

// Result is the outcome of a simulation.
type Result struct {
	// Model is the server's global model after the last round.
	Model []float32
	// ClientModel is, with a download codec, the model the clients
	// reconstruct after the last round (what the test fields of the
	// metrics evaluate); nil otherwise, where it is Model.
	ClientModel []float32
	Rounds      []Metrics
}

// evalChunk is the number of test rows per evaluation job: fixed, so the
// order of the loss sum does not depend on the number of workers.
const evalChunk = 500

// evalScratch bounds each worker's evaluation scratch: 2²² floats (16 MiB),
// which holds 250 examples of an MLP and fewer of a conv net.
const evalScratch = 1 << 22

// Run simulates Config.Round.Rounds rounds of federated training of model,
// starting from init (not modified), and calls observe (if not nil) after
// each round from the calling goroutine.
//
// A client whose update is refused for its values (see encode: not
// finite, or refused by the coordinator's decoder or the round machine's
// validation) is dropped from its round, as a coordinator's round goes on
// without it, and counted in Metrics.Refused; a round left with too few
// updates is aborted and opened again (Metrics.Aborted), and Run stops
// after maxAborted such attempts in a row. Every other error stops Run.
func Run(ctx context.Context, cfg Config, model nn.Model, init []float32, data Data, observe func(Metrics)) (*Result, error) {
	if err := validate(cfg, model, init, data); err != nil {
		return nil, err
	}
	if err := checkFedEval(cfg, data); err != nil {
		return nil, err
	}
	strategy, err := aggregate.Parse(cfg.Strategy)
	if err != nil {
		return nil, err
	}
	if err := aggregate.SetShapes(strategy, model.Layout().Shapes()); err != nil {
		return nil, err
	}
	mach, err := round.New(cfg.Round, strategy, init)
	if err != nil {
		return nil, err
	}
	workers := cfg.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	p := newPool(ctx, workers, model, cfg.BatchSize)
	defer p.stop()
	if err := p.setCodec(cfg, model.NumParams()); err != nil {
		return nil, err
	}
	down, err := newDownloads(cfg, model, init, len(data.Parts))
	if err != nil {
		return nil, err
	}
	p.attackers = cfg.Attack.Attackers(len(data.Parts))
	if p.attackers != nil && cfg.Attack.Kind == "labelflip" {
		p.flipped = flipLabels(data.Train.Y, data.Train.Classes)
	}
	var backdoorTest *dataset.Dataset
	if p.attackers != nil && cfg.Attack.Kind == "backdoor" {
		t := cfg.Attack.newTrigger(data.Train)
		p.poison = cfg.Attack.poison(data.Train, data.Parts, p.attackers, t)
		backdoorTest = cfg.Attack.triggered(data.Test, t)
	}
	priv := newPrivacy(strategy, cfg.DPDelta)
	var sa *secAggRun
	if cfg.SecAgg != nil {
		if sa, err = newSecAggRun(cfg, model.NumParams(), len(data.Parts)); err != nil {
			return nil, err
		}
	}

	candidates := make([]round.ClientID, len(data.Parts))
	for k := range candidates {
		candidates[k] = ClientID(k)
	}
	res := &Result{}
	// The simulator's clock is virtual: rounds have no deadline to miss.
	now := time.Unix(0, 0).UTC()
	var totals byteTotals
	modelBytes := int64(4 * model.NumParams())
	// aborted holds what the aborted attempts at the next round cost.
	var aborted Metrics
	for mach.Phase() != round.Finished {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		start := time.Now()
		opened, err := mach.Open(now, candidates)
		if err != nil {
			return nil, err
		}
		met := Metrics{Round: opened.Round, Clients: len(opened.Selected),
			Attackers: countAttackers(p.attackers, opened.Selected), DPClip: dpClip(strategy)}
		met.addAborted(aborted)
		var lossSum float64
		// Clients start from the model they can reconstruct: the global
		// model, or the download codec's.
		from := mach.Global()
		if down != nil {
			from = down.model()
			for _, id := range opened.Selected {
				met.DownloadBytes += down.send(id)
			}
		} else {
			met.DownloadBytes += int64(met.Clients) * modelBytes
		}
		met.DenseUploadBytes += int64(met.Clients) * modelBytes
		met.DenseDownloadBytes += int64(met.Clients) * modelBytes
		evals, err := p.fedEvaluate(from, opened, cfg, data)
		if err != nil {
			return nil, err
		}
		train := func(submit submitFunc, refuse refuseFunc) error {
			return p.train(from, opened, cfg, data, submit, refuse)
		}
		if sa != nil {
			train = func(submitFunc, refuseFunc) error {
				clip := sa.clip // runRound sets the next round's
				if err := sa.runRound(p, mach, now, from, opened, cfg, data, evals, &met, &lossSum); err != nil {
					return err
				}
				if sa.dp != nil {
					met.Epsilon, met.SecAggDPNoise = sa.dp.account(clip, sa.spec.Bits, len(sa.idx), met.Survivors)
				}
				return nil
			}
		}
		// A refused update drops its client from the round, as a
		// coordinator's round goes on without a client whose update it
		// refused; the round closes on the others.
		var refused []error
		refuse := func(id round.ClientID, wire int, err error) error {
			if e := mach.Drop(id); e != nil {
				return e
			}
			refused = append(refused, err)
			met.Refused++
			if p.evil(id) {
				met.RefusedAttackers++
			}
			met.UploadBytes += int64(wire)
			return nil
		}
		err = train(func(id round.ClientID, u aggregate.Update, r client.Result, wire int) error {
			if _, err := mach.Submit(now, round.Submission{Round: opened.Round, Client: id, Update: u, Eval: evals[id]}); err != nil {
				// The round machine validates every update (aggregate.Validate).
				if err := refusedIf(err, aggregate.ErrNonFinite, aggregate.ErrWeight); errors.Is(err, errRefused) {
					return refuse(id, wire, err)
				}
				return err
			}
			met.UploadBytes += int64(wire)
			lossSum += r.Loss * float64(r.Examples)
			met.Examples += r.Examples
			return nil
		}, refuse)
		if err != nil {
			return nil, err
		}
		if len(refused) > 0 && !mach.CanClose(now) {
			// Too few updates are left to close the round: abort it and
			// open it again with a fresh selection, as a coordinator does
			// (see coordinator.Node's round driver). The model is unchanged.
			if err := mach.Abort(); err != nil {
				return nil, err
			}
			met.Aborted++
			if met.Aborted >= maxAborted {
				return nil, fmt.Errorf("sim: round %d aborted %d times in a row: refusals left fewer than %d updates in every attempt; the last of them: %w",
					opened.Round, met.Aborted, max(cfg.Round.MinClients, 1), refused[len(refused)-1])
			}
			aborted = met
			continue
		}
		aborted = Metrics{}
		closed, err := mach.Close(now)
		if err != nil {
			return nil, err
		}
		met.FedEval = closed.Eval
		met.Reported = closed.Reported
		met.Excluded = len(closed.Excluded)
		met.ExcludedAttackers = countAttackers(p.attackers, closed.Excluded)
		met.Clipped = closed.Clipped
		met.BoundCapped = closed.Capped
		if priv != nil {
			met.Epsilon = priv.step(len(opened.Selected), len(candidates))
		}
		met.TrainSeconds = time.Since(start).Seconds()
		met.TrainLoss = lossSum / float64(max(met.Examples, 1))
		evaluated := mach.Global()
		if down != nil {
			// Publish the new global model: the clients' model moves
			// towards it by the encoded delta.
			if err := down.publish(mach.Global(), cfg.Spec, closed.Round); err != nil {
				return nil, err
			}
			evaluated = down.model()
		}
		if p.store != nil {
			met.ClientStateBytes = p.store.Bytes()
		}
		if closed.Finished || (cfg.EvalEvery > 0 && closed.Round%cfg.EvalEvery == 0) || closed.Round > cfg.Round.Rounds-cfg.EvalLast {
			es := time.Now()
			met.TestAccuracy, met.TestLoss = p.evaluate(evaluated, data.Test)
			met.Evaluated = true
			if down != nil && (closed.Finished || cfg.EvalGlobal) {
				met.GlobalTestAccuracy, met.GlobalTestLoss = p.evaluate(mach.Global(), data.Test)
				met.GlobalEvaluated = true
			}
			if backdoorTest != nil {
				success, _ := p.evaluate(evaluated, backdoorTest)
				met.BackdoorSuccess = &success
			}
			met.EvalSeconds = time.Since(es).Seconds()
		}
		met.Seconds = time.Since(start).Seconds()
		totals.addTotals(&met)
		res.Rounds = append(res.Rounds, met)
		if observe != nil {
			observe(met)
		}
	}
	res.Model = append([]float32(nil), mach.Global()...)
	if down != nil {
		res.ClientModel = append([]float32(nil), down.model()...)
	}
	return res, nil
}

func validate(cfg Config, model nn.Model, init []float32, data Data) error {
	if err := cfg.Spec.Validate(); err != nil {
		return err
	}
	if cfg.Round.Rounds < 1 {
		return errors.New("sim: rounds must be at least 1")
	}
	if model == nil {
		return errors.New("sim: no model")
	}
	m, _ := cfg.Network()
	_, specNet := m.(*nn.Net)
	_, givenNet := model.(*nn.Net)
	if !m.Layout().Equal(model.Layout()) || specNet != givenNet || specNet && (m.Name() != model.Name() || m.InputShape() != model.InputShape()) {
		return fmt.Errorf("sim: model %s (%v) is not the spec's %s (%v)", model.Name(), model.Layout(), cfg.Model, m.Layout())
	}
	if err := cfg.CheckClients(len(data.Parts)); err != nil {
		return err
	}
	if err := cfg.Attack.Validate(); err != nil {
		return err
	}
	if cfg.Attack.Kind == "backdoor" && data.Train != nil && cfg.Attack.Target >= data.Train.Classes {
		return fmt.Errorf("sim: backdoor target label %d: the data has %d classes", cfg.Attack.Target, data.Train.Classes)
	}
	if !(cfg.DPDelta >= 0 && cfg.DPDelta < 1) {
		return fmt.Errorf("sim: DP delta %v out of range (0, 1)", cfg.DPDelta)
	}
	if len(init) != model.NumParams() {
		return fmt.Errorf("sim: initial model has %d parameters, %s has %d", len(init), model.Name(), model.NumParams())
	}
	if data.Train == nil || data.Test == nil {
		return errors.New("sim: missing training or test set")
	}
	if data.Train.Dim != model.InputDim() || data.Test.Dim != model.InputDim() {
		return fmt.Errorf("sim: data has %d features, model takes %d", data.Train.Dim, model.InputDim())
	}
	if givenNet && (data.Train.InputShape() != model.InputShape() || data.Test.InputShape() != model.InputShape()) {
		// An MLP reads its input flat; a net reads images of its shape.
		return fmt.Errorf("sim: data has examples of %v, model %s reads %v", data.Train.InputShape(), model.Name(), model.InputShape())
	}
	if data.Train.Classes > model.Classes() {
		return fmt.Errorf("sim: data has %d classes, model has %d outputs", data.Train.Classes, model.Classes())
	}
	if len(data.Parts) == 0 {
		return errors.New("sim: no clients")
	}
	for k, p := range data.Parts {
		if len(p) == 0 {
			return fmt.Errorf("sim: client %d has no examples", k)
		}
	}
	return nil
}

// pool is a fixed set of workers, each with its own trainer and
// evaluation workspace, alive for one Run.
type pool struct {
	ctx     context.Context
	model   nn.Model
	jobs    chan func(w *worker)
	wg      sync.WaitGroup
	workers int
	bufs    chan *slot
	all     []*worker
	store   StateStore
	// dec decodes every update as the coordinator does (nil: before
	// setCodec).
	dec *gradient.UploadDecoder
	// attackers[id] is set for the clients that attack (nil: none);
	// flipped holds the training labels that labelflip attackers see.
	attackers []bool
	flipped   []uint8
	// poison is what backdoor attackers train on (nil: no backdoor).
	poison *poisoned
}

type worker struct {
	tr   *nn.Trainer
	eval nn.Scratch
	enc  *gradient.Encoder
	wire []byte
	// res and vel carry a client's codec state between the store and enc.
	res, vel []float32
}

// slot is the memory of one client update in flight: the client's model
// and the buffers its decoded upload lives in until it is submitted. A
// dense upload is decoded into buf itself, which the encoder has read by
// then: sc.Dense is buf.
type slot struct {
	buf []float32
	sc  gradient.UploadScratch
}

func newPool(ctx context.Context, n int, model nn.Model, batch int) *pool {
	p := &pool{ctx: ctx, model: model, jobs: make(chan func(*worker)), workers: n, bufs: make(chan *slot, 2*n)}
	for i := 0; i < 2*n; i++ {
		buf := make([]float32, model.NumParams())
		p.bufs <- &slot{buf: buf, sc: gradient.UploadScratch{Dense: buf}}
	}
	p.wg.Add(n)
	for i := 0; i < n; i++ {
		w := &worker{tr: nn.NewTrainer(model, batch), eval: model.Scratch(nn.BatchWithin(model, evalScratch, 250))}
		p.all = append(p.all, w)
		go func() {
			defer p.wg.Done()
			for job := range p.jobs {
				job(w)
			}
		}()
	}
	return p
}

// setCodec gives every worker an encoder for cfg.UploadCodec, and the
// pool the coordinator's decoder of uploads: every simulated client names
// the run (runID), so that "" and "none" are dense float32 wire messages,
// as a real client's uploads in a run with a run ID.
func (p *pool) setCodec(cfg Config, n int) error {
	dec, err := gradient.NewUploadDecoder(cfg.UploadCodec, true)
	if err != nil {
		return err
	}
	p.dec = &dec
	codec := cfg.UploadCodec
	if codec == "" {
		codec = "none"
	}
	spec, err := gradient.ParseSpec(codec)
	if err != nil {
		return err
	}
	if !gradient.IsNone(codec) { // "none" keeps no client state
		if p.store, err = NewStateStore(cfg.StateStore); err != nil {
			return err
		}
	}
	for _, w := range p.all {
		if w.enc, err = gradient.NewEncoder(spec, n); err != nil {
			return err
		}
		w.enc.SetRun(runID)
		nr, nv := w.enc.StateLen()
		w.res, w.vel = make([]float32, nr), make([]float32, nv)
	}
	return nil
}

// errRefused marks a client's update that does not reach the aggregate
// for what its values are, not for a fault of the simulator: the client
// runtime does not send it (its values are not finite even from a cleared
// codec state), or the coordinator refuses it (its bytes decode to values
// that are not finite, or the round machine's validation refuses it). The
// simulator drops such a client from the round (Run); every other error
// stops the run.
var errRefused = errors.New("update refused")

// encode runs client id's update through the codec with the client's
// state, as the client runtime does, then decodes it into sc with the
// coordinator's decoder and checks (gradient.UploadDecoder): the update it
// returns, aliasing sc, is what the coordinator's FSM would aggregate. It
// also returns the bytes on the wire.
//
// An update whose values the encoder cannot take (gradient.ErrNonFinite:
// the delta, or residual + delta, is not finite) is handled as the client
// runtime (client/remote) handles it: the error-feedback state is cleared
// and the update encoded once more; if that fails too the state stays
// cleared, nothing is sent, and encode returns an error wrapping
// errRefused with 0 bytes. An update the coordinator's decoder refuses for
// its values (gradient.ErrNonFinite: a scale that overflows, say) returns
// an error wrapping errRefused with the bytes sent; the client's codec
// state then holds what it encoded, as the client runtime's does, which
// saves its residual before it uploads and keeps it when the update is
// refused. Any other error (a run or round the update does not name, a
// checksum the decoder does not match) is the simulator's own and wraps
// nothing.
func (p *pool) encode(w *worker, sc *gradient.UploadScratch, id round.ClientID, u aggregate.Update, roundNo int, seed uint64) (aggregate.Update, int, error) {
	delta := u.Delta
	if p.store != nil {
		p.store.Load(id, w.res, w.vel)
		if err := w.enc.ImportState(w.res, w.vel); err != nil {
			return aggregate.Update{}, 0, fmt.Errorf("its codec state: %w", err)
		}
	}
	var err error
	w.wire, _, err = w.enc.Encode(w.wire[:0], delta, roundNo, seed)
	if errors.Is(err, gradient.ErrNonFinite) {
		w.enc.Reset()
		if w.wire, _, err = w.enc.Encode(w.wire[:0], delta, roundNo, seed); errors.Is(err, gradient.ErrNonFinite) {
			w.enc.Reset()
			p.saveState(w, id)
			return aggregate.Update{}, 0, fmt.Errorf("%w: not sent: %w", errRefused, err)
		}
	}
	if err != nil {
		return aggregate.Update{}, 0, err
	}
	p.saveState(w, id)
	h, err := p.dec.Check(len(delta), w.wire)
	if err != nil {
		return aggregate.Update{}, len(w.wire), refusedIf(fmt.Errorf("checking its own update: %w", err), gradient.ErrNonFinite)
	}
	if h.Round != roundNo || h.Run != runID {
		return aggregate.Update{}, 0, fmt.Errorf("its own update names round %d of run %v, want round %d of %v", h.Round, h.Run, roundNo, runID)
	}
	if u, err = p.dec.Decode(sc, len(delta), w.wire, u.Weight); err != nil {
		return aggregate.Update{}, len(w.wire), refusedIf(fmt.Errorf("decoding its own update: %w", err), gradient.ErrNonFinite)
	}
	return u, len(w.wire), nil
}

// saveState keeps worker w's codec state as client id's (a no-op for
// codecs without state).
func (p *pool) saveState(w *worker, id round.ClientID) {
	if p.store != nil {
		w.enc.ExportState(w.res, w.vel)
		p.store.Save(id, w.res, w.vel)
	}
}

// refusedIf wraps err in errRefused when it is one of causes: a refusal
// for the update's values rather than the simulator's fault.
func refusedIf(err error, causes ...error) error {
	for _, c := range causes {
		if errors.Is(err, c) {
			return fmt.Errorf("%w: %w", errRefused, err)
		}
	}
	return err
}

// ClientID is the ID of the virtual client that holds Data.Parts[k]:
// clients are numbered from 1, as a coordinator numbers the clients that
// register with it, so that the k-th client to register with a
// coordinator gets the task (seed) of virtual client k.
func ClientID(k int) round.ClientID { return round.ClientID(k + 1) }

// part returns the index into Data.Parts of client id's data.
func part(id round.ClientID) int { return int(id) - 1 }

// runID is the run every simulated update names (gradient.FlagRun), as a
// coordinator's clients name the run they train for: a fixed ID, so that
// simulations stay reproducible; the 16 bytes are in the bytes an update
// costs, as they are in dense uploads ("none").
var runID = gradient.RunID{'f', 'e', 'd', 'z', 'i', 'p', '-', 's', 'i', 'm', 'u', 'l', 'a', 't', 'o', 'r'}

func (p *pool) stop() {
	close(p.jobs)
	p.wg.Wait()
}

type outcome struct {
	i    int
	wire int
	sl   *slot
	u    aggregate.Update
	r    client.Result
	err  error
}

// submitFunc hands a client's decoded update, its training result and its
// bytes on the wire to the round.
type submitFunc func(round.ClientID, aggregate.Update, client.Result, int) error

// refuseFunc tells the round that client id's update was refused (err
// wraps errRefused) after wire bytes crossed the network.
type refuseFunc func(id round.ClientID, wire int, err error) error

// train runs the selected clients on the workers and hands their updates
// to submit in selection order. At most cap(p.bufs) client models exist at
// once: a buffer returns to the pool when its update has been submitted.
// With a colluding attack (Attack.Colludes), the round's honest clients
// are submitted first and its attackers after them (see collude). A
// refused update (errRefused) goes to refuse in its turn instead.
func (p *pool) train(global []float32, o round.Opened, cfg Config, data Data, submit submitFunc, refuse refuseFunc) error {
	m := countAttackers(p.attackers, o.Selected)
	if m > 0 && cfg.Attack.Colludes() {
		return p.collude(global, o, cfg, data, m, submit, refuse)
	}
	return p.streamRefusing(o.Selected, func(w *worker, sl *slot, id round.ClientID) (aggregate.Update, client.Result, int, error) {
		u, r, seed, err := p.step(w, sl, global, o, cfg, data, id, nil)
		if err != nil {
			return u, r, 0, err
		}
		if p.evil(id) {
			cfg.Attack.corrupt(u.Delta, seed, len(o.Selected), m)
		}
		if cfg.updateHook != nil {
			cfg.updateHook(id, o.Round, seed, u.Delta)
		}
		u, wire, err := p.encode(w, &sl.sc, id, u, o.Round, seed)
		return u, r, wire, err
	}, submit, refuse)
}

// collude runs a round in which m colluding attackers are selected: the
// honest clients train and are submitted (in selection order; the round
// machine holds those whose turn has not come), their decoded updates are
// kept, then every attacker sends the update Attack.craft makes of them,
// through its own encoder. The attackers train too, for their training
// loss, and for the update they craft from when no honest client was
// selected. The result does not depend on the number of workers: the
// crafted update is computed once all honest updates are in, from them in
// selection order.
func (p *pool) collude(global []float32, o round.Opened, cfg Config, data Data, m int, submit submitFunc, refuse refuseFunc) error {
	n := len(global)
	honest := len(o.Selected) - m
	var benign, own [][]float32
	var evil []round.ClientID
	type trained struct {
		r      client.Result
		weight float64
	}
	results := map[round.ClientID]trained{}
	err := p.streamRefusing(o.Selected, func(w *worker, sl *slot, id round.ClientID) (aggregate.Update, client.Result, int, error) {
		u, r, seed, err := p.step(w, sl, global, o, cfg, data, id, nil)
		if err != nil || p.evil(id) {
			return u, r, 0, err
		}
		u, wire, err := p.encode(w, &sl.sc, id, u, o.Round, seed)
		return u, r, wire, err
	}, func(id round.ClientID, u aggregate.Update, r client.Result, wire int) error {
		if p.evil(id) {
			evil = append(evil, id)
			results[id] = trained{r: r, weight: u.Weight}
			if honest == 0 {
				own = append(own, densify(u, n))
			}
			return nil
		}
		benign = append(benign, densify(u, n))
		return submit(id, u, r, wire)
	}, refuse)
	if err != nil {
		return err
	}
	if honest == 0 {
		benign = own
	}
	crafted := cfg.Attack.craft(benign, len(o.Selected), m)
	return p.streamRefusing(evil, func(w *worker, sl *slot, id round.ClientID) (aggregate.Update, client.Result, int, error) {
		copy(sl.buf, crafted)
		t := results[id]
		u, wire, err := p.encode(w, &sl.sc, id, aggregate.Update{Weight: t.weight, Delta: sl.buf}, o.Round, round.TaskSeed(cfg.TaskSeed, o.Round, id))
		return u, t.r, wire, err
	}, submit, refuse)
}

// evil reports whether client id attacks.
func (p *pool) evil(id round.ClientID) bool {
	return p.attackers != nil && p.attackers[part(id)]
}

// step trains client id of round o from global into sl.buf on worker w,
// on the data it trains on (flipped labels or poisoned examples for some
// attackers), and returns its update, its result and its task seed. A
// non-nil support is secure aggregation's: the client trains only it,
// with the run's SecAgg.Local (sim/secagg.go).
func (p *pool) step(w *worker, sl *slot, global []float32, o round.Opened, cfg Config, data Data, id round.ClientID, support []int32) (aggregate.Update, client.Result, uint64, error) {
	task := client.Task{
		Round:     o.Round,
		Seed:      round.TaskSeed(cfg.TaskSeed, o.Round, id),
		Epochs:    cfg.LocalEpochs,
		BatchSize: cfg.BatchSize,
		Optimizer: cfg.Optimizer(),
		ProxMu:    float32(cfg.ProxMu),
	}
	if support != nil {
		task.Local, task.Support = cfg.SecAgg.Local, support
	}
	tr := client.DataTrainer{NN: w.tr, X: data.Train.X, Y: data.Train.Y, Index: data.Parts[part(id)]}
	if p.evil(id) {
		switch {
		case p.flipped != nil:
			tr.Y = p.flipped
		case p.poison != nil:
			tr.X, tr.Y, tr.Index = p.poison.x, p.poison.y, p.poison.index[part(id)]
		}
	}
	u, r, err := client.Step(p.ctx, tr, global, sl.buf, task)
	return u, r, task.Seed, err
}

// stream runs job for each of ids on the workers, each in a slot of
// p.bufs, and hands the outcomes to deliver in the order of ids; a slot
// returns to the pool after its outcome is delivered. Every error of a
// job stops it.
func (p *pool) stream(ids []round.ClientID, job func(*worker, *slot, round.ClientID) (aggregate.Update, client.Result, int, error), deliver submitFunc) error {
	return p.streamRefusing(ids, job, deliver, nil)
}

// streamRefusing is stream, except that an outcome whose error wraps
// errRefused goes to refuse (if not nil) in its turn.
func (p *pool) streamRefusing(ids []round.ClientID, job func(*worker, *slot, round.ClientID) (aggregate.Update, client.Result, int, error), deliver submitFunc, refuse refuseFunc) error {
	n := len(ids)
	results := make(chan outcome, cap(p.bufs))
	go func() {
		for i, id := range ids {
			sl := <-p.bufs
			p.jobs <- func(w *worker) {
				u, r, wire, err := job(w, sl, id)
				results <- outcome{i: i, wire: wire, sl: sl, u: u, r: r, err: err}
			}
		}
	}()
	pending := make(map[int]outcome, cap(p.bufs))
	var firstErr error
	for next := 0; next < n; {
		oc := <-results
		pending[oc.i] = oc
		for {
			oc, ok := pending[next]
			if !ok {
				break
			}
			delete(pending, next)
			switch {
			case firstErr != nil:
			case oc.err != nil && refuse != nil && errors.Is(oc.err, errRefused):
				if err := refuse(ids[next], oc.wire, fmt.Errorf("client %d: %w", ids[next], oc.err)); err != nil {
					firstErr = err
				}
			case oc.err != nil:
				firstErr = fmt.Errorf("client %d: %w", ids[next], oc.err)
			default:
				if err := deliver(ids[next], oc.u, oc.r, oc.wire); err != nil {
					firstErr = err
				}
			}
			p.bufs <- oc.sl
			next++
		}
	}
	return firstErr
}

// evaluate returns the test accuracy and mean loss of params, computed in
// fixed chunks on the workers and summed in chunk order.
func (p *pool) evaluate(params []float32, test *dataset.Dataset) (acc, loss float64) {
	chunks := (test.N + evalChunk - 1) / evalChunk
	correct := make([]int, chunks)
	losses := make([]float64, chunks)
	var wg sync.WaitGroup
	wg.Add(chunks)
	for c := 0; c < chunks; c++ {
		lo, hi := c*evalChunk, min((c+1)*evalChunk, test.N)
		p.jobs <- func(w *worker) {
			defer wg.Done()
			correct[c], losses[c] = w.eval.Evaluate(params, test.X[lo*test.Dim:hi*test.Dim], test.Y[lo:hi])
		}
	}
	wg.Wait()
	var nc int
	var ls float64
	for c := range correct {
		nc += correct[c]
		ls += losses[c]
	}
	return float64(nc) / float64(test.N), ls / float64(test.N)
}
