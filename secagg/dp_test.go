package secagg

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// dgPMF returns P[X = x] of N_Z(0, σ²) for |x| ≤ m, summing the
// normaliser directly.
func dgPMF(sigma float64, m int) []float64 {
	var z float64
	for x := -m - 60*int(sigma+1); x <= m+60*int(sigma+1); x++ {
		z += math.Exp(-float64(x*x) / (2 * sigma * sigma))
	}
	p := make([]float64, 2*m+1)
	for x := -m; x <= m; x++ {
		p[x+m] = math.Exp(-float64(x*x)/(2*sigma*sigma)) / z
	}
	return p
}

// TestDiscreteGaussianDistribution draws 200,000 samples at several σ and
// compares them with the exact distribution: mean, variance (the exact
// one, slightly below σ² for small σ), a chi-square test over the values
// within 4σ (pooled tails beyond), and the tail mass beyond 3σ. The seed
// is fixed; the thresholds are the 1e-4 quantiles, so a correct sampler
// passes and a sampler off by a few percent anywhere fails.
func TestDiscreteGaussianDistribution(t *testing.T) {
	const draws = 200000
	for _, sigma := range []float64{0.5, 1, 1.5, 3.7, 20} {
		g, err := NewDiscreteGaussian(sigma)
		if err != nil {
			t.Fatal(err)
		}
		m := int(math.Ceil(4 * sigma))
		pmf := dgPMF(sigma, m)
		var exactVar float64
		for x := -m; x <= m; x++ {
			exactVar += float64(x*x) * pmf[x+m]
		}
		r := rand.New(rand.NewPCG(uint64(sigma*1000), 1))
		counts := make([]float64, 2*m+3) // [−m..m], then below, above
		var sum, sq float64
		var tail3 int
		for range draws {
			x := g.Sample(r)
			sum += float64(x)
			sq += float64(x * x)
			if math.Abs(float64(x)) > 3*sigma {
				tail3++
			}
			switch {
			case x < int64(-m):
				counts[2*m+1]++
			case x > int64(m):
				counts[2*m+2]++
			default:
				counts[int(x)+m]++
			}
		}
		mean := sum / draws
		variance := sq/draws - mean*mean
		if se := math.Sqrt(exactVar / draws); math.Abs(mean) > 4*se {
			t.Errorf("σ = %v: mean %.4f, more than 4 standard errors (%.4f) from 0", sigma, mean, se)
		}
		if math.Abs(variance-exactVar) > 0.02*exactVar {
			t.Errorf("σ = %v: variance %.4f, exact %.4f", sigma, variance, exactVar)
		}
		var inside, chi float64
		for i, p := range pmf {
			inside += p
			e := p * draws
			chi += (counts[i] - e) * (counts[i] - e) / e
		}
		if tails := (1 - inside) * draws; tails >= 5 {
			o := counts[2*m+1] + counts[2*m+2]
			chi += (o - tails) * (o - tails) / tails
		} else if counts[2*m+1]+counts[2*m+2] > 20 {
			t.Errorf("σ = %v: %v draws beyond 4σ, expected %.2f", sigma, counts[2*m+1]+counts[2*m+2], tails)
		}
		// Degrees of freedom: 2m+1 cells (+1 pooled tail) − 1; the 1e-4
		// quantile of chi-square(df) is below df + 4.5·√(2·df) + 10 for
		// these df.
		df := float64(2 * m)
		if limit := df + 4.5*math.Sqrt(2*df) + 10; chi > limit {
			t.Errorf("σ = %v: chi-square %.1f over %v degrees of freedom (limit %.1f)", sigma, chi, df, limit)
		}
		var p3 float64
		for x := -m; x <= m; x++ {
			if math.Abs(float64(x)) > 3*sigma {
				p3 += pmf[x+m]
			}
		}
		p3 += 1 - inside
		if se := math.Sqrt(p3 * (1 - p3) / draws); math.Abs(float64(tail3)/draws-p3) > 4*se+1e-6 {
			t.Errorf("σ = %v: P[|X| > 3σ] %.5f, exact %.5f", sigma, float64(tail3)/draws, p3)
		}
	}
}

func TestDiscreteGaussianRefuses(t *testing.T) {
	for _, s := range []float64{0, -1, math.NaN(), math.Inf(1), MaxSigma * 2} {
		if _, err := NewDiscreteGaussian(s); !errors.Is(err, ErrParams) {
			t.Errorf("σ = %v: %v", s, err)
		}
	}
}

