package compress

import (
	"fmt"
	"math"
	"slices"
	"testing"
)

func TestQuantize(t *testing.T) {
	for _, kind := range []string{"normal", "laplace", "ties", "zero", "sparse"} {
		for _, n := range []int{0, 1, 5, 1000, 4097} {
			for _, bucket := range []int{0, 1, 7, 512, 1 << 20} {
				for bits := 1; bits <= 8; bits++ {
					name := fmt.Sprintf("%s/n=%d/bucket=%d/bits=%d", kind, n, bucket, bits)
					x := genVec(kind, n, uint64(n+bits))
					q := make([]int8, n)
					sc := make([]float32, Buckets(n, bucket))
					Quantize(q, sc, x, bits, bucket)
					y := make([]float32, n)
					Dequantize(y, q, sc, bucket)
					L := Levels(bits)
					size := bucket
					if size <= 0 {
						size = max(n, 1)
					}
					for i, v := range x {
						c := int(q[i])
						if c < -L || c > L || bits == 1 && c == 0 {
							t.Fatalf("%s: code %d out of range", name, c)
						}
						step := sc[i/size]
						if bits > 1 {
							// Round to nearest: error at most half a step.
							if e := math.Abs(float64(y[i] - v)); e > 0.5001*float64(step)+1e-30 {
								t.Fatalf("%s: |%v - %v| = %v > step/2 = %v", name, y[i], v, e, step/2)
							}
							if v == 0 && c != 0 {
								t.Fatalf("%s: zero quantized to %d", name, c)
							}
						} else if (v < 0) != (c < 0) && v != 0 {
							t.Fatalf("%s: sign of %v coded as %d", name, v, c)
						}
					}
					if bits > 1 {
						// The largest magnitude of each bucket is exact up to rounding.
						for b := range sc {
							s := x[b*size : min((b+1)*size, n)]
							m := maxAbs(s)
							for i, v := range s {
								if abs32(v) == m && m > 0 && math.Abs(float64(abs32(y[b*size+i])-m)) > 1e-6*float64(m) {
									t.Fatalf("%s: max %v dequantized to %v", name, m, y[b*size+i])
								}
							}
						}
					}
				}
			}
		}
	}
}

// TestQuantizeStochasticUnbiased checks E[q*s] = x over many seeds, for
// values at awkward fractions of the step, with a z-test per value.
func TestQuantizeStochasticUnbiased(t *testing.T) {
	x := []float32{1, -0.3, 0.77, 0.05, -0.999, 0.5, 0, -1e-3}
	const trials = 4000
	for _, bits := range []int{1, 2, 3, 4, 8} {
		sum := make([]float64, len(x))
		sq := make([]float64, len(x))
		q := make([]int8, len(x))
		y := make([]float32, len(x))
		sc := make([]float32, 1)
		for s := range trials {
			QuantizeStochastic(q, sc, x, bits, 0, uint64(s))
			Dequantize(y, q, sc, 0)
			for i, v := range y {
				sum[i] += float64(v)
				sq[i] += float64(v) * float64(v)
			}
		}
		for i, v := range x {
			mean := sum[i] / trials
			vr := sq[i]/trials - mean*mean
			se := math.Sqrt(vr/trials) + 1e-7
			if z := (mean - float64(v)) / se; math.Abs(z) > 4.5 {
				t.Errorf("bits=%d x=%v: mean %v, z=%.1f", bits, v, mean, z)
			}
		}
	}
	// The codes stay in range and the same seed gives the same codes.
	x = genVec("laplace", 10000, 1)
	for bits := 1; bits <= 8; bits++ {
		a, b := make([]int8, len(x)), make([]int8, len(x))
		sc := make([]float32, Buckets(len(x), 100))
		QuantizeStochastic(a, sc, x, bits, 100, 42)
		QuantizeStochastic(b, sc, x, bits, 100, 42)
		if !slices.Equal(a, b) {
			t.Fatalf("bits=%d: not deterministic", bits)
		}
		L := int8(Levels(bits))
		for _, c := range a {
			if c < -L || c > L || bits == 1 && c == 0 {
				t.Fatalf("bits=%d: code %d out of range", bits, c)
			}
		}
	}
}

func TestTernarySign(t *testing.T) {
	x := []float32{2, -1, 0, 3, float32(math.Copysign(0, -1)), -2}
	q := make([]int8, len(x))
	mu := Ternary(q, x)
	if !slices.Equal(q, []int8{1, -1, 0, 1, 0, -1}) || mu != 8.0/6 {
		t.Fatalf("Ternary = %v, %v", q, mu)
	}
	s := Sign(q, x)
	if !slices.Equal(q, []int8{1, -1, 1, 1, -1, -1}) || s != 8.0/6 {
		t.Fatalf("Sign = %v, %v", q, s)
	}
	// Sign is Quantize with one bit and one bucket.
	q2 := make([]int8, len(x))
	sc := make([]float32, 1)
	Quantize(q2, sc, x, 1, 0)
	if !slices.Equal(q, q2) || sc[0] != s {
		t.Fatalf("Quantize(bits=1) = %v %v, Sign = %v %v", q2, sc[0], q, s)
	}
	// TernGrad is unbiased.
	y := []float32{0.2, -0.7, 1, 0}
	sum := make([]float64, len(y))
	const trials = 5000
	q = make([]int8, len(y))
	for seed := range trials {
		m := TernaryStochastic(q, y, uint64(seed))
		if m != 1 {
			t.Fatalf("scale %v, want 1", m)
		}
		for i, c := range q {
			if c < -1 || c > 1 {
				t.Fatalf("code %d", c)
			}
			sum[i] += float64(c) * float64(m)
		}
	}
	for i, v := range y {
		p := math.Abs(float64(v))
		se := math.Sqrt(p*(1-p)/trials) + 1e-9
		if z := (sum[i]/trials - float64(v)) / se; math.Abs(z) > 4.5 {
			t.Errorf("TernaryStochastic x=%v: mean %v z=%.1f", v, sum[i]/trials, z)
		}
	}
	if Ternary(nil, nil) != 0 || Sign(nil, nil) != 0 || TernaryStochastic(nil, nil, 0) != 0 {
		t.Error("empty input: nonzero scale")
	}
}

