package secagg

import "github.com/fedzip/fedzip/compress"

// Support writes to dst a random-k support of a vector of length d: len(dst)
// distinct coordinates in ascending order, drawn from the round's seed only,
// so every client of the round computes the same support and none sends
// its indices. It panics if len(dst) > d (a programmer error).
func Support(dst []int32, d int, roundSeed uint64) {
	supportWS(dst, d, roundSeed, nil)
}

// supportWS is Support with a workspace for its draw (nil: a new one).
func supportWS(dst []int32, d int, roundSeed uint64, ws *compress.Workspace) {
	compress.RandK(dst, d, splitmix(roundSeed^0x7365636167737570), ws)
}

// Gather writes src[idx[i]] to dst[i]. It panics if the lengths differ.
func Gather(dst, src []float32, idx []int32) {
	if len(dst) != len(idx) {
		panic("secagg: Gather: length mismatch")
	}
	for i, j := range idx {
		dst[i] = src[j]
	}
}

// Scatter adds src[i] to dst[idx[i]]. It panics if the lengths differ.
func Scatter(dst, src []float32, idx []int32) {
	if len(src) != len(idx) {
		panic("secagg: Scatter: length mismatch")
	}
	for i, j := range idx {
		dst[j] += src[i]
	}
}

// splitmix is the SplitMix64 finaliser: it spreads a round seed so that
// nearby seeds give unrelated supports.
func splitmix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	return x ^ x>>31
}
