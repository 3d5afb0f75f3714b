package pipeline

import (
	"context"
	"fmt"
	"math"

	"github.com/fedzip/fedzip/compress"
	"github.com/fedzip/fedzip/deliver"
	"github.com/fedzip/fedzip/nn"
)

// runStage applies one stage to p.model.
func (p *runner) runStage(ctx context.Context, st Stage) error {
	switch st.Op {
	case "distill":
		return p.distill(ctx, st)
	case "prune":
		return p.prune(ctx, st)
	case "cluster":
		return p.cluster(ctx, st)
	case "quantize":
		return p.quantize(st)
	case "lowrank":
		return p.lowrank(ctx, st)
	case "encode":
		return p.encode(st)
	case "finetune":
		return p.tune(ctx, p.model, st.trainOpts("epochs", 1), nil)
	}
	return fmt.Errorf("%w: unknown stage %q", ErrRecipe, st.Op)
}

// plain reports an error if a stage that changes values or shapes meets a
// tensor already clustered or quantized.
func (p *runner) plain(op string) error {
	for _, q := range p.model.AllParams() {
		if q.Clustered() || q.Frozen() {
			return fmt.Errorf("%s must come before cluster, quantize and encode: %s is already coded", op, q.Name)
		}
	}
	return nil
}

func (p *runner) distill(ctx context.Context, st Stage) error {
	hidden, err := parseArch(st.Params["student"])
	if err != nil {
		return err
	}
	teacher := p.model
	tnet, err := teacher.nnModel()
	if err != nil {
		return fmt.Errorf("distill: teacher: %w", err)
	}
	T := float32(st.float("T", 4))
	classes := teacher.Classes()
	soft := p.softTargets(tnet, teacher.Params, T)
	sizes := append(append([]int{}, hidden...), classes)
	student := newMLPModel(teacher.Input, sizes)
	smlp, err := student.MLP()
	if err != nil {
		return err
	}
	smlp.Init(student.Params, p.cfg.Seed)
	o := st.trainOpts("epochs", 5)
	if _, ok := st.Params["lr"]; !ok {
		o.opt.LR = 0.05
	}
	eng := newDenseEngine(student, o.batch)
	eng.T, eng.alpha = T, float32(st.float("alpha", 0.7))
	p.logf("  distilling into %s (T=%g, alpha=%g, %d epochs)", student.Arch(), T, eng.alpha, o.epochs)
	if _, err := p.fineTune(ctx, student, eng, o, soft, nil); err != nil {
		return err
	}
	p.model = student
	return nil
}

func (p *runner) prune(ctx context.Context, st Stage) error {
	if err := p.plain("prune"); err != nil {
		return err
	}
	m := p.model
	o := st.trainOpts("finetune", 0)
	switch {
	case st.Params["neurons"] != "":
		return p.pruneNeurons(ctx, st, o)
	case st.Params["filters"] != "":
		return p.pruneFilters(ctx, st, o)
	case st.Params["nm"] != "":
		n, mm, _ := parseNM(st.Params["nm"])
		for _, w := range m.Weights() {
			if w.Cols()%mm != 0 {
				return fmt.Errorf("prune nm:%d:%d: %s has %d columns, not a multiple of %d", n, mm, w.Name, w.Cols(), mm)
			}
			if w.Keep == nil {
				w.Keep = ones(w.Size())
			}
			compress.PruneNM(w.Keep, w.Data, n, mm)
		}
		err := p.tune(ctx, m, o, nil)
		return err
	}
	def := st.float("sparsity", 0)
	global := st.str("scope", "layer") == "global"
	layerOf := map[*Param]string{}
	for _, l := range m.Layers {
		for _, w := range l.W {
			layerOf[w] = l.Name
		}
	}
	weights := m.Weights()
	final := make([]float64, len(weights))
	initial := make([]float64, len(weights))
	for i, w := range weights {
		final[i] = st.layerValue(layerOf[w], def)
		if w.Keep == nil {
			w.Keep = ones(w.Size())
		}
		initial[i] = float64(w.Size()-w.Kept()) / float64(w.Size())
	}
	var gInitial float64
	if global {
		tot, pruned := 0, 0
		for _, w := range weights {
			tot += w.Size()
			pruned += w.Size() - w.Kept()
		}
		gInitial = float64(pruned) / float64(tot)
	}
	apply := func(frac float64) { // frac in [0,1] of the way from initial to final
		if global {
			keep := make([][]bool, len(weights))
			data := make([][]float32, len(weights))
			for i, w := range weights {
				keep[i], data[i] = w.Keep, w.Data
			}
			compress.PruneMagnitudeGlobal(keep, data, gInitial+(def-gInitial)*frac)
			return
		}
		for i, w := range weights {
			compress.PruneMagnitude(w.Keep, w.Data, initial[i]+(final[i]-initial[i])*frac)
		}
	}
	cubic := st.str("schedule", "cubic") == "cubic" && o.epochs > 0
	if !cubic {
		apply(1)
		err := p.tune(ctx, m, o, nil)
		return err
	}
	// Zhu–Gupta: prune in `steps` events over the first two thirds of
	// fine-tuning, along the cubic schedule, and recover in the last third.
	steps := st.int("steps", 10)
	next := 1
	schedule := func(t, total int) {
		end := max(1, total*2/3)
		for next <= steps && t >= next*end/steps {
			at := next * end / steps
			apply(compress.CubicSparsity(0, 1, at, 0, end))
			next++
		}
	}
	err := p.tune(ctx, m, o, schedule)
	if next <= steps {
		apply(1)
	}
	return err
}