// TestDDPEncode: the codes are the clipped values rounded, plus noise of
// the stated σ; vals comes back without noise (what the residual keeps);
// the same seed gives the same codes.
func TestDDPEncode(t *testing.T) {
	const k = 4000
	fp := FixedPoint{Clip: 0.05, Bits: 8}
	d := DDP{ClipL2: 1, Noise: 0.7, Clients: 10}
	src := make([]float32, k)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range src {
		src[i] = float32(r.NormFloat64() * 0.02)
	}
	vals := slices.Clone(src)
	codes := make([]uint32, k)
	d.Encode(codes, vals, fp, 9)
	// vals: the clipped vector on the grid, no noise.
	var norm float64
	plain := make([]uint32, k)
	clipped := slices.Clone(src)
	ClipL2(clipped, d.ClipL2)
	fp.EncodeStochastic(plain, clipped, 9)
	want := make([]float32, k)
	fp.Decode(want, plain)
	if !slices.Equal(vals, want) {
		t.Fatal("vals is not the clipped vector rounded, without noise")
	}
	for _, v := range clipped {
		norm += float64(v) * float64(v)
	}
	if math.Sqrt(norm) > d.ClipL2*(1+1e-6) {
		t.Fatalf("clipped norm %v > %v", math.Sqrt(norm), d.ClipL2)
	}
	// The noise: codes − plain, of variance σ².
	sigma := d.Sigma(fp, k)
	var sq float64
	for i := range codes {
		e := float64(int32(codes[i]) - int32(plain[i]))
		sq += e * e
	}
	if v := sq / k; math.Abs(v-sigma*sigma) > 0.1*sigma*sigma {
		t.Fatalf("noise variance %.1f, want σ² = %.1f", v, sigma*sigma)
	}
	again := make([]uint32, k)
	d.Encode(again, slices.Clone(src), fp, 9)
	if !slices.Equal(again, codes) {
		t.Fatal("the same seed gave other codes")
	}
	if s := d.Sensitivity(fp, k); s > float64(fp.Levels())*math.Sqrt(k) || s < d.ClipL2*float64(fp.Levels())/float64(fp.Clip) {
		t.Fatalf("sensitivity %v out of its bounds", s)
	}
}

// TestDDPSumBound: n clients' noisy codes at the largest σ stay within
// SumBound in every coordinate, and the bound is within a few times the
// sum's standard deviation (it is not vacuous); CheckSum refuses what may
// overflow an int32.
func TestDDPSumBound(t *testing.T) {
	const n, k = 10, 2000
	fp := FixedPoint{Clip: 1e-6, Bits: 8} // a tiny clip: Δ₂ is L·√k, σ the largest
	d := DDP{ClipL2: 1, Noise: 1, Clients: n}
	bound := d.SumBound(fp, n, k)
	sum := make([]int64, k)
	codes := make([]uint32, k)
	for c := range n {
		vals := make([]float32, k)
		for i := range vals {
			vals[i] = 1 // every code at +L
		}
		d.Encode(codes, vals, fp, uint64(c))
		for i, v := range codes {
			sum[i] += int64(int32(v))
		}
	}
	sd := math.Sqrt(n) * d.Sigma(fp, k)
	for i, s := range sum {
		if s > bound || s < -bound {
			t.Fatalf("sum[%d] = %d beyond the bound %d", i, s, bound)
		}
	}
	// √(2·ln(2k/β)) = 8.5 standard deviations at k = 2000.
	if extra := float64(bound - n*fp.Levels()); extra > 9*sd {
		t.Errorf("the noise allowance %.0f is more than 9 standard deviations (%.0f) of the sum's noise", extra, sd)
	}
	if err := d.CheckSum(fp, n, k); err != nil {
		t.Fatal(err)
	}
	if err := (DDP{ClipL2: 1e-9, Noise: 1e-3, Clients: n}).CheckSum(FixedPoint{Clip: 1, Bits: 8}, n, k); !errors.Is(err, ErrParams) {
		t.Fatalf("σ below 1/2: %v", err)
	}
	if err := (DDP{ClipL2: 1, Noise: 1000, Clients: n}).CheckSum(FixedPoint{Clip: 1e-6, Bits: 20}, n, k); !errors.Is(err, ErrParams) {
		t.Fatalf("a sum that can overflow: %v", err)
	}
	for _, bad := range []DDP{{ClipL2: 0, Noise: 1, Clients: 1}, {ClipL2: 1, Noise: 0, Clients: 1}, {ClipL2: 1, Noise: math.NaN(), Clients: 1}, {ClipL2: math.Inf(1), Noise: 1, Clients: 1}, {ClipL2: 1, Noise: 1}} {
		if err := bad.Validate(); !errors.Is(err, ErrParams) {
			t.Errorf("%+v: %v", bad, err)
		}
	}
}

