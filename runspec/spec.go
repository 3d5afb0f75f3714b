// Package runspec describes a training run once: the model, the
// aggregation strategy, the rounds, the clients' local training, the codecs
// of both directions and the seeds. The simulator (sim.Config) and the
// coordinator (coordinator.RunConfig, which the Raft log holds) both hold a
// Spec, and Spec.Validate is the one check of a run: the union of what the
// round machine, the aggregation strategies, the codecs, the coordinator's
// FSM and every client check. A run it accepts is one whose tasks every
// client accepts (CheckLocal, CheckUploadCodec and CheckDownloadCodec are
// the client's own checks), so that a bad run is refused before it is
// committed, not by every client after.
//
// The bounds are the exported constants below, defined here only. Error
// messages name the field by its command-line flag (--momentum,
// --local-epochs, ...): the flags of 'fedzip simulate' and 'fedzip
// coordinator' are the same.
//
// The package is pure: no I/O, no goroutines, no network.
package runspec

import (
	"fmt"
	"math"

	"github.com/fedzip/fedzip/aggregate"
	"github.com/fedzip/fedzip/gradient"
	"github.com/fedzip/fedzip/nn"
	"github.com/fedzip/fedzip/round"
)

// Spec is a training run. Its JSON encoding is the coordinator's
// RunConfig's (the field names are those of the Raft log), so that a log
// written before the type existed decodes to the same run.
type Spec struct {
	// Model is the model spec (nn.ParseModel: "2nn", "lenet300",
	// "mlp:...", "cnn", "lenet5" or layers such as
	// "conv:32x5,pool:2,fc:10") for inputs of InputShape (InputDim floats)
	// and Classes outputs, initialised with InitSeed. Network builds it.
	Model    string `json:"model"`
	InputDim int    `json:"input_dim"`
	Classes  int    `json:"classes"`
	InitSeed uint64 `json:"init_seed"`
	// InputShape is the shape of one example (C×H×W) for a model that
	// reads it (a net), with InputShape.Dim() == InputDim. It is zero for
	// an MLP, which reads its input flat, and in logs written before the
	// field existed: the zero shape is 1×1×InputDim and is omitted from
	// the JSON, so that those runs encode as they did. SetInput sets it.
	InputShape nn.Shape `json:"input_shape,omitzero"`
	// Strategy is the aggregation strategy's spec (aggregate.Parse),
	// differential privacy included (its dp-* keys; see DP).
	Strategy string       `json:"strategy"`
	Round    round.Config `json:"round"`
	// TaskSeed drives the clients' local randomness (round.TaskSeed) and
	// the download codec's (DownloadSeed).
	TaskSeed uint64 `json:"task_seed"`
	// LocalEpochs, BatchSize, LR, Momentum and WeightDecay are the
	// clients' local SGD (client.Task). Clients receive the rates as
	// float32.
	LocalEpochs int     `json:"local_epochs"`
	BatchSize   int     `json:"batch_size"`
	LR          float64 `json:"lr"`
	Momentum    float64 `json:"momentum"`
	WeightDecay float64 `json:"weight_decay"`
	// ProxMu is FedProx's proximal coefficient in the clients' local
	// objective (client.Task.ProxMu); 0 is plain FedAvg training.
	ProxMu float64 `json:"prox_mu,omitempty"`
	// UploadCodec is the gradient codec spec of client updates; "" or
	// "none" (gradient.IsNone) is dense float32.
	UploadCodec string `json:"upload_codec"`
	// DownloadCodec is the gradient codec spec of model downloads; "" or
	// "none" downloads the dense float32 global model (it is omitted from
	// the JSON then, so that logs written before the field existed decode
	// and encode the same). With a codec the server publishes each new
	// global model as an encoded delta (STC with an exact server
	// residual), clients download the deltas since the version they hold,
	// or the whole model when they are too far behind, and train from the
	// model they reconstruct.
	DownloadCodec string `json:"download_codec,omitempty"`
	// DownloadMaxLag is the number of encoded deltas kept for clients that
	// are behind (0: DefaultDownloadMaxLag); a client further behind
	// downloads the whole model.
	DownloadMaxLag int `json:"download_max_lag,omitempty"`
	// FedEvalEvery makes the selected clients evaluate the model they
	// train from on their held-out examples every so many rounds
	// (round.EvalRound: rounds 1, 1+N, ...) and report it with their
	// update (federated evaluation, docs/evaluation.md); 0 is off, and
	// omitted from the JSON, so that logs written before the field decode
	// and encode the same.
	FedEvalEvery int `json:"fed_eval_every,omitempty"`
	// SecAgg, if not nil, aggregates each round by secure aggregation
	// (see SecAgg); nil, and omitted from the JSON, is plain aggregation.
	SecAgg *SecAgg `json:"secagg,omitempty"`
}

