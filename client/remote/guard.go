package remote

import (
	"errors"
	"fmt"
	"math"

	"github.com/fedzip/fedzip/client"
	"github.com/fedzip/fedzip/nn"
	"github.com/fedzip/fedzip/runspec"
	"github.com/fedzip/fedzip/transport/fedzippb"
)

// What the client refuses from the network. A task, a model or an update
// refused for one of these reasons is logged and skipped: the runtime does
// not train on it, does not upload it, leaves its state files as they
// were, and waits for the next task. It never exits for them.

// Sentinel errors of the runtime's checks; test with errors.Is.
var (
	// ErrTaskRefused means a task from the coordinator holds a count, rate
	// or string out of range (see Config.MaxParams and Task.Validate).
	ErrTaskRefused = errors.New("client: task refused")
	// ErrModelRefused means a downloaded global model (whole, or rebuilt
	// from a delta) holds a value that is not finite or is larger in
	// magnitude than Config.MaxAbsParam.
	ErrModelRefused = errors.New("client: model refused")
	// ErrUpdateRefused means local training produced an update that is not
	// finite or is larger in magnitude than Config.MaxAbsParam: it
	// is not uploaded.
	ErrUpdateRefused = errors.New("client: update refused")
	// ErrInitModel means the client cannot hold the run's initial model
	// without downloading it: the task announces none (init_crc32c), or
	// the model the client builds from init_seed has another checksum.
	// The client then downloads the whole model.
	ErrInitModel = errors.New("client: initial model not rebuilt")
)

const (
	// DefaultMaxAbsParam is Config.MaxAbsParam's default: no model
	// parameter and no update value may exceed 10⁶ in magnitude. Trained
	// networks hold weights of order 1 to 10²; 10⁶ leaves room for unusual
	// models while keeping every sum the client computes (training,
	// error-feedback accumulation) far from float32's overflow at 3.4·10³⁸.
	DefaultMaxAbsParam = 1e6
	// DefaultMaxParams is Config.MaxParams's default: 2²⁷
	// parameters, a 512 MiB float32 model.
	DefaultMaxParams = runspec.MaxParams
	// MaxWorkspaceFloats bounds the scratch memory a task may make the
	// client allocate to train (nn.ScratchFloats of the model at the
	// task's batch size), 2²⁷ float32 (512 MiB).
	MaxWorkspaceFloats = runspec.MaxWorkspaceFloats
	// maxTaskString bounds the model and codec spec strings of a task.
	maxTaskString = runspec.MaxSpecLen
	// maxLayerSize is the widest layer of a task's network (nn.NewMLP's
	// bound).
	maxLayerSize = runspec.MaxLayerSize
)

// checkTask reports, with an error wrapping ErrTaskRefused, a task whose
// fields cannot be used as they are: every count that sizes an allocation
// (model_params against maxParams, input_dim, classes, batch size, epochs),
// the optimizer's rates (finite and in range, as Task.Validate), the
// deadline, the round (the codecs take it as a uint32) and the codec and
// model strings (bounded and parsable). It never panics.
func checkTask(t *fedzippb.Task, maxParams int) error {
	refuse := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s", ErrTaskRefused, fmt.Sprintf(format, a...))
	}
	if p := t.GetModelParams(); p == 0 || p > uint64(maxParams) {
		return refuse("model_params %d out of range 1..%d", p, maxParams)
	}
	if d := t.GetInputDim(); d == 0 || d > maxLayerSize {
		return refuse("input_dim %d out of range 1..%d", d, maxLayerSize)
	}
	if c := t.GetClasses(); c == 0 || c > maxLayerSize {
		return refuse("classes %d out of range 1..%d", c, maxLayerSize)
	}
	if r := t.GetRound(); r > math.MaxUint32 {
		return refuse("round %d beyond 2^32", r)
	}
	if len(t.GetModel()) > maxTaskString {
		return refuse("model spec of %d bytes (limit %d)", len(t.GetModel()), maxTaskString)
	}
	if d := t.GetDeadline(); d != nil {
		if err := d.CheckValid(); err != nil {
			return refuse("deadline: %v", err)
		}
	}
	for _, x := range []struct {
		name string
		v    float64
	}{{"lr", t.GetLr()}, {"momentum", t.GetMomentum()}, {"weight_decay", t.GetWeightDecay()}, {"prox_mu", t.GetProxMu()}} {
		// The float32 conversion of a huge double is Inf, caught below;
		// a NaN or Inf double is caught here.
		if math.IsNaN(x.v) || math.IsInf(x.v, 0) {
			return refuse("%s %v", x.name, x.v)
		}
	}
	if err := taskOf(t).Validate(); err != nil {
		return refuse("%v", err)
	}
	if _, err := checkSecAggLocal(t); err != nil {
		return err
	}
	// The run spec's codec checks: the coordinator checked its run with
	// the same functions before committing it.
	if err := runspec.CheckUploadCodec(t.GetUploadCodec()); err != nil {
		return refuse("%v", err)
	}
	if err := runspec.CheckDownloadCodec(t.GetDownloadCodec()); err != nil {
		return refuse("%v", err)
	}
	if _, err := TaskModel(t); err != nil {
		return err
	}
	return nil
}

