package nn

// ScratchFloats returns the number of 4-byte values (float32 activations,
// gradients and scratch, int32 pooling indices) that m.Scratch(batch)
// allocates, with what a Net's Scratch adds on its first backward pass,
// computed from m's layer plan without allocating: a caller
// bounds the memory a model spec from the network asks for before making
// its Scratch. The labels (batch bytes) are not counted. The count is a
// uint64 so that no batch and model overflow it; it panics unless m is an
// *MLP, a *Net or a ScratchSizer.
func ScratchFloats(m Model, batch int) uint64 {
	b := uint64(max(batch, 0))
	switch m := m.(type) {
	case ScratchSizer:
		return m.ScratchFloats(batch)
	case *MLP:
		var sum, widest uint64
		for _, s := range m.sizes {
			sum, widest = sum+uint64(s), max(widest, uint64(s))
		}
		return b * (sum + 2*widest)
	case *Net:
		// NewWorkspace and trainBuffers: each conv layer's im2col matrix
		// for a forward group (g images), then for the whole batch if
		// larger; the conv scratch for a group's output, then for a
		// backward pass.
		d := uint64(m.InputDim())
		g := min(b, forwardGroup)
		total, widest, scratch, rest, gn := b*d, d, uint64(0), uint64(0), uint64(0)
		for _, l := range m.layers {
			total += b * uint64(l.outSize)
			widest = max(widest, uint64(l.outSize))
			switch l.kind {
			case layerConv:
				_, oh, ow := l.conv.OutShape()
				k, p, out := uint64(l.conv.In*l.conv.KH*l.conv.KW), uint64(oh*ow), uint64(l.conv.Out)
				total += k * g * p
				if b > g {
					total += k * b * p
				}
				scratch = max(scratch, out*g*p)
				rest = max(rest, 2*out*b*p+k*out)
			case layerPool:
				total += b * uint64(l.outSize)
			case layerGN:
				total += 2 * b * uint64(l.gn.Groups)
				gn = max(gn, 2*uint64(l.gn.C))
			}
		}
		if rest > scratch {
			total += rest
		}
		return total + 2*b*widest + scratch + gn
	}
	panic("nn: ScratchFloats: a model that is neither an MLP, a Net nor a ScratchSizer")
}

// ScratchSizer is a Model other than an *MLP or a *Net (one that wraps
// another, say) that gives ScratchFloats its count: what its Scratch(batch)
// allocates, counted as ScratchFloats counts.
type ScratchSizer interface {
	Model
	ScratchFloats(batch int) uint64
}

// BatchWithin returns the largest batch, between 1 and most, whose Scratch
// holds at most floats values (ScratchFloats): the batch to evaluate a
// large net with in bounded memory. It is 1 when even one example needs
// more.
func BatchWithin(m Model, floats uint64, most int) int {
	// ScratchFloats grows with the batch, not quite in proportion (a Net
	// sizes some buffers for a group of images): search.
	lo, hi := 1, max(most, 1)
	for lo < hi {
		mid := lo + (hi-lo+1)/2
		if ScratchFloats(m, mid) <= floats {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	return lo
}
