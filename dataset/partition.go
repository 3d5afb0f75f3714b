package dataset

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"

	"gonum.org/v1/gonum/stat/distuv"
)

// Stream constants: the second PCG word for each purpose, so that the same
// seed gives independent streams to different partitioners and generators.
const (
	streamIID       = 0x1d_5eed_0001
	streamShards    = 0x1d_5eed_0002
	streamDirichlet = 0x1d_5eed_0003
	streamSynthetic = 0x1d_5eed_0100 // + client index
)

// newRand returns the generator for one purpose.
func newRand(seed, stream uint64) (*rand.Rand, *rand.PCG) {
	src := rand.NewPCG(seed, stream)
	return rand.New(src), src
}

// IID shuffles the indices 0..n-1 with seed and splits them into clients
// contiguous parts whose sizes differ by at most 1 (the first n%clients
// clients get one more). Each client's indices are then sorted ascending.
// It returns an error wrapping ErrBadArgument unless 1 <= clients <= n.
func IID(n, clients int, seed uint64) (Partition, error) {
	if clients < 1 || clients > n {
		return nil, fmt.Errorf("dataset: IID: %w: %d clients for %d examples (want 1..n)", ErrBadArgument, clients, n)
	}
	r, _ := newRand(seed, streamIID)
	perm := r.Perm(n)
	p := make(Partition, clients)
	base, extra := n/clients, n%clients
	off := 0
	for k := range p {
		size := base
		if k < extra {
			size++
		}
		p[k] = perm[off : off+size : off+size]
		slices.Sort(p[k])
		off += size
	}
	return p, nil
}

// sortByLabel returns 0..len(labels)-1 stably sorted by label (ties by
// index), with a counting sort. Labels must be < classes.
func sortByLabel(labels []uint8, classes int) []int {
	start := make([]int, classes+1)
	for _, y := range labels {
		start[int(y)+1]++
	}
	for c := 1; c <= classes; c++ {
		start[c] += start[c-1]
	}
	out := make([]int, len(labels))
	for i, y := range labels {
		out[start[y]] = i
		start[y]++
	}
	return out
}

// Shards is the pathological non-IID split of McMahan et al. (2017): the
// indices are sorted by label (stably, ties by index), cut into
// clients*shardsPerClient shards of floor(n/numShards) consecutive indices
// (the remainder at the end is dropped), the shard ids are shuffled with
// seed, and client k gets shards perm[k*shardsPerClient : (k+1)*shardsPerClient].
// Each client's indices are then sorted ascending. With 60,000 MNIST
// examples, 100 clients and 2 shards each, every client holds 600 examples
// of (mostly) 2 labels. It returns an error wrapping ErrBadArgument if
// clients or shardsPerClient is below 1 or there are more shards than
// examples.
func Shards(labels []uint8, clients, shardsPerClient int, seed uint64) (Partition, error) {
	n := len(labels)
	if clients < 1 || shardsPerClient < 1 {
		return nil, fmt.Errorf("dataset: Shards: %w: %d clients with %d shards each", ErrBadArgument, clients, shardsPerClient)
	}
	if clients > n/shardsPerClient { // numShards = clients*shardsPerClient > n, without overflow
		return nil, fmt.Errorf("dataset: Shards: %w: %d clients * %d shards is more shards than %d examples",
			ErrBadArgument, clients, shardsPerClient, n)
	}
	numShards := clients * shardsPerClient
	size := n / numShards
	sorted := sortByLabel(labels, 256)
	r, _ := newRand(seed, streamShards)
	perm := r.Perm(numShards)
	p := make(Partition, clients)
	all := make([]int, clients*shardsPerClient*size) // one backing array for all clients
	for k := range p {
		idx := all[k*shardsPerClient*size : (k+1)*shardsPerClient*size : (k+1)*shardsPerClient*size]
		for j, s := range perm[k*shardsPerClient : (k+1)*shardsPerClient] {
			copy(idx[j*size:], sorted[s*size:(s+1)*size])
		}
		slices.Sort(idx)
		p[k] = idx
	}
	return p, nil
}

// Dirichlet parameters.
const (
	// dirichletMinSize caps the minimum client size Dirichlet aims for:
	// min(dirichletMinSize, n/clients), as in FedML and NIID-Bench.
	dirichletMinSize = 10
	// dirichletMaxTries bounds the number of draws before Dirichlet repairs
	// the best one.
	dirichletMaxTries = 100
)

