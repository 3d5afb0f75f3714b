package aggregate

import (
	"fmt"
	"math"
	"slices"
)

// Accountant tracks the privacy spent by a sequence of sampled Gaussian
// mechanisms, one per round of DP-FedAvg, with Rényi differential privacy
// (RDP). Each Step adds the RDP of the sampled Gaussian mechanism with
// sampling rate q and noise multiplier z at every order α (Mironov, Talwar
// and Zhang 2019, "Rényi differential privacy of the sampled Gaussian
// mechanism", §3.3: the integer-α binomial sum and the fractional-α series);
// RDP composes by addition. Epsilon converts to (ε, δ)-DP with Proposition
// 12 of Canonne, Kamath and Steinke 2020 (Balle et al. 2020, Theorem 21),
// minimised over the orders, as Google's dp_accounting RdpAccountant and
// Opacus do. The numerics follow theirs, so the figures agree with
// TF-Privacy's compute_dp_sgd_privacy to many digits (see the tests).
//
// For DP-FedAvg, q is the fraction of clients sampled per round and z the
// DP.NoiseMultiplier; the guarantee is per client (user-level).
//
// The zero Accountant uses DefaultOrders. It is not safe for concurrent
// use. Its figures are for reports: they use math.Log and math.Exp and may
// differ in the last bits between architectures, unlike the strategies.
type Accountant struct {
	// Orders are the RDP orders α > 1 tracked; nil means DefaultOrders.
	// They must not change after the first Step.
	Orders []float64

	rdp   []float64 // composed RDP per order
	steps int
	// cache of the last step's per-order RDP
	lastQ, lastZ float64
	last         []float64
}

// DefaultOrders returns the RDP orders an Accountant uses by default, those
// of TF-Privacy's compute_dp_sgd_privacy_lib: 1.25 … 4.5, the integers 5 …
// 63, and 128, 256, 512.
func DefaultOrders() []float64 {
	o := []float64{1.25, 1.5, 1.75, 2, 2.25, 2.5, 3, 3.5, 4, 4.5}
	for a := 5; a < 64; a++ {
		o = append(o, float64(a))
	}
	return append(o, 128, 256, 512)
}

// NewAccountant returns an Accountant for the given orders, or for
// DefaultOrders when none are given. It panics on an order ≤ 1.
func NewAccountant(orders ...float64) *Accountant {
	for _, a := range orders {
		if !(a > 1) {
			panic(fmt.Sprintf("aggregate: RDP order %v, want > 1", a))
		}
	}
	if len(orders) == 0 {
		orders = DefaultOrders()
	}
	return &Accountant{Orders: slices.Clone(orders)}
}

func (a *Accountant) orders() []float64 {
	if a.Orders == nil {
		a.Orders = DefaultOrders()
	}
	return a.Orders
}

// Step accounts for one round: a Gaussian mechanism with noise multiplier
// z on a sample of rate q. z = 0 means no noise, and no privacy left.
// Step panics on q outside [0, 1] or z negative or NaN.
func (a *Accountant) Step(q, z float64) {
	if !(q >= 0 && q <= 1) || !(z >= 0) {
		panic(fmt.Sprintf("aggregate: accountant step with q = %v, z = %v", q, z))
	}
	ord := a.orders()
	if a.last == nil || q != a.lastQ || z != a.lastZ {
		a.last = a.last[:0]
		for _, alpha := range ord {
			a.last = append(a.last, sgmRDP(q, z, alpha))
		}
		a.lastQ, a.lastZ = q, z
	}
	if a.rdp == nil {
		a.rdp = make([]float64, len(ord))
	}
	for i, r := range a.last {
		a.rdp[i] += r
	}
	a.steps++
}

// Steps returns the number of steps taken.
func (a *Accountant) Steps() int { return a.steps }

