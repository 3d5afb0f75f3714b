//go:build !purego

package nn

import "golang.org/x/sys/cpu"

// useAsm selects the AVX2/FMA kernels of gemm_amd64.s. Build with the
// purego tag, or set it to false in a test, to use the portable Go kernels.
var useAsm = cpu.X86.HasAVX2 && cpu.X86.HasFMA

// useAVX512 adds the 8×32 AVX-512 tile (gemm512_amd64.s) to gemmBcast. It
// sums every element in the same order as the AVX2 tiles, so switching it
// changes speed, not bits.
var useAVX512 = useAsm && cpu.X86.HasAVX512F

//go:noescape
func biasReLU8(dst, src *float32, n8 int, bias float32)

// biasReLU writes max(src[i]+bias, 0) into dst, as Go's max would.
func biasReLU(dst, src []float32, bias float32) {
	dst = dst[:len(src)]
	n8 := len(src) &^ 7
	if useAsm && n8 > 0 {
		biasReLU8(&dst[0], &src[0], n8, bias)
	} else {
		n8 = 0
	}
	for j := n8; j < len(src); j++ {
		dst[j] = max(src[j]+bias, 0)
	}
}

//go:noescape
func bcast8x32(a *float32, ars, aps int, b *float32, ldb int, k int, c *float32, ldc int, alpha, beta float32)

//go:noescape
func dot2x4(a *float32, lda int, b *float32, ldb int, k8 int, out *[8]float32)

//go:noescape
func dot1x4(a *float32, b *float32, ldb int, k8 int, out *[4]float32)

//go:noescape
func bcast4x16(a *float32, ars, aps int, b *float32, ldb int, k int, c *float32, ldc int, alpha, beta float32)

//go:noescape
func bcast4x8(a *float32, ars, aps int, b *float32, ldb int, k int, c *float32, ldc int, alpha, beta float32)

//go:noescape
func bcast1x16(a *float32, aps int, b *float32, ldb int, k int, c *float32, alpha, beta float32)

//go:noescape
func bcast1x8(a *float32, aps int, b *float32, ldb int, k int, c *float32, alpha, beta float32)

// gemmNTAsm: C = A·Bᵀ by dot products, 2×4 or 1×4 output tiles over the
// first k8 = k rounded down to 8 elements, then the tail and the leftover
// columns in Go.
func gemmNTAsm(c, a, b []float32, m, n, k int) {
	k8 := k &^ 7
	n4 := n &^ 3
	if k8 == 0 || n4 == 0 {
		gemmNTGo(c, a, b, m, n, k)
		return
	}
	var out [8]float32
	i := 0
	for ; i+1 < m; i += 2 {
		for j := 0; j < n4; j += 4 {
			dot2x4(&a[i*k], k, &b[j*k], k, k8, &out)
			for r := 0; r < 2; r++ {
				ar := a[(i+r)*k : (i+r+1)*k]
				for q := 0; q < 4; q++ {
					s := out[r*4+q]
					if k8 < k {
						s += dot(ar[k8:], b[(j+q)*k+k8:(j+q+1)*k])
					}
					c[(i+r)*n+j+q] = s
				}
			}
		}
	}
	if i < m {
		var o4 [4]float32
		ar := a[i*k : (i+1)*k]
		for j := 0; j < n4; j += 4 {
			dot1x4(&ar[0], &b[j*k], k, k8, &o4)
			for q := 0; q < 4; q++ {
				s := o4[q]
				if k8 < k {
					s += dot(ar[k8:], b[(j+q)*k+k8:(j+q+1)*k])
				}
				c[i*n+j+q] = s
			}
		}
	}
	for i := 0; i < m; i++ {
		ar := a[i*k : (i+1)*k]
		for j := n4; j < n; j++ {
			c[i*n+j] = dot(ar, b[j*k:(j+1)*k])
		}
	}
}

// gemmBcast computes C[m×n] = beta·C + alpha·Σ_p a(i,p)·B[p,:] with a(i,p) =
// a[i*ars+p*aps], in 8×32 (AVX-512), 4×16, 4×8, 1×16 and 1×8 tiles,
// leftover columns in Go. When beta is zero C is only written.
func gemmBcast(c, a, b []float32, m, n, k, ars, aps int, alpha, beta float32) {
	if k == 0 {
		scaleRows(c[:m*n], beta)
		return
	}
	n16 := n &^ 15
	n8 := n &^ 7
	i := 0
	if useAVX512 {
		n32 := n &^ 31
		for ; i+7 < m; i += 8 {
			ai := &a[i*ars]
			for j := 0; j < n32; j += 32 {
				bcast8x32(ai, ars, aps, &b[j], n, k, &c[i*n+j], n, alpha, beta)
			}
			for r := i; r < i+8; r += 4 {
				ar := &a[r*ars]
				if n32 < n16 {
					bcast4x16(ar, ars, aps, &b[n32], n, k, &c[r*n+n32], n, alpha, beta)
				}
				if n16 < n8 {
					bcast4x8(ar, ars, aps, &b[n16], n, k, &c[r*n+n16], n, alpha, beta)
				}
			}
		}
	}
	for ; i+3 < m; i += 4 {
		ai := &a[i*ars]
		for j := 0; j < n16; j += 16 {
			bcast4x16(ai, ars, aps, &b[j], n, k, &c[i*n+j], n, alpha, beta)
		}
		if n16 < n8 {
			bcast4x8(ai, ars, aps, &b[n16], n, k, &c[i*n+n16], n, alpha, beta)
		}
	}
	for ; i < m; i++ {
		ai := &a[i*ars]
		for j := 0; j < n16; j += 16 {
			bcast1x16(ai, aps, &b[j], n, k, &c[i*n+j], alpha, beta)
		}
		if n16 < n8 {
			bcast1x8(ai, aps, &b[n16], n, k, &c[i*n+n16], alpha, beta)
		}
	}
	if n8 < n {
		for i := 0; i < m; i++ {
			for j := n8; j < n; j++ {
				var s float32
				for p := 0; p < k; p++ {
					s += a[i*ars+p*aps] * b[p*n+j]
				}
				if beta == 0 {
					c[i*n+j] = alpha * s
				} else {
					c[i*n+j] = beta*c[i*n+j] + alpha*s
				}
			}
		}
	}
}

// gemmTNAsm: C[m×n] = beta·C + alpha·A[k×m]ᵀ·B[k×n], a(i,p) = A[p*m+i].
func gemmTNAsm(c, a, b []float32, m, n, k int, alpha, beta float32) {
	gemmBcast(c, a, b, m, n, k, 1, m, alpha, beta)
}

// gemmNNAsm: C[m×n] = A[m×k]·B[k×n], a(i,p) = A[i*k+p].
func gemmNNAsm(c, a, b []float32, m, n, k int) { gemmBcast(c, a, b, m, n, k, k, 1, 1, 0) }
