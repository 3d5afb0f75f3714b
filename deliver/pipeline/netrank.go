package pipeline

import (
	"context"
	"fmt"
	"strings"

	"github.com/fedzip/fedzip/compress"
	"github.com/fedzip/fedzip/deliver"
	"github.com/fedzip/fedzip/nn"
)

// netTokens returns the layer spec of each of net's layers, as ParseNet
// reads them: the spec the network would be written with.
func netTokens(net *nn.Net) ([]string, error) {
	layers := net.Layers()
	toks := make([]string, len(layers))
	for i, l := range layers {
		var t string
		switch l.Kind {
		case "conv":
			c := l.Conv
			if c.KH != c.KW || (c.Pad != nn.PadSame && c.Pad != nn.PadValid) {
				return nil, fmt.Errorf("conv layer %d (%d×%d kernel, padding %d) has no spec", i+1, c.KH, c.KW, c.Pad)
			}
			t = fmt.Sprintf("conv:%dx%d", c.Out, c.KH)
			if c.Stride != 1 {
				t += fmt.Sprintf("/%d", c.Stride)
			}
			if c.Pad == nn.PadValid {
				t += ":valid"
			}
			if !l.ReLU {
				t += ":linear"
			}
		case "pool":
			t = fmt.Sprintf("pool:%d", l.Pool.K)
			if l.Pool.Stride != l.Pool.K {
				t += fmt.Sprintf("/%d", l.Pool.Stride)
			}
		case "gn":
			t = fmt.Sprintf("gn:%d", l.GN.Groups)
		case "relu":
			t = "relu"
		case "fc":
			t = fmt.Sprintf("fc:%d", l.Out)
			if !l.ReLU && i+1 < len(layers) {
				t += ":linear"
			}
		}
		toks[i] = t
	}
	return toks, nil
}

// lowrankNet factors the conv and fc weights of a conv net where a rank
// saves parameters: a conv [out, in, k, k] becomes a linear conv of rank
// channels [rank, in, k, k] followed by a 1×1 conv [out, rank, 1, 1] with
// the bias and activation, and an fc [out, in] a linear fc [rank, in] then
// an fc [out, rank]. The network is rebuilt from the new spec, so that nn
// fine-tunes it as any Net; it replaces p.model.
func (p *runner) lowrankNet(ctx context.Context, st Stage) error {
	m := p.model
	for _, q := range m.AllParams() {
		if q.Keep != nil || q.Clustered() || q.Frozen() {
			return fmt.Errorf("lowrank: %s is already pruned or coded; put lowrank first", q.Name)
		}
	}
	toks, err := netTokens(m.Net)
	if err != nil {
		return fmt.Errorf("lowrank: %w", err)
	}
	type factor struct {
		a, b []float32 // W ≈ a·b, a [rows, rank], b [rank, cols]
		rank int
	}
	factors := make([]*factor, len(m.Layers))
	var spec []string
	for i, l := range m.Layers {
		if l.Op != deliver.OpConv && l.Op != deliver.OpFC {
			spec = append(spec, toks[i])
			continue
		}
		w := l.W[0]
		rows, cols := w.Rows(), w.Cols()
		rank := 0
		if r, ok := st.Params[l.Name]; ok {
			fmt.Sscan(r, &rank)
		} else if _, ok := st.Params["rank"]; ok {
			rank = st.int("rank", 0)
		}
		if rank == 0 && st.Params["energy"] != "" {
			sv, err := compress.LowRank(make([]float32, rows), make([]float32, cols), w.Data, rows, cols, 1)
			if err != nil {
				return err
			}
			rank = compress.RankForEnergy(sv, st.float("energy", 1))
		}
		rank = min(rank, min(rows, cols))
		// Factor only where it saves parameters.
		if rank < 1 || rank*(rows+cols) >= rows*cols {
			spec = append(spec, toks[i])
			continue
		}
		f := &factor{a: make([]float32, rows*rank), b: make([]float32, rank*cols), rank: rank}
		if _, err := compress.LowRank(f.a, f.b, w.Data, rows, cols, rank); err != nil {
			return err
		}
		factors[i] = f
		kind, rest, _ := strings.Cut(toks[i], ":")
		if l.Op == deliver.OpConv {
			// conv:OUTxK[/S][:valid][:linear] → conv:RANKxK[/S][:valid]:linear,conv:OUTx1[:linear]
			_, kopts, _ := strings.Cut(rest, "x")
			kopts = strings.TrimSuffix(kopts, ":linear")
			second := fmt.Sprintf("conv:%dx1", rows)
			if !l.ReLU {
				second += ":linear"
			}
			spec = append(spec, fmt.Sprintf("conv:%dx%s:linear", rank, kopts), second)
		} else {
			spec = append(spec, fmt.Sprintf("%s:%d:linear", kind, rank), toks[i])
		}
	}
	factored := false
	for _, f := range factors {
		factored = factored || f != nil
	}
	if !factored {
		return fmt.Errorf("lowrank: no layer gets smaller at that rank")
	}
	in := m.Net.InputShape()
	model, err := nn.ParseNet(strings.Join(spec, ","), in.C, in.H, in.W, m.Net.Classes())
	if err != nil {
		return fmt.Errorf("lowrank: %w", err)
	}
	params := make([]float32, model.NumParams())
	next, err := FromNet(model, params)
	if err != nil {
		return err
	}
	// Copy every layer's tensors, and the factors into the two layers that
	// replace a factored one.
	j := 0
	for i, l := range m.Layers {
		f := factors[i]
		if f == nil {
			for k, q := range l.params() {
				copy(next.Layers[j].params()[k].Data, q.Data)
			}
			j++
			continue
		}
		first, second := next.Layers[j], next.Layers[j+1]
		copy(first.W[0].Data, f.b)
		copy(second.W[0].Data, f.a)
		copy(second.B.Data, l.B.Data)
		j += 2
	}
	p.model = next
	p.logf("  low rank: %s", next.Arch())
	return p.tune(ctx, next, st.trainOpts("finetune", 0), nil)
}