// Epsilon returns the smallest ε, over the orders, such that the steps so
// far are (ε, delta)-differentially private: 0 before any step, +Inf for
// delta ≤ 0 or after a step without noise.
func (a *Accountant) Epsilon(delta float64) float64 {
	eps, _ := a.EpsilonOrder(delta)
	return eps
}

// EpsilonOrder returns Epsilon(delta) and the order that attains it (0
// when none does). An optimal order at the end of Orders suggests adding
// orders.
func (a *Accountant) EpsilonOrder(delta float64) (eps, order float64) {
	if a.steps == 0 {
		return 0, 0
	}
	return rdpToEpsilon(a.orders(), a.rdp, delta)
}

// rdpToEpsilon converts RDP at the given orders to ε at delta, as
// dp_accounting's RdpAccountant: ε(α) = r + log1p(−1/α) − log(δα)/(α−1)
// for α > 1.01, 0 when δ² + expm1(−r) > 0, minimised over α and floored at 0.
func rdpToEpsilon(orders, rdp []float64, delta float64) (float64, float64) {
	if !(delta > 0) {
		return math.Inf(1), 0
	}
	best, bestOrder := math.Inf(1), 0.0
	for i, alpha := range orders {
		r := rdp[i]
		var eps float64
		switch {
		case math.IsNaN(r) || math.IsInf(r, 1):
			continue
		case delta*delta+math.Expm1(-r) > 0:
			eps = 0
		case alpha > 1.01:
			eps = r + math.Log1p(-1/alpha) - math.Log(delta*alpha)/(alpha-1)
		default:
			continue
		}
		if eps < best {
			best, bestOrder = eps, alpha
		}
	}
	return max(best, 0), bestOrder
}

// sgmRDP returns the RDP at order alpha of the sampled Gaussian mechanism
// with sampling rate q and noise multiplier sigma (Mironov et al. 2019).
func sgmRDP(q, sigma, alpha float64) float64 {
	switch {
	case q == 0:
		return 0
	case sigma == 0 || math.IsInf(alpha, 1):
		return math.Inf(1)
	case q == 1:
		return alpha / (2 * sigma * sigma)
	}
	var logA float64
	if alpha == math.Trunc(alpha) && alpha < 1<<20 {
		logA = logAInt(q, sigma, int(alpha))
	} else {
		logA = logAFrac(q, sigma, alpha)
	}
	if math.IsNaN(logA) {
		return math.Inf(1) // be conservative: claim nothing at this order
	}
	return logA / (alpha - 1)
}

// logAInt is log A_α for integer α: log Σ_i C(α,i) q^i (1−q)^(α−i)
// exp((i²−i)/(2σ²)).
func logAInt(q, sigma float64, alpha int) float64 {
	logA := math.Inf(-1)
	lq, l1q := math.Log(q), math.Log1p(-q)
	for i := 0; i <= alpha; i++ {
		fi := float64(i)
		c := logBinom(float64(alpha), fi) + fi*lq + float64(alpha-i)*l1q
		logA = logAdd(logA, c+(fi*fi-fi)/(2*sigma*sigma))
	}
	return logA
}

// logAFrac is log A_α for fractional α: the two-sided series of Mironov et
// al. §3.3, summed until both terms fall below e^−30.
func logAFrac(q, sigma, alpha float64) float64 {
	logA0, logA1 := math.Inf(-1), math.Inf(-1)
	z0 := sigma*sigma*math.Log(1/q-1) + 0.5
	lq, l1q := math.Log(q), math.Log1p(-q)
	for i := 0; i < 100000; i++ {
		fi := float64(i)
		logCoef, sign := logBinomSigned(alpha, fi)
		j := alpha - fi
		logT0 := logCoef + fi*lq + j*l1q
		logT1 := logCoef + j*lq + fi*l1q
		logE0 := math.Log(0.5) + logErfc((fi-z0)/(math.Sqrt2*sigma))
		logE1 := math.Log(0.5) + logErfc((z0-j)/(math.Sqrt2*sigma))
		logS0 := logT0 + (fi*fi-fi)/(2*sigma*sigma) + logE0
		logS1 := logT1 + (j*j-j)/(2*sigma*sigma) + logE1
		if sign > 0 {
			logA0 = logAdd(logA0, logS0)
			logA1 = logAdd(logA1, logS1)
		} else {
			logA0 = logSub(logA0, logS0)
			logA1 = logSub(logA1, logS1)
		}
		if max(logS0, logS1) < -30 {
			break
		}
	}
	return logAdd(logA0, logA1)
}