// Bounds of a Spec. The client checks the tasks it receives against the
// same constants (CheckLocal, CheckUploadCodec, CheckDownloadCodec).
// The defaults of the run flags of `fedzip simulate` and `fedzip
// coordinator`: settings that reach 96 % on the iid 2NN with 150× fewer
// total bytes, uploads and downloads, than dense FedAvg and end within
// 0.6 points of its accuracy at round 200 (docs/benchmarks.md, "Total
// bytes"): 1 % ternary uploads, lattice downloads, and a server step that
// falls from 3 to FedAvg's 1 over 200 rounds, bounded by the round's
// medians with the median norm capped at twice the last round's
// (bound-growth, docs/strategies.md). docs/codecs.md gives the
// settings measured on non-IID data. The strategy's input quorum keeps a
// backdoor's trigger out of the first layer (docs/robustness.md,
// "Backdoor"): the weights from an input move only once 24 distinct
// clients (or 3/4 of those seen, if fewer) have sent one of them.
const (
	DefaultUploadCodec   = "stcw"
	DefaultDownloadCodec = "lattice"
	DefaultStrategy      = defaultRule + defaultBoundGrowth + defaultQuorum
)

// defaultBoundGrowth is the key of DefaultStrategy that caps the bound's
// median norm at twice the last round's (aggregate.DefaultBoundGrowth),
// which a spec must state: without it the bound has no cap, as in the
// logs committed before it existed.
const defaultBoundGrowth = ",bound-growth=2"

// defaultRule is DefaultStrategy's rule, and defaultQuorum its input
// quorum against backdoors (aggregate.Quorum with ByInput and Frac).
const (
	defaultRule   = "fedavgm,lr=3,momentum=0,anneal=200"
	defaultQuorum = ",quorum=24,quorum-by=input,quorum-frac=0.75"
)

const (
	// MaxLocalEpochs bounds Spec.LocalEpochs.
	MaxLocalEpochs = 1000
	// MaxBatchSize bounds Spec.BatchSize.
	MaxBatchSize = 1 << 16
	// MaxLR bounds Spec.LR, which must be positive.
	MaxLR = 1000
	// MaxMomentum is the least momentum refused: Spec.Momentum is in
	// [0, MaxMomentum).
	MaxMomentum = 1
	// MaxWeightDecay bounds Spec.WeightDecay, in [0, MaxWeightDecay].
	MaxWeightDecay = 1
	// MaxProxMu bounds Spec.ProxMu; besides, ProxMu·LR must stay below 2
	// (the proximal step alone diverges beyond).
	MaxProxMu = 1e4
	// MaxRounds bounds Spec.Round.Rounds.
	MaxRounds = 1_000_000
	// MaxSpecLen bounds the model and codec spec strings, which every
	// task carries.
	MaxSpecLen = 256
	// MaxLayerSize bounds the input dimension, the classes and every
	// layer of the model (nn.NewMLP's bound).
	MaxLayerSize = 1 << 20
	// MaxParams bounds the model's parameters: 2²⁷, a 512 MiB float32
	// model (the clients' default limit).
	MaxParams = gradient.DefaultMaxParams
	// MaxWorkspaceFloats bounds the scratch memory a client allocates to
	// train the model at the batch size (nn.ScratchFloats: activations,
	// their gradients, im2col buffers), 2²⁷ float32 (512 MiB): McMahan's
	// cnn trains in it with batches of up to 480.
	MaxWorkspaceFloats = 1 << 27
	// DefaultDownloadMaxLag is the number of download deltas kept when
	// Spec.DownloadMaxLag is 0.
	DefaultDownloadMaxLag = 20
	// MaxDownloadMaxLag bounds Spec.DownloadMaxLag: each kept delta is in
	// the server's memory (and in every coordinator replica's snapshot).
	MaxDownloadMaxLag = 1000
)

// downloadSeed is mixed into TaskSeed for the download codec's random
// draws, so that they differ from the clients' task seeds.
const downloadSeed = 0x646f776e6c6f6164 // "download"

func invalid(format string, a ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, a...)...)
}

