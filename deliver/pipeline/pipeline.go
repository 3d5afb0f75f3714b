package pipeline

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/fedzip/fedzip/dataset"
	"github.com/fedzip/fedzip/deliver"
)

// Config is what a compression run needs besides the model and recipe.
type Config struct {
	// Train is the fine-tuning and distillation transfer set, Test the
	// evaluation set; both with the model's input size and classes.
	Train, Test *dataset.Dataset
	// Key signs every file the run encodes.
	Key ed25519.PrivateKey
	// Seed drives shuffling and student initialisation.
	Seed uint64
	// LatencySamples is how many single predictions the latency column
	// times (default 2000).
	LatencySamples int
	// Meta is copied into the file's metadata.
	Meta map[string]string
	// Log, if not nil, receives progress lines.
	Log io.Writer
}

// Row is one line of the compression table: the model after a stage, as
// encoded in a signed file, decoded and run by the device runtime.
type Row struct {
	Stage string `json:"stage"`
	Arch  string `json:"arch"`
	// Weights counts the entries of weight matrices (not biases), Nonzero
	// the nonzero ones.
	Weights int `json:"weights"`
	Nonzero int `json:"nonzero_weights"`
	// NonzeroPct is Nonzero over the input model's weights, in percent.
	NonzeroPct float64 `json:"nonzero_pct"`
	// BitsPerWeight and IndexBits are the file's bits per nonzero weight
	// for the values (codes, codebooks, scales) and for the sparse
	// positions of the weight matrices.
	BitsPerWeight float64 `json:"bits_per_weight"`
	IndexBits     float64 `json:"index_bits"`
	// Bytes is the whole file, header and signature included; Ratio the
	// dense float32 size of the input model over it.
	Bytes int     `json:"bytes"`
	Ratio float64 `json:"ratio"`
	// Accuracy on the test set, and its change from the input model in
	// percentage points.
	Accuracy float64 `json:"test_accuracy"`
	Delta    float64 `json:"delta_points"`
	// LatencyUS is the mean time of one prediction (batch of one), and
	// MemoryBytes the weights and scratch memory of the runtime.
	LatencyUS   float64 `json:"latency_us"`
	MemoryBytes int     `json:"memory_bytes"`
	// Seconds is the wall time of the stage.
	Seconds float64 `json:"seconds"`
}

// Result is a whole run.
type Result struct {
	Recipe     string `json:"recipe"`
	DenseBytes int    `json:"dense_bytes"`
	Rows       []Row  `json:"rows"`
	// File is the final signed file.
	File []byte `json:"-"`
	// Model is the final model (a new one after distillation).
	Model *Model `json:"-"`
}

// runner runs a recipe on a model.
type runner struct {
	cfg        Config
	model      *Model
	stageIndex int
	weights0   int
	dense      int
	acc0       float64
	teacher    *Model // the input model, for kd
	softCache  []float32
	softT      float32
}

func (p *runner) logf(format string, a ...any) {
	if p.cfg.Log != nil {
		fmt.Fprintf(p.cfg.Log, format+"\n", a...)
	}
}

// Run compresses m (modified in place, or replaced by a student: see
// Result.Model) with the recipe and returns the
// table and the final signed file.
func Run(ctx context.Context, m *Model, recipe string, cfg Config) (*Result, error) {
	stages, err := ParseRecipe(recipe)
	if err != nil {
		return nil, err
	}
	if len(cfg.Key) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("pipeline: %w: no signing key", deliver.ErrKey)
	}
	if cfg.Train == nil || cfg.Test == nil || cfg.Train.Dim != m.Input || cfg.Test.Dim != m.Input || cfg.Train.Classes != m.Classes() {
		return nil, fmt.Errorf("pipeline: the data sets do not match the model's %d inputs and %d classes", m.Input, m.Classes())
	}
	if cfg.LatencySamples <= 0 {
		cfg.LatencySamples = 2000
	}
	p := &runner{cfg: cfg, model: m}
	if m.Net == nil && !m.Standard() {
		return nil, fmt.Errorf("pipeline: the input model must be a plain MLP or a Net, not %s", m.Arch())
	}
	// The teacher keeps its own parameters and layer shapes.
	p.teacher = m.clone()
	for _, w := range m.Weights() {
		p.weights0 += w.Size()
	}
	p.dense = 4 * len(m.Params)
	res := &Result{Recipe: recipe, DenseBytes: p.dense}
	// The input row: the dense float32 model run by nn, the reference for
	// latency and memory.
	row, err := p.inputRow()
	if err != nil {
		return nil, err
	}
	p.acc0 = row.Accuracy
	res.Rows = append(res.Rows, row)
	p.logf("%-40s acc %.2f%%", row.Stage, 100*row.Accuracy)
	var data []byte
	for i, st := range stages {
		p.stageIndex = i + 1
		start := time.Now()
		p.logf("stage %d: %s", i+1, st.Text)
		if err := p.runStage(ctx, st); err != nil {
			return nil, fmt.Errorf("stage %q: %w", st.Text, err)
		}
		row, data, err = p.measure(st.Text, stages[:i+1])
		if err != nil {
			return nil, fmt.Errorf("stage %q: %w", st.Text, err)
		}
		row.Seconds = time.Since(start).Seconds()
		res.Rows = append(res.Rows, row)
		p.logf("  %d bytes (%.1f×), acc %.2f%% (%+.2f), %.1f µs", row.Bytes, row.Ratio, 100*row.Accuracy, row.Delta, row.LatencyUS)
	}
	res.File, res.Model = data, p.model
	return res, nil
}

