package aggregate

import (
	"errors"
	"math"
	"slices"
	"testing"
)

// The reference figures below are published by TF-Privacy and Opacus:
//
//   - tensorflow/privacy, tensorflow_privacy/privacy/analysis/
//     rdp_accountant_test.py: compute_rdp(0.1, 2, 10, 5) = 0.07737
//     (test_compute_rdp_scalar); compute_rdp(0.01, 2.5, 50, [1.5, 2.5, 5,
//     50, 100, inf]) = [0.00065, 0.001085, 0.00218075, 0.023846,
//     167.416307, inf] (test_compute_rdp_sequence); compute_rdp(1, 10, 1,
//     20) = 0.1; and get_privacy_spent on a constant RDP of 1.1 at orders
//     2…32 with delta 1e-5 gives eps 1.32783806176 at order 32.
//   - tensorflow/privacy, compute_dp_sgd_privacy_test.py: n = 60000, batch
//     150, noise 1.3, 15 epochs, delta 1e-5 → eps 0.7242234026109595 at
//     order 19; n = 100000, batch 100, noise 1.0, 30 epochs, delta 1e-7 →
//     eps 1.4154988495444842 at order 13 (steps = ceil(epochs·n/batch),
//     q = batch/n, the default orders of DefaultOrders).
//   - pytorch/opacus, opacus/accountants/analysis/rdp.py docstring: (q, σ,
//     steps) = (1e-5, 1.0, 10) then (1e-4, 3.0, 4) at orders 2…32, delta
//     1e-5 → (0.336, 23).
//   - tensorflow/privacy tutorials/README.md: the MNIST DP-SGD tutorial
//     (q = 256/60000, noise 1.12, 234 steps per epoch, orders 1.1…10.9 and
//     12…63, delta 1e-5, and the classic conversion ε = min r − log δ/(α−1)
//     of its time) prints eps 1.00 after 1 epoch, 1.04 after 2 and 2.92
//     after 60.

func TestSampledGaussianRDP(t *testing.T) {
	for _, tc := range []struct {
		q, z, steps, order, want, tol float64
	}{
		{0.1, 2, 10, 5, 0.07737, 5e-6},
		{1, 10, 1, 20, 0.1, 1e-15},
		{0, 10, 1, 20, 0, 0},
		{0.01, 2.5, 50, 1.5, 0.00065, 1e-5},
		{0.01, 2.5, 50, 2.5, 0.001085, 1e-5},
		{0.01, 2.5, 50, 5, 0.00218075, 1e-5},
		{0.01, 2.5, 50, 50, 0.023846, 1e-5},
		{0.01, 2.5, 50, 100, 167.416307, 1e-5},
	} {
		if got := sgmRDP(tc.q, tc.z, tc.order) * tc.steps; math.Abs(got-tc.want) > tc.tol {
			t.Errorf("RDP(q=%v, z=%v, α=%v) × %v = %.8g, want %.8g", tc.q, tc.z, tc.order, tc.steps, got, tc.want)
		}
	}
	if r := sgmRDP(0.01, 2.5, math.Inf(1)); !math.IsInf(r, 1) {
		t.Errorf("RDP at α = ∞ is %v", r)
	}
	if r := sgmRDP(0.01, 0, 2); !math.IsInf(r, 1) {
		t.Errorf("RDP without noise is %v", r)
	}
}

func intOrders(lo, hi int) []float64 {
	var o []float64
	for a := lo; a <= hi; a++ {
		o = append(o, float64(a))
	}
	return o
}

func TestRDPToEpsilon(t *testing.T) {
	orders := intOrders(2, 32)
	rdp := make([]float64, len(orders))
	for i := range rdp {
		rdp[i] = 1.1
	}
	eps, order := rdpToEpsilon(orders, rdp, 1e-5)
	if math.Abs(eps-1.32783806176) > 1e-10 || order != 32 {
		t.Fatalf("eps = %.12g at order %v, want 1.32783806176 at 32", eps, order)
	}
}

func TestAccountantPublishedFigures(t *testing.T) {
	for _, tc := range []struct {
		name           string
		n, batch       int
		z, epochs, dlt float64
		eps, order     float64
	}{
		{"tf-privacy Test0", 60000, 150, 1.3, 15, 1e-5, 0.7242234026109595, 19},
		{"tf-privacy Test1", 100000, 100, 1.0, 30, 1e-7, 1.4154988495444842, 13},
	} {
		q := float64(tc.batch) / float64(tc.n)
		steps := int(math.Ceil(tc.epochs * float64(tc.n) / float64(tc.batch)))
		var a Accountant
		for range steps {
			a.Step(q, tc.z)
		}
		eps, order := a.EpsilonOrder(tc.dlt)
		if math.Abs(eps-tc.eps) > 1e-9 || order != tc.order || a.Steps() != steps {
			t.Errorf("%s: eps %.16g at order %v after %d steps, want %.16g at %v", tc.name, eps, order, a.Steps(), tc.eps, tc.order)
		}
	}

	a := NewAccountant(intOrders(2, 32)...)
	for range 10 {
		a.Step(1e-5, 1)
	}
	for range 4 {
		a.Step(1e-4, 3)
	}
	if eps, order := a.EpsilonOrder(1e-5); math.Abs(eps-0.336) > 0.0005 || order != 23 {
		t.Errorf("opacus docstring: eps %.4g at order %v, want 0.336 at 23", eps, order)
	}
}