// Validate reports the first field of s that the simulator, the
// coordinator or a client would refuse, with an error wrapping ErrInvalid
// that names it by its flag. A nil error means every client accepts the
// run's tasks (CheckLocal, CheckUploadCodec, CheckDownloadCodec, the
// model's bounds) and the coordinator can build it (aggregate.Parse,
// round.New, the codecs).
func (s Spec) Validate() error {
	if err := s.validateModel(); err != nil {
		return err
	}
	if err := s.validateRound(); err != nil {
		return err
	}
	if !(s.ProxMu >= 0 && s.ProxMu <= MaxProxMu) {
		return invalid("--prox-mu %v: want a value in [0, %g]", s.ProxMu, float64(MaxProxMu))
	}
	if err := CheckLocal(s.LocalEpochs, s.BatchSize, s.Optimizer(), float32(s.ProxMu)); err != nil {
		return err
	}
	if err := s.validateWorkspace(); err != nil {
		return err
	}
	if err := CheckUploadCodec(s.UploadCodec); err != nil {
		return err
	}
	if err := CheckDownloadCodec(s.DownloadCodec); err != nil {
		return err
	}
	if s.DownloadMaxLag < 0 || s.DownloadMaxLag > MaxDownloadMaxLag {
		return invalid("--download-max-lag %d: want 1..%d (0: %d)", s.DownloadMaxLag, MaxDownloadMaxLag, DefaultDownloadMaxLag)
	}
	if err := s.validateSeededDownload(); err != nil {
		return err
	}
	if s.FedEvalEvery < 0 || s.FedEvalEvery > MaxRounds {
		return invalid("--fed-eval-every %d: want 0..%d (0: off)", s.FedEvalEvery, MaxRounds)
	}
	return s.validateSecAgg()
}

func (s Spec) validateModel() error {
	switch {
	case len(s.Model) > MaxSpecLen:
		return invalid("--model of %d bytes: at most %d", len(s.Model), MaxSpecLen)
	case s.InputDim < 1 || s.InputDim > MaxLayerSize:
		return invalid("input dimension %d (--dataset, --input-shape): want 1..%d", s.InputDim, MaxLayerSize)
	case s.Classes < 2 || s.Classes > MaxLayerSize:
		return invalid("classes %d (--dataset, --classes): want 2..%d", s.Classes, MaxLayerSize)
	}
	if sh := s.InputShape; sh != (nn.Shape{}) && (sh.C < 1 || sh.H < 1 || sh.W < 1 || sh.Dim() != s.InputDim) {
		return invalid("--input-shape %v: %d floats, the input dimension is %d", sh, sh.Dim(), s.InputDim)
	}
	m, err := s.Network()
	if err != nil {
		return invalid("--model %q: %v (see nn.ParseModel: 2nn, lenet300, mlp:H1,H2,..., cnn, lenet5 or layers such as conv:32x5,pool:2,fc:10)", s.Model, err)
	}
	if _, mlp := m.(*nn.MLP); !mlp && s.InputShape == (nn.Shape{}) {
		// checkApply reads a run without a shape as it always did (an
		// MLP's): a net must say what it reads.
		return invalid("--model %q reads images: it needs the input shape (--input-shape)", s.Model)
	}
	if m.NumParams() > MaxParams {
		return invalid("--model %q has %d parameters, at most %d", s.Model, m.NumParams(), MaxParams)
	}
	return nil
}

// validateWorkspace checks the scratch memory a client allocates for the
// model at the batch size (remote.TaskModel's bound), without allocating
// it. The model and the batch size have been checked.
func (s Spec) validateWorkspace() error {
	m, _ := s.Network()
	if n := nn.ScratchFloats(m, s.BatchSize); n > MaxWorkspaceFloats {
		return invalid("--batch-size %d with --model %s: a training workspace of %d values, over %d (%d MiB)", s.BatchSize, s.Model, n, MaxWorkspaceFloats, MaxWorkspaceFloats>>18)
	}
	return nil
}

// Shape returns the shape of one input example: InputShape, or
// 1×1×InputDim when it is zero.
func (s Spec) Shape() nn.Shape {
	if s.InputShape == (nn.Shape{}) {
		return nn.Flat(s.InputDim)
	}
	return s.InputShape
}

// Network returns the model the run trains: nn.ParseModel of Model for
// inputs of Shape() and Classes outputs. Every driver builds its model
// with it.
func (s Spec) Network() (nn.Model, error) {
	if len(s.Model) > MaxSpecLen {
		return nil, invalid("--model of %d bytes: at most %d", len(s.Model), MaxSpecLen)
	}
	sh := s.Shape()
	if sh.C < 1 || sh.H < 1 || sh.W < 1 || s.Classes < 1 {
		return nil, invalid("input shape %v and classes %d: want sides and classes of 1 or more", sh, s.Classes)
	}
	return nn.ParseModel(s.Model, sh, s.Classes)
}