func (p *runner) inputRow() (Row, error) {
	m := p.model
	model, err := m.nnModel()
	if err != nil {
		return Row{}, err
	}
	test := p.cfg.Test
	row := Row{Stage: "input (dense float32)", Arch: m.Arch(), Weights: p.weights0, Bytes: p.dense, Ratio: 1}
	for _, w := range m.Weights() {
		row.Nonzero += w.Nonzero()
	}
	row.NonzeroPct = 100 * float64(row.Nonzero) / float64(p.weights0)
	row.BitsPerWeight = 32 * float64(p.weights0) / float64(max(row.Nonzero, 1))
	row.Accuracy = accuracy(model, m.Params, test.X, test.Y)
	// Latency of the dense model with nn, one example at a time.
	ws := model.Scratch(1)
	n := min(p.cfg.LatencySamples, test.N)
	one := func(i int) {
		copy(ws.Input(1), test.Row(i%test.N))
		ws.Forward(m.Params, 1)
	}
	for i := 0; i < 100; i++ {
		one(i)
	}
	start := time.Now()
	for i := 0; i < n; i++ {
		one(i)
	}
	row.LatencyUS = float64(time.Since(start).Microseconds()) / float64(n)
	row.MemoryBytes = 4*len(m.Params) + 4*m.activations()
	return row, nil
}

// activations returns the floats of one example's input and every
// layer's output.
func (m *Model) activations() int {
	if m.Net == nil {
		n := 0
		for _, s := range m.Sizes() {
			n += s
		}
		return n
	}
	n := m.Input
	for _, l := range m.Net.Layers() {
		switch l.Kind {
		case "conv":
			n += l.Conv.OutSize()
		case "pool":
			n += l.Pool.OutSize()
		case "fc":
			n += l.Out
		default:
			n += l.GN.C * l.GN.HW // gn; a relu keeps the previous size
		}
	}
	return n
}

// measure encodes the model, verifies and compiles the file as a device
// would, and fills a row from it.
func (p *runner) measure(stage string, done []Stage) (Row, []byte, error) {
	m := p.model
	texts := make([]string, len(done))
	for i, st := range done {
		texts[i] = st.Text
	}
	meta := map[string]string{"arch": m.Arch(), "recipe": strings.Join(texts, ";")}
	for k, v := range p.cfg.Meta {
		meta[k] = v
	}
	f := m.File(meta)
	enc, err := deliver.Encode(f, p.cfg.Key)
	if err != nil {
		return Row{}, nil, err
	}
	pub := p.cfg.Key.Public().(ed25519.PublicKey)
	net, err := deliver.Load(enc.Data, pub)
	if err != nil {
		return Row{}, nil, fmt.Errorf("reading back the file: %w", err)
	}
	row := Row{Stage: stage, Arch: m.Arch(), Bytes: len(enc.Data), Ratio: float64(p.dense) / float64(len(enc.Data))}
	var idxBytes, valBytes int
	weightNames := map[string]bool{}
	for _, w := range m.Weights() {
		row.Weights += w.Size()
		row.Nonzero += w.Nonzero()
		weightNames[w.Name] = true
	}
	for _, tb := range enc.Tensors {
		if weightNames[tb.Name] {
			idxBytes += tb.Index
			valBytes += tb.Values
		}
	}
	nz := float64(max(row.Nonzero, 1))
	row.NonzeroPct = 100 * float64(row.Nonzero) / float64(p.weights0)
	row.BitsPerWeight = 8 * float64(valBytes) / nz
	row.IndexBits = 8 * float64(idxBytes) / nz
	test := p.cfg.Test
	row.Accuracy = net.Accuracy(test.X, test.Y)
	row.Delta = 100 * (row.Accuracy - p.acc0)
	s := net.NewScratch()
	n := min(p.cfg.LatencySamples, test.N)
	for i := 0; i < 100; i++ {
		net.Predict(nil, test.Row(i%test.N), s)
	}
	start := time.Now()
	for i := 0; i < n; i++ {
		net.Predict(nil, test.Row(i%test.N), s)
	}
	row.LatencyUS = float64(time.Since(start).Microseconds()) / float64(n)
	row.MemoryBytes = net.WeightBytes() + s.Bytes()
	return row, enc.Data, nil
}