// logBinom is log C(n, k) for real n ≥ k ≥ 0.
func logBinom(n, k float64) float64 {
	l, _ := logBinomSigned(n, k)
	return l
}

// logBinomSigned returns log |C(a, k)| and the sign of C(a, k) for real
// a > 0 and integer k ≥ 0, through the gamma function.
func logBinomSigned(a, k float64) (float64, int) {
	la, _ := math.Lgamma(a + 1)
	lk, _ := math.Lgamma(k + 1)
	lak, s := math.Lgamma(a - k + 1)
	return la - lk - lak, s
}

func logAdd(x, y float64) float64 {
	a, b := min(x, y), max(x, y)
	if math.IsInf(a, -1) {
		return b
	}
	return math.Log1p(math.Exp(a-b)) + b
}

// logSub returns log(e^x − e^y), NaN when y > x (a negative result, which
// the caller treats as no guarantee).
func logSub(x, y float64) float64 {
	switch {
	case x < y:
		return math.NaN()
	case math.IsInf(y, -1):
		return x
	case x == y:
		return math.Inf(-1)
	}
	d := math.Expm1(x - y)
	if math.IsInf(d, 1) {
		return x
	}
	return math.Log(d) + y
}

// logErfc returns log erfc(x), with an asymptotic series where erfc
// underflows.
func logErfc(x float64) float64 {
	if r := math.Erfc(x); r > 1e-300 {
		return math.Log(r)
	}
	// erfc(x) ~ e^(−x²)/(x√π)·(1 − 1/(2x²) + 3/(4x⁴) − …) for large x.
	x2 := x * x
	return -math.Log(math.Pi)/2 - math.Log(x) - x2 - 0.5/x2 + 0.625/(x2*x2) - 37.0/24/(x2*x2*x2) + 353.0/64/(x2*x2*x2*x2)
}

// NoiseMultiplierFor returns the smallest noise multiplier z, to within
// 0.1 %, for which steps rounds at sampling rate q spend at most epsilon at
// delta, by bisection over [0.01, 1000] with the default orders. It fails
// with ErrPrivacy when the target is out of reach.
func NoiseMultiplierFor(q float64, steps int, epsilon, delta float64) (float64, error) {
	if !(q > 0 && q <= 1) || steps < 1 || !(epsilon > 0) || !(delta > 0 && delta < 1) {
		return 0, fmt.Errorf("%w: q = %v, steps = %d, epsilon = %v, delta = %v: want 0 < q ≤ 1, steps ≥ 1, epsilon > 0, 0 < delta < 1", ErrPrivacy, q, steps, epsilon, delta)
	}
	spent := func(z float64) float64 {
		ord := DefaultOrders()
		rdp := make([]float64, len(ord))
		for i, a := range ord {
			rdp[i] = sgmRDP(q, z, a) * float64(steps)
		}
		e, _ := rdpToEpsilon(ord, rdp, delta)
		return e
	}
	lo, hi := 0.01, 1000.0
	if spent(hi) > epsilon {
		return 0, fmt.Errorf("%w: even noise multiplier %v spends %.4g > epsilon %v over %d steps at q = %v", ErrPrivacy, hi, spent(hi), epsilon, steps, q)
	}
	if spent(lo) <= epsilon {
		return lo, nil
	}
	for hi/lo > 1.001 {
		mid := math.Sqrt(lo * hi)
		if spent(mid) <= epsilon {
			hi = mid
		} else {
			lo = mid
		}
	}
	return hi, nil
}
