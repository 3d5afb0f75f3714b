package nn

// ScratchFloats returns the number of 4-byte values (float32 activations,
// gradients and scratch, int32 pooling indices) that m.Scratch(batch)
// allocates, computed from m's layer plan without allocating: a caller
// bounds the memory a model spec from the network asks for before making
// its Scratch. The labels (batch bytes) are not counted. The count is a
// uint64 so that no batch and model overflow it; it panics unless m is an
// *MLP or a *Net.
func ScratchFloats(m Model, batch int) uint64 {
	b := uint64(max(batch, 0))
	switch m := m.(type) {
	case *MLP:
		var sum, widest uint64
		for _, s := range m.sizes {
			sum, widest = sum+uint64(s), max(widest, uint64(s))
		}
		return b * (sum + 2*widest)
	case *Net:
		d := uint64(m.InputDim())
		total, widest, scratch := b*d, d, uint64(0)
		for _, l := range m.layers {
			total += b * uint64(l.outSize)
			widest = max(widest, uint64(l.outSize))
			switch l.kind {
			case layerConv:
				_, oh, ow := l.conv.OutShape()
				scratch = max(scratch, uint64(l.conv.In*l.conv.KH*l.conv.KW+l.conv.Out)*b*uint64(oh*ow))
			case layerPool:
				total += b * uint64(l.outSize)
			case layerGN:
				total += 2 * b * uint64(l.gn.Groups)
			}
		}
		return total + 2*b*widest + scratch
	}
	panic("nn: ScratchFloats: a model that is neither an MLP nor a Net")
}

// BatchWithin returns the largest batch, between 1 and most, whose Scratch
// holds at most floats values (ScratchFloats): the batch to evaluate a
// large net with in bounded memory. It is 1 when even one example needs
// more.
func BatchWithin(m Model, floats uint64, most int) int {
	per := max(ScratchFloats(m, 1), 1)
	return int(max(min(floats/per, uint64(max(most, 1))), 1))
}
