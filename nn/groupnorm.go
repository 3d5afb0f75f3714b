package nn

import (
	"fmt"
	"math"
)

// GroupNorm normalises each image's C channels of HW pixels in Groups groups
// of C/Groups channels to zero mean and unit variance, then scales and
// shifts each channel by its own gamma and beta (PyTorch's nn.GroupNorm with
// affine weights). Unlike batch norm it keeps no running statistics and does
// not mix the images of a batch, which is why it suits non-IID federated
// training. Means and variances are summed in float64 in a fixed order.
type GroupNorm struct {
	C, Groups, HW int
	Eps           float32
}

// ParamSizes returns the lengths of gamma and beta, one each per channel.
func (g GroupNorm) ParamSizes() (gamma, beta int) { return g.C, g.C }

// StatsSize returns the length of the stats buffer Forward fills and
// Backward reads: a mean and an inverse standard deviation per image and
// group.
func (g GroupNorm) StatsSize(batch int) int { return 2 * batch * g.Groups }

func (g GroupNorm) check(name string, dst, x, gamma, stats []float32, batch int) {
	if g.C <= 0 || g.Groups <= 0 || g.HW <= 0 || g.C%g.Groups != 0 || !(g.Eps > 0) {
		panic(fmt.Sprintf("nn: groupnorm %+v: groups must divide channels and eps be positive", g))
	}
	n := batch * g.C * g.HW
	if batch < 0 || len(dst) < n || len(x) < n || len(gamma) < g.C || len(stats) < g.StatsSize(batch) {
		panic("nn: groupnorm " + name + ": slice too short")
	}
}

// Forward writes gamma·(x−mean)/sqrt(var+Eps)+beta into dst (dst may be x
// only if Backward is not needed, since Backward reads x) and each group's
// mean and 1/sqrt(var+Eps) into stats (StatsSize(batch) floats,
// caller-owned), for Backward.
func (g GroupNorm) Forward(dst, x, gamma, beta, stats []float32, batch int) {
	g.check("forward", dst, x, gamma, stats, batch)
	if len(beta) < g.C {
		panic("nn: groupnorm forward: beta too short")
	}
	cg := g.C / g.Groups
	size := cg * g.HW
	for i := range batch * g.Groups {
		xs := x[i*size : (i+1)*size]
		var s float64
		for _, v := range xs {
			s += float64(v)
		}
		mean := s / float64(size)
		var q float64
		for _, v := range xs {
			d := float64(v) - mean
			q += d * d
		}
		rstd := 1 / math.Sqrt(q/float64(size)+float64(g.Eps))
		stats[2*i], stats[2*i+1] = float32(mean), float32(rstd)
		m, r := float32(mean), float32(rstd)
		c0 := (i % g.Groups) * cg
		for c := range cg {
			ga, be := gamma[c0+c], beta[c0+c]
			in := xs[c*g.HW : (c+1)*g.HW]
			out := dst[i*size+c*g.HW:][:g.HW]
			for j, v := range in {
				out[j] = (v-m)*r*ga + be
			}
		}
	}
}

// Backward overwrites dx (like x), dgamma and dbeta (like gamma) with the
// gradients of a loss whose gradient with respect to Forward's output is dy,
// given Forward's x, gamma and stats. dx may be dy.
func (g GroupNorm) Backward(dx, dgamma, dbeta, dy, x, gamma, stats []float32, batch int) {
	g.check("backward", dx, x, gamma, stats, batch)
	if len(dy) < batch*g.C*g.HW || len(dgamma) < g.C || len(dbeta) < g.C {
		panic("nn: groupnorm backward: slice too short")
	}
	cg := g.C / g.Groups
	size := cg * g.HW
	clear(dgamma[:g.C])
	clear(dbeta[:g.C])
	for i := range batch * g.Groups {
		m, r := stats[2*i], stats[2*i+1]
		c0 := (i % g.Groups) * cg
		// With h = (x−m)·r and e = dy·gamma:
		// dx = r·(e − mean(e) − h·mean(e·h)).
		var se, seh float64
		for c := range cg {
			ga := gamma[c0+c]
			var sg, sb float64
			base := i*size + c*g.HW
			for j, d := range dy[base : base+g.HW] {
				h := (x[base+j] - m) * r
				sb += float64(d)
				sg += float64(d * h)
				se += float64(d * ga)
				seh += float64(d * ga * h)
			}
			dgamma[c0+c] += float32(sg)
			dbeta[c0+c] += float32(sb)
		}
		me, meh := float32(se/float64(size)), float32(seh/float64(size))
		for c := range cg {
			ga := gamma[c0+c]
			base := i*size + c*g.HW
			for j := range g.HW {
				h := (x[base+j] - m) * r
				dx[base+j] = r * (dy[base+j]*ga - me - h*meh)
			}
		}
	}
}