func TestAccountantTFTutorial(t *testing.T) {
	var orders []float64
	for x := 1; x < 100; x++ {
		orders = append(orders, 1+float64(x)/10)
	}
	orders = append(orders, intOrders(12, 63)...)
	for _, tc := range []struct {
		epochs int
		eps    float64
	}{{1, 1.00}, {2, 1.04}, {60, 2.92}} {
		steps := float64(tc.epochs * (60000 / 256))
		best := math.Inf(1)
		for _, a := range orders {
			best = min(best, sgmRDP(256.0/60000, 1.12, a)*steps-math.Log(1e-5)/(a-1))
		}
		if math.Abs(best-tc.eps) > 0.005 {
			t.Errorf("tutorial after %d epochs: eps %.4f, published %.2f", tc.epochs, best, tc.eps)
		}
	}
}

func TestAccountantMonotone(t *testing.T) {
	// ε grows with every round and falls as the noise grows.
	const q = 0.01
	prev := 0.0
	var a Accountant
	for r := 1; r <= 300; r++ {
		a.Step(q, 1.1)
		if r%50 != 0 {
			continue
		}
		eps := a.Epsilon(1e-5)
		if !(eps > prev) {
			t.Fatalf("eps after %d rounds %v, not above %v", r, eps, prev)
		}
		prev = eps
	}
	prevZ := math.Inf(1)
	for _, z := range []float64{0.5, 0.8, 1, 1.5, 2, 4} {
		var b Accountant
		for range 100 {
			b.Step(q, z)
		}
		eps := b.Epsilon(1e-5)
		if !(eps < prevZ) {
			t.Fatalf("eps at z = %v is %v, not below %v", z, eps, prevZ)
		}
		prevZ = eps
	}
	var c Accountant
	if c.Epsilon(1e-5) != 0 {
		t.Fatal("eps before any step is not 0")
	}
	c.Step(0.1, 0)
	if !math.IsInf(c.Epsilon(1e-5), 1) {
		t.Fatal("a step without noise leaves finite eps")
	}
	if !math.IsInf(a.Epsilon(0), 1) {
		t.Fatal("delta 0 gives finite eps")
	}
}

func TestAccountantSnapshot(t *testing.T) {
	var a Accountant
	for range 20 {
		a.Step(0.1, 1.3)
	}
	data, err := a.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	var b Accountant
	if err := b.UnmarshalBinary(data); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		a.Step(0.05, 2)
		b.Step(0.05, 2)
	}
	if a.Epsilon(1e-5) != b.Epsilon(1e-5) || b.Steps() != 25 || !slices.Equal(a.Orders, b.Orders) {
		t.Fatal("restored accountant diverged")
	}
	if err := b.UnmarshalBinary(data[:10]); !errors.Is(err, ErrState) {
		t.Fatalf("truncated accountant state: %v", err)
	}
}

func TestNoiseMultiplierFor(t *testing.T) {
	z, err := NoiseMultiplierFor(0.1, 200, 2, 1e-5)
	if err != nil {
		t.Fatal(err)
	}
	var a Accountant
	for range 200 {
		a.Step(0.1, z)
	}
	if eps := a.Epsilon(1e-5); eps > 2 || eps < 1.97 {
		t.Fatalf("z = %v spends eps %v, want just under 2", z, eps)
	}
	for _, tc := range []struct {
		q            float64
		steps        int
		epsilon, dlt float64
	}{
		{0, 10, 1, 1e-5}, {0.1, 0, 1, 1e-5}, {0.1, 10, 0, 1e-5}, {0.1, 10, 1, 0}, {0.1, 10, 1, 1},
		{1, 1000000, 1e-4, 1e-10}, // out of reach with z ≤ 1000
	} {
		if _, err := NoiseMultiplierFor(tc.q, tc.steps, tc.epsilon, tc.dlt); !errors.Is(err, ErrPrivacy) {
			t.Errorf("NoiseMultiplierFor(%v, %d, %v, %v) = %v, want ErrPrivacy", tc.q, tc.steps, tc.epsilon, tc.dlt, err)
		}
	}
}