// TestRDP checks Proposition 14 against values computed independently
// once, with Python's math module, from the paper's formula:
//
//	python3 -c "import math
//	def rdp(a,s,l1,l2,n,d):
//	    tau=10*sum(math.exp(-2*math.pi**2*s*s*k/(k+1)) for k in range(1,n))
//	    b1=a*l2**2/(2*n*s*s)+tau*d
//	    b2=a/2*(l2**2/(n*s*s)+2*l1*tau/(math.sqrt(n)*s)+tau**2*d)
//	    b3=a/2*(l2/(math.sqrt(n)*s)+tau*math.sqrt(d))**2
//	    return min(b1,b2,b3)
//	print(rdp(4,0.6,7,3,5,10), rdp(2.5,0.8,20,5,3,100), rdp(8,1.0,30,6,10,1000))"
//
// (each case has a different bound as the smallest), and the continuous
// Gaussian limit α·Δ₂²/(2nσ²) at large σ.
func TestRDP(t *testing.T) {
	for _, c := range []struct {
		alpha, sigma, l1, l2 float64
		n, d                 int
		want                 float64
	}{
		{4, 0.6, 7, 3, 5, 10, 14.564122709061829},
		{2.5, 0.8, 20, 5, 3, 100, 17.058473520446174},
		{8, 1.0, 30, 6, 10, 1000, 14.442432265341129},
		{32, 50, 1e4, 700, 10, 1992, 32 * 700 * 700 / (2 * 10 * 50 * 50.0)},
	} {
		got := RDP(c.alpha, c.sigma, c.l1, c.l2, c.n, c.d)
		if math.Abs(got-c.want) > 1e-12*c.want {
			t.Errorf("RDP(%v, σ=%v, Δ₁=%v, Δ₂=%v, n=%d, d=%d) = %.17g, want %.17g", c.alpha, c.sigma, c.l1, c.l2, c.n, c.d, got, c.want)
		}
	}
	if !math.IsInf(RDP(2, 0.4, 1, 1, 2, 2), 1) || !math.IsInf(RDP(1, 1, 1, 1, 2, 2), 1) {
		t.Error("RDP claimed something outside the proposition's range")
	}
	if got := L1Bound(3, 100); got != 9 {
		t.Errorf("L1Bound(3, 100) = %v", got)
	}
	if got := L1Bound(30, 4); got != 60 {
		t.Errorf("L1Bound(30, 4) = %v", got)
	}
}

// BenchmarkDiscreteGaussian: one draw at a few σ (grid units).
func BenchmarkDiscreteGaussian(b *testing.B) {
	for _, sigma := range []float64{1, 100, 10000} {
		b.Run(fmt.Sprintf("sigma=%g", sigma), func(b *testing.B) {
			g, _ := NewDiscreteGaussian(sigma)
			r := rand.New(rand.NewPCG(1, 2))
			b.ReportAllocs()
			var s int64
			for b.Loop() {
				s += g.Sample(r)
			}
			_ = s
		})
	}
}

// BenchmarkDDPEncode: a client's clip, rounding and noise on k values.
func BenchmarkDDPEncode(b *testing.B) {
	for _, k := range []int{1000, 100000} {
		b.Run(fmt.Sprintf("k=%d", k), func(b *testing.B) {
			fp := FixedPoint{Clip: 0.05, Bits: 8}
			d := DDP{ClipL2: 1, Noise: 1, Clients: 10}
			vals := make([]float32, k)
			codes := make([]uint32, k)
			b.ReportAllocs()
			for b.Loop() {
				d.Encode(codes, vals, fp, 1)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(k), "ns/value")
		})
	}
}