// CheckTask is the check the runtime makes of every task it receives
// (Config.MaxParams is maxParams): a task the coordinator built
// from a run that runspec.Spec.Validate accepts passes it.
func CheckTask(t *fedzippb.Task, maxParams int) error { return checkTask(t, maxParams) }

// taskOf is the local training task a coordinator's task asks for.
func taskOf(t *fedzippb.Task) client.Task {
	return client.Task{Round: int(t.GetRound()), Seed: t.GetTaskSeed(), Epochs: int(t.GetEpochs()), BatchSize: int(t.GetBatchSize()),
		Optimizer: nn.SGD{LR: float32(t.GetLr()), Momentum: float32(t.GetMomentum()), WeightDecay: float32(t.GetWeightDecay())},
		ProxMu:    float32(t.GetProxMu())}
}

// TaskShape returns the shape of one input example of a task: its
// input_channels × input_height × input_width, or 1×1×input_dim when all
// three are zero (an MLP's task, or a coordinator older than the fields).
// A shape that does not hold input_dim floats is refused.
func TaskShape(t *fedzippb.Task) (nn.Shape, error) {
	c, h, w := t.GetInputChannels(), t.GetInputHeight(), t.GetInputWidth()
	if c == 0 && h == 0 && w == 0 {
		return nn.Flat(int(t.GetInputDim())), nil
	}
	// Each side is at most input_dim, so the product of three stays
	// within a uint64.
	d := uint64(t.GetInputDim())
	if c == 0 || h == 0 || w == 0 || uint64(c) > d || uint64(h) > d || uint64(w) > d || uint64(c)*uint64(h)*uint64(w) != d {
		return nn.Shape{}, fmt.Errorf("%w: input shape %dx%dx%d for input_dim %d", ErrTaskRefused, c, h, w, d)
	}
	return nn.Shape{C: int(c), H: int(h), W: int(w)}, nil
}

// TaskModel returns the network a task names (nn.ParseModel of its model
// for inputs of TaskShape and its classes), after checking that it has
// exactly the task's model_params parameters, at most runspec.MaxParams,
// and that its scratch for the task's batch size (nn.ScratchFloats) stays
// within MaxWorkspaceFloats, before anything that size is allocated. The runtime's task check
// (CheckTask) makes it; call it from Config.NewTrainer.
func TaskModel(t *fedzippb.Task) (nn.Model, error) {
	if len(t.GetModel()) > maxTaskString {
		return nil, fmt.Errorf("%w: model spec of %d bytes (limit %d)", ErrTaskRefused, len(t.GetModel()), maxTaskString)
	}
	if d, c := t.GetInputDim(), t.GetClasses(); d == 0 || d > maxLayerSize || c == 0 || c > maxLayerSize {
		return nil, fmt.Errorf("%w: input_dim %d and classes %d: want 1..%d", ErrTaskRefused, d, c, maxLayerSize)
	}
	shape, err := TaskShape(t)
	if err != nil {
		return nil, err
	}
	m, err := nn.ParseModel(t.GetModel(), shape, int(t.GetClasses()))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrTaskRefused, err)
	}
	if m.NumParams() > runspec.MaxParams {
		// No run has more: refused before anything of its size is built.
		return nil, fmt.Errorf("%w: model %s has %d parameters (limit %d)", ErrTaskRefused, t.GetModel(), m.NumParams(), runspec.MaxParams)
	}
	if uint64(m.NumParams()) != t.GetModelParams() {
		return nil, fmt.Errorf("%w: model %s has %d parameters, the task says %d", ErrTaskRefused, t.GetModel(), m.NumParams(), t.GetModelParams())
	}
	b := int(min(t.GetBatchSize(), runspec.MaxBatchSize+1))
	if n := nn.ScratchFloats(m, b); b == 0 || n > MaxWorkspaceFloats {
		return nil, fmt.Errorf("%w: batch size %d for model %s needs a workspace of %d values, over %d", ErrTaskRefused, t.GetBatchSize(), t.GetModel(), n, MaxWorkspaceFloats)
	}
	return m, nil
}

// checkValues returns an error if some value of xs is not finite or is
// larger than bound in magnitude.
func checkValues(xs []float32, bound float32) error {
	for i, x := range xs {
		if !(x <= bound && x >= -bound) {
			return fmt.Errorf("value %d is %v (bound ±%v)", i, x, bound)
		}
	}
	return nil
}
