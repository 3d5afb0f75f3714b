package nn

// The three matrix products of a dense layer, all row-major with no padding:
//
//	gemmNT: C[m×n] = A[m×k] · B[n×k]ᵀ   forward:  Z  = X · Wᵀ
//	gemmTN: C[m×n] = A[k×m]ᵀ · B[k×n]   weights:  dW = dZᵀ · X
//	gemmNN: C[m×n] = A[m×k] · B[k×n]    inputs:   dX = dZ · W
//
// C is overwritten. The kernels allocate nothing. Each output element is a
// sum over k in a fixed order, so results do not depend on scheduling.

func gemmNT(c, a, b []float32, m, n, k int) {
	checkGemm("gemmNT", c, a, b, m, n, k)
	if useAsm {
		gemmNTAsm(c, a, b, m, n, k)
		return
	}
	gemmNTGo(c, a, b, m, n, k)
}

func gemmTN(c, a, b []float32, m, n, k int) { gemmTNUpdate(c, a, b, m, n, k, 1, 0) }

// gemmTNUpdate computes C = beta·C + alpha·Aᵀ·B; with beta = 0, C is not
// read. It applies an SGD step to a weight matrix without materialising the
// gradient: W = (1 − lr·wd)·W − lr·dZᵀ·X.
func gemmTNUpdate(c, a, b []float32, m, n, k int, alpha, beta float32) {
	checkGemm("gemmTN", c, a, b, m, n, k)
	if useAsm {
		gemmTNAsm(c, a, b, m, n, k, alpha, beta)
		return
	}
	gemmTNGo(c, a, b, m, n, k, alpha, beta)
}

// scaleRows multiplies c by beta, writing zeros when beta is zero.
func scaleRows(c []float32, beta float32) {
	switch beta {
	case 0:
		clear(c)
	case 1:
	default:
		for i := range c {
			c[i] *= beta
		}
	}
}

func gemmNN(c, a, b []float32, m, n, k int) {
	checkGemm("gemmNN", c, a, b, m, n, k)
	if useAsm {
		gemmNNAsm(c, a, b, m, n, k)
		return
	}
	gemmNNGo(c, a, b, m, n, k)
}

func checkGemm(name string, c, a, b []float32, m, n, k int) {
	if len(c) < m*n || len(a) < m*k || len(b) < n*k {
		panic("nn: " + name + ": slice too short")
	}
}

// gemmNTGo computes dot products of rows of A with rows of B, two by two so
// that each loaded element is used twice.
func gemmNTGo(c, a, b []float32, m, n, k int) {
	i := 0
	for ; i+1 < m; i += 2 {
		a0 := a[i*k : i*k+k]
		a1 := a[(i+1)*k : (i+1)*k+k]
		j := 0
		for ; j+1 < n; j += 2 {
			b0 := b[j*k : j*k+k]
			b1 := b[(j+1)*k : (j+1)*k+k]
			var s00, s01, s10, s11 float32
			for p := range a0 {
				x0, x1 := a0[p], a1[p]
				y0, y1 := b0[p], b1[p]
				s00 += x0 * y0
				s01 += x0 * y1
				s10 += x1 * y0
				s11 += x1 * y1
			}
			c[i*n+j], c[i*n+j+1] = s00, s01
			c[(i+1)*n+j], c[(i+1)*n+j+1] = s10, s11
		}
		for ; j < n; j++ {
			c[i*n+j] = dot(a0, b[j*k:j*k+k])
			c[(i+1)*n+j] = dot(a1, b[j*k:j*k+k])
		}
	}
	for ; i < m; i++ {
		for j := 0; j < n; j++ {
			c[i*n+j] = dot(a[i*k:i*k+k], b[j*k:j*k+k])
		}
	}
}

func dot(x, y []float32) float32 {
	y = y[:len(x)]
	var s float32
	for i := range x {
		s += x[i] * y[i]
	}
	return s
}

// gemmTNGo: row j of C is beta times itself plus the sum over p of
// alpha·A[p][j] times row p of B.
func gemmTNGo(c, a, b []float32, m, n, k int, alpha, beta float32) {
	for j := 0; j < m; j++ {
		cj := c[j*n : j*n+n]
		scaleRows(cj, beta)
		for p := 0; p < k; p++ {
			axpy(cj, alpha*a[p*m+j], b[p*n:p*n+n])
		}
	}
}

// gemmNNGo: row i of C is the sum over p of A[i][p] times row p of B.
func gemmNNGo(c, a, b []float32, m, n, k int) {
	for i := 0; i < m; i++ {
		ci := c[i*n : i*n+n]
		clear(ci)
		for p := 0; p < k; p++ {
			axpy(ci, a[i*k+p], b[p*n:p*n+n])
		}
	}
}

func axpy(dst []float32, alpha float32, x []float32) {
	if alpha == 0 {
		return
	}
	x = x[:len(dst)]
	for i := range dst {
		dst[i] += alpha * x[i]
	}
}