func ones(n int) []bool {
	k := make([]bool, n)
	for i := range k {
		k[i] = true
	}
	return k
}

// pruneNeurons removes the fraction of each hidden layer's neurons with the
// smallest product of incoming and outgoing weight norms, shrinking the
// layers, then fine-tunes.
func (p *runner) pruneNeurons(ctx context.Context, st Stage, o trainOpts) error {
	m := p.model
	if m.Net != nil {
		return fmt.Errorf("prune neurons: works on MLPs, not on %s (prune filters instead)", m.Arch())
	}
	frac := st.float("neurons", 0)
	for li := 0; li+1 < len(m.Layers); li++ {
		l, next := m.Layers[li], m.Layers[li+1]
		if len(l.W) != 1 || len(next.W) != 1 || l.W[0].Keep != nil || next.W[0].Keep != nil {
			return fmt.Errorf("prune neurons: needs dense, unfactored layers (put it first)")
		}
	}
	for li := 0; li+1 < len(m.Layers); li++ {
		l, next := m.Layers[li], m.Layers[li+1]
		w, b, wn := l.W[0], l.B, next.W[0]
		out, in, nout := w.Rows(), w.Cols(), wn.Rows()
		rowN := make([]float32, out)
		compress.RowNorms(rowN, w.Data)
		colN := make([]float32, out)
		compress.ColNorms(colN, wn.Data)
		score := make([]float32, out)
		for j := range score {
			score[j] = rowN[j] * colN[j]
		}
		keep := make([]bool, out)
		k := compress.SelectStructured(keep, score, frac)
		nw := make([]float32, 0, k*in)
		nb := make([]float32, 0, k)
		nwn := make([]float32, 0, nout*k)
		for j := 0; j < out; j++ {
			if keep[j] {
				nw = append(nw, w.Data[j*in:(j+1)*in]...)
				nb = append(nb, b.Data[j])
			}
		}
		for r := 0; r < nout; r++ {
			for j := 0; j < out; j++ {
				if keep[j] {
					nwn = append(nwn, wn.Data[r*out+j])
				}
			}
		}
		w.Shape, w.Data = []int{k, in}, nw
		b.Shape, b.Data = []int{k}, nb
		wn.Shape, wn.Data = []int{nout, k}, nwn
	}
	m.rebuild(m.Layers)
	p.logf("  structured pruning: %s", m.Arch())
	err := p.tune(ctx, m, o, nil)
	return err
}

