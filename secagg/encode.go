package secagg

import "math"

// EncodeUpdate is a client's side of a round before the protocol, as both
// drivers run it: it bounds delta to L2 norm bound (0: no bound; delta is
// scaled in place), adds it to the error-feedback residual res, gathers
// res on the round's support idx, and codes those values in fixed point
// with unbiased stochastic rounding seeded by seed. It writes the codes to
// codes and what they decode to (what the client counts as sent) to sent,
// both of len(idx), and leaves in res everything the codes do not carry:
// the coordinates off the support, what was clipped, and the rounding.
// With distributed DP (dp not nil) the codes are dp.Encode's: clipped to
// dp's L2 norm, rounded, and noised; sent holds them without the noise.
func EncodeUpdate(codes []uint32, sent, res, delta []float32, idx []int32, fp FixedPoint, bound float64, seed uint64, dp *DDP) {
	if bound > 0 {
		var sq float64
		for _, v := range delta {
			sq += float64(v) * float64(v)
		}
		if nrm := math.Sqrt(sq); nrm > bound {
			f := float32(bound / nrm)
			for j := range delta {
				delta[j] *= f
			}
		}
	}
	for j, v := range delta {
		res[j] += v
	}
	Gather(sent, res, idx)
	if dp != nil {
		dp.Encode(codes, sent, fp, seed)
	} else {
		fp.EncodeStochastic(codes, sent, seed)
		fp.Decode(sent, codes)
	}
	for j, c := range idx {
		res[c] -= sent[j]
	}
}

// NextClip returns the automatic fixed-point clip of the round after one
// whose mean update on the support was mean: mult times its RMS, or prev
// when the mean is zero or not finite. Both drivers call it, so that the
// same run gives the same clips.
func NextClip(prev float64, mean []float32, mult float64) float64 {
	var sq float64
	for _, v := range mean {
		sq += float64(v) * float64(v)
	}
	if rms := math.Sqrt(sq / float64(max(len(mean), 1))); rms > 0 && !math.IsInf(rms, 0) {
		return mult * rms
	}
	return prev
}