// SetInput sets InputDim and InputShape for examples of shape in. Call it
// after setting Model: the shape is recorded only for a model that reads
// it (a net); an MLP reads its input flat, and its run keeps the encoding
// it had before shapes existed.
func (s *Spec) SetInput(in nn.Shape) {
	s.InputDim, s.InputShape = in.Dim(), in
	if m, err := nn.ParseModel(s.Model, in, max(s.Classes, 2)); err == nil {
		if _, mlp := m.(*nn.MLP); mlp {
			s.InputShape = nn.Shape{}
		}
	}
}

func (s Spec) validateRound() error {
	r := s.Round
	switch {
	case r.PerRound < 0:
		return invalid("--clients-per-round %d: want 0 (use --fraction) or more", r.PerRound)
	case r.PerRound == 0 && !(r.Fraction > 0 && r.Fraction <= 1):
		return invalid("--fraction %v: want a value in (0, 1]", r.Fraction)
	case r.MinClients < 0:
		return invalid("--min-clients %d: want 0 or more", r.MinClients)
	case r.Deadline < 0:
		return invalid("--deadline %v: want 0 (none) or more", r.Deadline)
	case r.Rounds < 0 || r.Rounds > MaxRounds:
		return invalid("--rounds %d: want 0..%d", r.Rounds, MaxRounds)
	}
	if err := r.Validate(); err != nil {
		return invalid("%v", err)
	}
	st, err := aggregate.Parse(s.Strategy)
	if err != nil {
		return invalid("--strategy %q: %w", s.Strategy, err)
	}
	if need := aggregate.MinUpdates(st); r.PerRound > 0 && need > r.PerRound {
		return invalid("--strategy %s needs at least %d updates a round, --clients-per-round is %d", s.Strategy, need, r.PerRound)
	}
	return nil
}

// CheckClients reports a run that cannot work with this many candidate
// clients: the strategy needs more updates a round than are selected
// (PerRound). s has been validated.
func (s Spec) CheckClients(candidates int) error {
	st, err := aggregate.Parse(s.Strategy)
	if err != nil {
		return invalid("--strategy %q: %w", s.Strategy, err)
	}
	if need, got := aggregate.MinUpdates(st), s.PerRound(candidates); need > got {
		return invalid("--strategy %s needs at least %d updates a round; %d clients with --fraction %g select %d", s.Strategy, need, candidates, s.Round.Fraction, got)
	}
	return nil
}

// PerRound returns the number of clients selected each round among
// candidates, as round.Machine computes it.
func (s Spec) PerRound(candidates int) int {
	if s.Round.PerRound > 0 {
		return min(s.Round.PerRound, candidates)
	}
	return min(max(int(math.Round(s.Round.Fraction*float64(candidates))), 1), candidates)
}

// Optimizer returns the clients' SGD as they receive it (float32 rates).
func (s Spec) Optimizer() nn.SGD {
	return nn.SGD{LR: float32(s.LR), Momentum: float32(s.Momentum), WeightDecay: float32(s.WeightDecay)}
}

// DownloadOn reports whether downloads are compressed (DownloadCodec is
// not gradient.IsNone).
func (s Spec) DownloadOn() bool { return !gradient.IsNone(s.DownloadCodec) }

// DownloadLag returns DownloadMaxLag with its default applied.
func (s Spec) DownloadLag() int {
	if s.DownloadMaxLag == 0 {
		return DefaultDownloadMaxLag
	}
	return s.DownloadMaxLag
}

// DownloadSeed returns the seed of the download codec's random draws when
// the server publishes the model that round r closed with: drawn from
// TaskSeed, apart from the clients' task seeds. The simulator and every
// coordinator replica publish with it, so that they encode the same
// deltas.
func (s Spec) DownloadSeed(r int) uint64 { return round.TaskSeed(s.TaskSeed^downloadSeed, r, 0) }