// pruneFilters removes the fraction of each conv layer's filters (output
// channels; convN:F per layer) with the smallest L2 norm: their kernel rows
// and biases are pruned as whole rows and stay zero through fine-tuning, so
// that the file stores nothing for them and the runtime runs no tap of
// them. The layers keep their shapes.
func (p *runner) pruneFilters(ctx context.Context, st Stage, o trainOpts) error {
	m := p.model
	def := st.float("filters", 0)
	n := 0
	for _, l := range m.Layers {
		if l.Op != deliver.OpConv {
			continue
		}
		n++
		w := l.W[0]
		rows, cols := w.Rows(), w.Cols()
		norms := make([]float32, rows)
		compress.RowNorms(norms, w.Data)
		keep := make([]bool, rows)
		compress.SelectStructured(keep, norms, st.layerValue(l.Name, def))
		if w.Keep == nil {
			w.Keep = ones(w.Size())
		}
		if l.B.Keep == nil {
			l.B.Keep = ones(l.B.Size())
		}
		for r, k := range keep {
			if !k {
				clear(w.Keep[r*cols : (r+1)*cols])
				l.B.Keep[r] = false
			}
		}
		compress.ApplyMask(w.Data, w.Keep)
		compress.ApplyMask(l.B.Data, l.B.Keep)
	}
	if n == 0 {
		return fmt.Errorf("prune filters: %s has no conv layer", m.Arch())
	}
	return p.tune(ctx, m, o, nil)
}

func (p *runner) cluster(ctx context.Context, st Stage) error {
	m := p.model
	bits := st.int("bits", 5)
	iters := st.int("iters", 30)
	for _, l := range m.Layers {
		for _, w := range l.W {
			if w.Frozen() {
				return fmt.Errorf("cluster: %s is already quantized; put cluster before quantize", w.Name)
			}
			b := int(st.layerValue(l.Name, float64(bits)))
			var vals []float32
			for i, v := range w.Data {
				if w.Keep == nil || w.Keep[i] {
					vals = append(vals, v)
				}
			}
			k := min(1<<b, max(len(vals), 1))
			cent := make([]float32, k)
			codes := make([]uint8, len(vals))
			compress.KMeans(cent, codes, vals, iters)
			w.Codes = make([]uint8, w.Size())
			j := 0
			for i := range w.Data {
				if w.Keep == nil || w.Keep[i] {
					w.Codes[i] = codes[j]
					j++
				}
			}
			w.Centroids, w.Bits = cent, b
			w.project(nil)
		}
	}
	o := st.trainOpts("finetune", 0)
	err := p.tune(ctx, m, o, nil)
	return err
}

func (p *runner) quantize(st Stage) error {
	m := p.model
	for _, w := range m.Weights() {
		if w.Clustered() || w.Frozen() {
			continue // already shared or stored small
		}
		if st.Arg == "f16" {
			w.Half = true
			for i, v := range w.Data {
				w.Data[i] = compress.Float16frombits(compress.Float16bits(v))
			}
			continue
		}
		rows, cols := w.Rows(), w.Cols()
		lo, hi := make([]float32, rows), make([]float32, rows)
		pct := st.float("pct", 99.99)
		percentile := st.str("calib", "minmax") == "percentile"
		for r := 0; r < rows; r++ {
			var vals []float32
			for c := 0; c < cols; c++ {
				if w.Keep == nil || w.Keep[r*cols+c] {
					vals = append(vals, w.Data[r*cols+c])
				}
			}
			if len(vals) == 0 {
				continue
			}
			if percentile {
				compress.CalibratePercentile(lo[r:r+1], hi[r:r+1], vals, pct)
			} else {
				compress.CalibrateMinMax(lo[r:r+1], hi[r:r+1], vals)
			}
		}
		w.Scale, w.Zero = make([]float32, rows), make([]int8, rows)
		compress.AffineParams(w.Scale, w.Zero, lo, hi)
		w.Q = make([]int8, w.Size())
		compress.QuantizeAffine(w.Q, w.Data, w.Scale, w.Zero)
		compress.DequantizeAffine(w.Data, w.Q, w.Scale, w.Zero)
		if w.Keep != nil {
			compress.ApplyMask(w.Data, w.Keep)
		}
	}
	return nil
}