// Dirichlet is the label-skewed split of NIID-Bench (Li et al. 2022) and
// FedML. For each class c in order, it shuffles the indices with label c,
// draws proportions p ~ Dir(alpha * 1_clients), and cuts the shuffled
// indices at the cumulative proportions. As in those implementations, a
// client that already holds at least n/clients examples gets proportion 0
// for the remaining classes (the rest renormalized), and the whole draw is
// repeated, continuing the same random stream, until every client holds at
// least min(10, n/clients) examples. After 100 draws without success, the
// draw whose smallest client is largest is repaired deterministically: one
// index at a time moves from the largest client (lowest id on ties; its
// largest index) to the smallest, until every client has the minimum.
// Small alpha gives few labels per client; large alpha approaches IID.
// Each client's indices are sorted ascending, and every index in
// 0..len(labels)-1 goes to exactly one client.
//
// It returns an error wrapping ErrBadArgument if alpha is not a positive
// finite number, classes is not in 1..256, clients is not in 1..len(labels),
// or a label is >= classes.
func Dirichlet(labels []uint8, classes, clients int, alpha float64, seed uint64) (Partition, error) {
	n := len(labels)
	switch {
	case !(alpha > 0) || math.IsInf(alpha, 0):
		return nil, fmt.Errorf("dataset: Dirichlet: %w: alpha %v, want a finite number > 0", ErrBadArgument, alpha)
	case classes < 1 || classes > 256:
		return nil, fmt.Errorf("dataset: Dirichlet: %w: %d classes, want 1..256", ErrBadArgument, classes)
	case clients < 1 || clients > n:
		return nil, fmt.Errorf("dataset: Dirichlet: %w: %d clients for %d examples (want 1..n)", ErrBadArgument, clients, n)
	}
	for i, y := range labels {
		if int(y) >= classes {
			return nil, fmt.Errorf("dataset: Dirichlet: %w: label %d at index %d is not in [0,%d)", ErrBadArgument, y, i, classes)
		}
	}
	minSize := min(dirichletMinSize, n/clients)
	avg := float64(n) / float64(clients)

	// Indices of each class, ascending: byClass[c] is sorted[start[c]:start[c+1]].
	sorted := sortByLabel(labels, classes)
	counts := LabelCounts(labels, classes, nil)

	r, src := newRand(seed, streamDirichlet)
	gamma := distuv.Gamma{Alpha: alpha, Beta: 1, Src: src}
	prop := make([]float64, clients)
	classIdx := make([]int, 0, n)

	var best Partition
	bestMin := -1
	for try := 0; try < dirichletMaxTries; try++ {
		p := make(Partition, clients)
		off := 0
		for c := range classes {
			idx := append(classIdx[:0], sorted[off:off+counts[c]]...)
			off += counts[c]
			r.Shuffle(len(idx), func(i, j int) { idx[i], idx[j] = idx[j], idx[i] })
			drawDirichlet(prop, &gamma, r)
			// NIID-Bench balancing: clients at or above the average get no more.
			sum := 0.0
			for k := range prop {
				if float64(len(p[k])) >= avg {
					prop[k] = 0
				}
				sum += prop[k]
			}
			if sum == 0 { // every eligible proportion underflowed: one-hot on the smallest client
				k := slices.IndexFunc(p, func(s []int) bool { return float64(len(s)) < avg })
				if k < 0 {
					k = 0
				}
				prop[k], sum = 1, 1
			}
			cum, lo := 0.0, 0
			for k := range clients {
				cum += prop[k]
				hi := len(idx)
				if k < clients-1 {
					hi = min(int(cum/sum*float64(len(idx))), len(idx))
					hi = max(hi, lo)
				}
				p[k] = append(p[k], idx[lo:hi]...)
				lo = hi
			}
		}
		m := slices.Min(p.Sizes())
		if m > bestMin {
			best, bestMin = p, m
		}
		if m >= minSize {
			break
		}
	}
	for _, idx := range best {
		slices.Sort(idx)
	}
	if bestMin < minSize {
		rebalance(best, minSize)
	}
	return best, nil
}

// drawDirichlet fills prop with a draw from Dir(alpha*1): independent
// Gamma(alpha, 1) draws normalized to sum 1. If all draws underflow to 0
// (possible for tiny alpha), it returns a one-hot vector at a uniformly
// chosen coordinate, the limit of Dir(alpha) as alpha -> 0.
func drawDirichlet(prop []float64, g *distuv.Gamma, r *rand.Rand) {
	sum := 0.0
	for k := range prop {
		prop[k] = g.Rand()
		sum += prop[k]
	}
	if sum == 0 || math.IsInf(sum, 0) || math.IsNaN(sum) {
		clear(prop)
		prop[r.IntN(len(prop))] = 1
		return
	}
	for k := range prop {
		prop[k] /= sum
	}
}

// rebalance moves indices from the largest client (lowest id on ties; its
// largest index) to the smallest client (lowest id on ties) until every
// client holds at least minSize, keeping each client's indices sorted.
// minSize * len(p) must not exceed the total.
func rebalance(p Partition, minSize int) {
	for {
		small, large := 0, 0
		for k := range p {
			if len(p[k]) < len(p[small]) {
				small = k
			}
			if len(p[k]) > len(p[large]) {
				large = k
			}
		}
		if len(p[small]) >= minSize || len(p[large]) <= minSize {
			return
		}
		last := len(p[large]) - 1
		i := p[large][last]
		p[large] = p[large][:last]
		pos, _ := slices.BinarySearch(p[small], i)
		p[small] = slices.Insert(p[small], pos, i)
	}
}