// CheckLocal reports a local-training task that a client refuses: the
// epochs, the batch size, the SGD rates as the client receives them
// (float32) and FedProx's mu. client.Task.Validate is this check, and
// Spec.Validate runs it, so that a run the coordinator accepts is one its
// clients accept.
func CheckLocal(epochs, batchSize int, opt nn.SGD, proxMu float32) error {
	switch {
	case epochs < 1 || epochs > MaxLocalEpochs:
		return invalid("--local-epochs %d: want 1..%d", epochs, MaxLocalEpochs)
	case batchSize < 1 || batchSize > MaxBatchSize:
		return invalid("--batch-size %d: want 1..%d", batchSize, MaxBatchSize)
	case !(opt.LR > 0 && opt.LR <= MaxLR):
		return invalid("--lr %v: want a value in (0, %d]", opt.LR, MaxLR)
	case !(opt.Momentum >= 0 && opt.Momentum < MaxMomentum):
		return invalid("--momentum %v: want a value in [0, %d)", opt.Momentum, MaxMomentum)
	case !(opt.WeightDecay >= 0 && opt.WeightDecay <= MaxWeightDecay):
		return invalid("--weight-decay %v: want a value in [0, %d]", opt.WeightDecay, MaxWeightDecay)
	case !(proxMu >= 0 && proxMu <= MaxProxMu):
		return invalid("--prox-mu %v: want a value in [0, %g]", proxMu, float64(MaxProxMu))
	case float64(proxMu)*float64(opt.LR) >= 2:
		// Gradient steps on mu/2·‖w − w₀‖² alone multiply w − w₀ by
		// 1 − LR·mu, which diverges beyond 2.
		return invalid("--prox-mu %v with --lr %v: local SGD diverges unless prox-mu·lr < 2", proxMu, opt.LR)
	}
	if err := opt.Validate(); err != nil {
		return invalid("%v", err)
	}
	return nil
}

// CheckUploadCodec reports an upload codec spec that a client refuses:
// longer than MaxSpecLen, or not a gradient spec. "" and "none" are dense
// float32.
func CheckUploadCodec(spec string) error {
	sp, err := codec("--upload-codec", spec)
	if err != nil {
		return err
	}
	if err := sp.CheckUpload(); err != nil {
		return invalid("--upload-codec: %w", err)
	}
	return nil
}

// CheckDownloadCodec reports a download codec spec that a client refuses:
// longer than MaxSpecLen, not a gradient spec, or one the server cannot
// encode with (momentum; gradient.Spec.CheckDownload). "" and "none" are
// dense float32.
func CheckDownloadCodec(spec string) error {
	sp, err := codec("--download-codec", spec)
	if err != nil || gradient.IsNone(spec) {
		return err
	}
	if err := sp.CheckDownload(); err != nil {
		return invalid("--download-codec %q: %w (use e.g. stc or topk=0.05,bits=ternary)", spec, err)
	}
	return nil
}

// SeededDownloadCodec is the download codec whose syncs name the keys of
// secure aggregation's random supports instead of indices
// (gradient.ServerEncoder.PublishSupport): the default of a run with a
// random secure aggregation support (SecAggDownloadCodec).
const SeededDownloadCodec = "seeded"

// SecAggDownloadCodec returns the download codec a run (simulated or a
// coordinator's) with secure aggregation sa uses when --download-codec is
// not given (codec is then its default): SeededDownloadCodec for
// DefaultDownloadCodec when sa has a random support (every version then
// changes on a support drawn from a seed every client knows), codec
// otherwise.
func SecAggDownloadCodec(codec string, sa *SecAgg) string {
	if codec != DefaultDownloadCodec || sa == nil {
		return codec
	}
	if sup, err := ParseSecAggSupport(sa.Support); err != nil || sup.Announced {
		return codec
	}
	return SeededDownloadCodec
}

// validateSeededDownload refuses a seeded download codec
// (support=seeded) without secure aggregation's random support: its keys
// are the seeds of that support, and nothing else would publish them.
func (s Spec) validateSeededDownload() error {
	sp, err := codec("--download-codec", s.DownloadCodec)
	if err != nil || !sp.Seeded {
		return err
	}
	if s.SecAgg == nil {
		return invalid("--download-codec %q: seeded syncs name the seeds of secure aggregation's random supports: they need --secagg (use lattice without it)", s.DownloadCodec)
	}
	if sup, err := ParseSecAggSupport(s.SecAgg.Support); err != nil || sup.Announced {
		return invalid("--download-codec %q: seeded syncs need --secagg-support random (an announced support is not drawn from a seed alone; use lattice)", s.DownloadCodec)
	}
	return nil
}

// DownloadSpec parses a download codec that CheckDownloadCodec accepts.
func DownloadSpec(spec string) (gradient.Spec, error) {
	if err := CheckDownloadCodec(spec); err != nil {
		return gradient.Spec{}, err
	}
	sp, _ := codec("--download-codec", spec)
	return sp, nil
}

func codec(flag, spec string) (gradient.Spec, error) {
	if len(spec) > MaxSpecLen {
		return gradient.Spec{}, invalid("%s of %d bytes: at most %d", flag, len(spec), MaxSpecLen)
	}
	if gradient.IsNone(spec) {
		return gradient.Spec{}, nil
	}
	sp, err := gradient.ParseSpec(spec)
	if err != nil {
		return sp, invalid("%s: %w", flag, err)
	}
	return sp, nil
}
