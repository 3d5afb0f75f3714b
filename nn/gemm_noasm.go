//go:build !amd64 || purego

package nn

const (
	useAsm    = false
	useAVX512 = false
)

func gemmNTAsm(c, a, b []float32, m, n, k int) { gemmNTGo(c, a, b, m, n, k) }
func gemmTNAsm(c, a, b []float32, m, n, k int, alpha, beta float32) {
	gemmTNGo(c, a, b, m, n, k, alpha, beta)
}
func gemmNNAsm(c, a, b []float32, m, n, k int) { gemmNNGo(c, a, b, m, n, k) }

// biasReLU writes max(src[i]+bias, 0) into dst.
func biasReLU(dst, src []float32, bias float32) {
	dst = dst[:len(src)]
	for j, v := range src {
		dst[j] = max(v+bias, 0)
	}
}
