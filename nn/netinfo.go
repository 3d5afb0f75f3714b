package nn

// NetLayer describes one layer of a Net, read-only: what a consumer outside
// nn (delivery, export) needs to rebuild the network from its flat
// parameter vector.
type NetLayer struct {
	// Kind is "conv", "pool", "gn", "relu" or "fc".
	Kind string
	// Conv, Pool and GN hold the layer's shape for its kind.
	Conv Conv2D
	Pool MaxPool2D
	GN   GroupNorm
	// In and Out are an fc layer's input (the flattened activation) and
	// output sizes.
	In, Out int
	// ReLU says a ReLU follows the layer (always true for "relu").
	ReLU bool
	// Weight and Bias index Layout().Tensors: a conv's or fc's weight and
	// bias, a group norm's scale γ and shift β; -1 for pool and relu.
	Weight, Bias int
}

// Layers returns the network's layers in order (a new slice each call).
func (n *Net) Layers() []NetLayer {
	kinds := [...]string{layerConv: "conv", layerPool: "pool", layerGN: "gn", layerReLU: "relu", layerFC: "fc"}
	out := make([]NetLayer, len(n.layers))
	for i, l := range n.layers {
		nl := NetLayer{Kind: kinds[l.kind], Conv: l.conv, Pool: l.pool, GN: l.gn, In: l.in, Out: l.out, ReLU: l.relu, Weight: l.w, Bias: l.b}
		if l.kind == layerPool || l.kind == layerReLU {
			nl.Weight, nl.Bias = -1, -1
		}
		out[i] = nl
	}
	return out
}

// Pads returns the padding on each side, top and bottom (ph) and left and
// right (pw), that Pad stands for.
func (c Conv2D) Pads() (ph, pw int) { return c.pads() }
