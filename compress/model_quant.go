package compress

import (
	"fmt"
	"math"
	"slices"
)

// Int8 affine quantization per channel, the scheme of ONNX's
// QuantizeLinear/DequantizeLinear and of TFLite/PyTorch int8 weights: a
// channel c (a row of a row-major weight matrix, an output neuron) has a
// scale s_c > 0 and a zero point z_c in [-128, 127], and
//
//	q = clamp(round(x/s_c) + z_c, -128, 127),   x' = (q − z_c)·s_c.
//
// The range [lo_c, hi_c] that the codes span comes from calibration: the
// minimum and maximum of the channel (CalibrateMinMax) or percentiles of it
// that clip outliers (CalibratePercentile). It is widened to contain zero,
// so that zero (a pruned weight) is exactly representable, and then
// s_c = (hi_c − lo_c)/255 and z_c = round(−128 − lo_c/s_c). Every x in
// [lo_c, hi_c] is reconstructed within s_c/2.

// CalibrateMinMax writes to lo and hi the minimum and maximum of each of
// the len(lo) channels (rows) of src. It panics unless len(lo) == len(hi)
// and len(lo) divides len(src).
func CalibrateMinMax(lo, hi []float32, src []float32) {
	cols := checkChannels("CalibrateMinMax", len(lo), len(hi), len(src))
	for c := range lo {
		row := src[c*cols : (c+1)*cols]
		lo[c], hi[c] = slices.Min(row), slices.Max(row)
	}
}

// CalibratePercentile writes to lo and hi the (100 − pct)-th and pct-th
// percentiles (nearest rank) of each of the len(lo) channels of src, for pct
// in [50, 100]; 100 gives CalibrateMinMax. Values outside are clipped by
// QuantizeAffine. It panics on a bad pct or mismatched lengths.
func CalibratePercentile(lo, hi []float32, src []float32, pct float64) {
	cols := checkChannels("CalibratePercentile", len(lo), len(hi), len(src))
	if !(pct >= 50 && pct <= 100) {
		panic(fmt.Sprintf("compress: CalibratePercentile: pct %v out of [50, 100]", pct))
	}
	buf := make([]float32, cols)
	k := int(math.Ceil(pct/100*float64(cols))) - 1 // nearest rank, 0-based
	k = min(max(k, 0), cols-1)
	for c := range lo {
		copy(buf, src[c*cols:(c+1)*cols])
		slices.Sort(buf)
		lo[c], hi[c] = buf[cols-1-k], buf[k]
	}
}

func checkChannels(name string, nlo, nhi, nsrc int) int {
	if nlo != nhi || nlo == 0 || nsrc%nlo != 0 {
		panic(fmt.Sprintf("compress: %s: %d channels do not divide %d values", name, nlo, nsrc))
	}
	return nsrc / nlo
}

// AffineParams computes the scale and zero point of each channel from its
// calibrated range, widened to contain zero. A channel whose range is
// {0} gets scale 1 and zero point 0. It panics if the lengths differ.
func AffineParams(scale []float32, zero []int8, lo, hi []float32) {
	if len(scale) != len(zero) || len(lo) != len(scale) || len(hi) != len(scale) {
		panic("compress: AffineParams: lengths differ")
	}
	for c := range scale {
		l, h := min(lo[c], 0), max(hi[c], 0)
		if !(h > l) || math.IsInf(float64(h-l), 0) {
			scale[c], zero[c] = 1, 0
			continue
		}
		s := float32(float64(h-l) / 255)
		if !(s > 0) {
			s = math.SmallestNonzeroFloat32
		}
		z := math.Round(-128 - float64(l)/float64(s))
		scale[c] = s
		zero[c] = int8(min(max(z, -128), 127))
	}
}

// QuantizeAffine writes to dst the int8 codes of src with one scale and zero
// point per channel (len(scale) channels, rows of src). It panics unless the
// channels divide src and len(dst) == len(src).
func QuantizeAffine(dst []int8, src []float32, scale []float32, zero []int8) {
	cols := checkChannels("QuantizeAffine", len(scale), len(zero), len(src))
	if len(dst) != len(src) {
		panic("compress: QuantizeAffine: len(dst) != len(src)")
	}
	for c, s := range scale {
		z := float64(zero[c])
		inv := 1 / float64(s)
		for i := c * cols; i < (c+1)*cols; i++ {
			q := math.Round(float64(src[i])*inv) + z
			dst[i] = int8(min(max(q, -128), 127))
		}
	}
}

// DequantizeAffine writes (q − z)·s to dst for the codes in src, one scale
// and zero point per channel. It panics on mismatched lengths.
func DequantizeAffine(dst []float32, src []int8, scale []float32, zero []int8) {
	cols := checkChannels("DequantizeAffine", len(scale), len(zero), len(src))
	if len(dst) != len(src) {
		panic("compress: DequantizeAffine: len(dst) != len(src)")
	}
	for c, s := range scale {
		z := int32(zero[c])
		for i := c * cols; i < (c+1)*cols; i++ {
			dst[i] = float32(int32(src[i])-z) * s
		}
	}
}