func TestSymbols(t *testing.T) {
	for bits := 1; bits <= 8; bits++ {
		L := Levels(bits)
		var codes []int8
		if bits == 1 {
			codes = []int8{-1, 1, 1, -1}
		} else {
			for c := -L; c <= L; c++ {
				codes = append(codes, int8(c))
			}
		}
		sym := make([]uint8, len(codes))
		ToSymbols(sym, codes, bits)
		for _, s := range sym {
			if int(s) >= 1<<bits {
				t.Fatalf("bits=%d: symbol %d does not fit", bits, s)
			}
		}
		back := make([]int8, len(codes))
		if err := FromSymbols(back, sym, bits); err != nil || !slices.Equal(back, codes) {
			t.Fatalf("bits=%d: round trip %v -> %v -> %v (%v)", bits, codes, sym, back, err)
		}
		// Out-of-range symbols are errors.
		for s := 0; s < 256; s++ {
			err := FromSymbols(back[:1], []uint8{uint8(s)}, bits)
			valid := bits == 1 && s <= 1 || bits > 1 && s <= 2*L
			if (err == nil) != valid {
				t.Fatalf("bits=%d symbol %d: err %v", bits, s, err)
			}
		}
		mustPanic(t, "ToSymbols range", func() { ToSymbols(sym[:1], []int8{int8(L + 1)}, bits) })
	}
	mustPanic(t, "ToSymbols zero sign", func() { ToSymbols(make([]uint8, 1), []int8{0}, 1) })
}

func TestQuantizeAllocs(t *testing.T) {
	x := genVec("normal", 1<<14, 2)
	q := make([]int8, len(x))
	sc := make([]float32, Buckets(len(x), 256))
	y := make([]float32, len(x))
	sym := make([]uint8, len(x))
	for name, f := range map[string]func(){
		"Quantize":           func() { Quantize(q, sc, x, 4, 256) },
		"QuantizeStochastic": func() { QuantizeStochastic(q, sc, x, 4, 256, 1) },
		"Dequantize":         func() { Dequantize(y, q, sc, 256) },
		"Ternary":            func() { Ternary(q, x) },
		"TernaryStochastic":  func() { TernaryStochastic(q, x, 1) },
		"Sign":               func() { Sign(q, x) },
		"ToSymbols":          func() { Quantize(q, sc, x, 4, 256); ToSymbols(sym, q, 4) },
		"FromSymbols":        func() { _ = FromSymbols(q, sym, 4) },
	} {
		if a := testing.AllocsPerRun(5, f); a != 0 {
			t.Errorf("%s: %v allocations per call", name, a)
		}
	}
}

func TestQuantizePanics(t *testing.T) {
	x := make([]float32, 10)
	q := make([]int8, 10)
	for name, f := range map[string]func(){
		"bits 0":        func() { Quantize(q, make([]float32, 1), x, 0, 0) },
		"bits 9":        func() { QuantizeStochastic(q, make([]float32, 1), x, 9, 0, 0) },
		"len dst":       func() { Quantize(q[:3], make([]float32, 1), x, 4, 0) },
		"len scales":    func() { Quantize(q, make([]float32, 1), x, 4, 3) },
		"dequant lens":  func() { Dequantize(x[:2], q, make([]float32, 1), 0) },
		"ternary lens":  func() { Ternary(q[:1], x) },
		"terngrad lens": func() { TernaryStochastic(q[:1], x, 0) },
		"sign lens":     func() { Sign(q[:1], x) },
		"Levels":        func() { Levels(0) },
	} {
		mustPanic(t, name, f)
	}
}

func TestQuantizeNonFinite(t *testing.T) {
	x := []float32{1, float32(math.Inf(1)), float32(math.NaN()), -2}
	q := make([]int8, len(x))
	sc := make([]float32, 1)
	for bits := 1; bits <= 8; bits++ {
		L := int8(Levels(bits))
		Quantize(q, sc, x, bits, 0)
		for _, c := range q {
			if c < -L || c > L {
				t.Fatalf("bits=%d: code %d out of range on non-finite input", bits, c)
			}
		}
		QuantizeStochastic(q, sc, x, bits, 0, 1)
		for _, c := range q {
			if c < -L || c > L {
				t.Fatalf("bits=%d: stochastic code %d out of range on non-finite input", bits, c)
			}
		}
	}
}