func (p *runner) lowrank(ctx context.Context, st Stage) error {
	if err := p.plain("lowrank"); err != nil {
		return err
	}
	m := p.model
	if m.Net != nil {
		return p.lowrankNet(ctx, st)
	}
	for _, l := range m.Layers {
		if len(l.W) != 1 || l.W[0].Keep != nil {
			return fmt.Errorf("lowrank: %s is already factored or pruned; put lowrank before prune", l.Name)
		}
	}
	factored := false
	for _, l := range m.Layers {
		w := l.W[0]
		rows, cols := w.Rows(), w.Cols()
		var rank int
		if r, ok := st.Params[l.Name]; ok {
			fmt.Sscan(r, &rank)
		} else if _, ok := st.Params["rank"]; ok {
			rank = st.int("rank", 0)
		}
		a, b := make([]float32, rows*min(rows, cols)), make([]float32, min(rows, cols)*cols)
		if rank == 0 && st.Params["energy"] != "" {
			sv, err := compress.LowRank(a[:rows], b[:cols], w.Data, rows, cols, 1)
			if err != nil {
				return err
			}
			rank = compress.RankForEnergy(sv, st.float("energy", 1))
		}
		rank = min(rank, min(rows, cols))
		// Factor only where it saves parameters.
		if rank < 1 || rank*(rows+cols) >= rows*cols {
			continue
		}
		a, b = a[:rows*rank], b[:rank*cols]
		if _, err := compress.LowRank(a, b, w.Data, rows, cols, rank); err != nil {
			return err
		}
		pa := &Param{Name: w.Name + ".a", Shape: []int{rows, rank}, Data: a}
		pb := &Param{Name: w.Name + ".b", Shape: []int{rank, cols}, Data: b}
		l.W = []*Param{pa, pb}
		factored = true
	}
	if !factored {
		return fmt.Errorf("lowrank: no layer gets smaller at that rank")
	}
	m.rebuild(m.Layers)
	p.logf("  low rank: %s", m.Arch())
	o := st.trainOpts("finetune", 0)
	err := p.tune(ctx, m, o, nil)
	return err
}

func (p *runner) encode(st Stage) error {
	coding := deliver.Packed
	if st.Arg == "huffman" {
		coding = deliver.Huffman
	}
	for _, l := range p.model.Layers {
		for _, q := range l.params() {
			q.Coding = coding
			if st.str("codebook", "f32") == "f16" && q.Clustered() {
				q.CentroidsHalf = true
				for i, c := range q.Centroids {
					q.Centroids[i] = compress.Float16frombits(compress.Float16bits(c))
				}
				q.project(nil)
			}
		}
		for _, b := range []*Param{l.B, l.Scale} { // biases, group norms' γ and β
			if b == nil || st.str("bias", "f32") != "f16" || b.Frozen() {
				continue
			}
			b.Half = true
			for i, v := range b.Data {
				b.Data[i] = compress.Float16frombits(compress.Float16bits(v))
			}
		}
	}
	return nil
}

// accuracy evaluates a model's parameters with nn (used for the input row
// and as a cross-check).
func accuracy(model nn.Model, params, x []float32, y []uint8) float64 {
	c, _ := model.Scratch(256).Evaluate(params, x, y)
	return float64(c) / math.Max(1, float64(len(y)))
}

// softTargets returns the soft targets at temperature T of a model over
// the whole training set (the transfer set).
func (p *runner) softTargets(model nn.Model, params []float32, T float32) []float32 {
	train := p.cfg.Train
	classes := model.Classes()
	soft := make([]float32, train.N*classes)
	ws := model.Scratch(256)
	for lo := 0; lo < train.N; lo += 256 {
		n := min(256, train.N-lo)
		copy(ws.Input(n), train.X[lo*train.Dim:(lo+n)*train.Dim])
		logits := ws.Forward(params, n)
		compress.SoftTargets(soft[lo*classes:(lo+n)*classes], logits, classes, T)
	}
	return soft
}

// tune fine-tunes m with the stage's options: on the labels, or, with kd
// set, on the distillation loss against the input model (the teacher).
func (p *runner) tune(ctx context.Context, m *Model, o trainOpts, step func(t, total int)) error {
	if o.kd == 0 || o.epochs == 0 {
		_, err := p.fineTune(ctx, m, newEngine(m, o.batch, false), o, nil, step)
		return err
	}
	if m.Net != nil {
		return fmt.Errorf("kd: fine-tuning %s against soft targets is not supported (nn trains conv nets on labels only); drop kd", m.Arch())
	}
	tnet, err := p.teacher.nnModel()
	if err != nil {
		return fmt.Errorf("kd: teacher: %w", err)
	}
	if p.softCache == nil || p.softT != o.T {
		p.softCache, p.softT = p.softTargets(tnet, p.teacher.Params, o.T), o.T
	}
	eng := newDenseEngine(m, o.batch)
	eng.T, eng.alpha = o.T, o.kd
	_, err = p.fineTune(ctx, m, eng, o, p.softCache, step)
	return err
}
