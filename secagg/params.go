package secagg

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
)

// Limits on what a round may ask for. They bound every allocation a decoder
// or a constructor makes.
const (
	// MaxClients is the largest number of clients in one round.
	MaxClients = 1 << 16
	// MaxDim is the largest vector length.
	MaxDim = 1 << 26
)

// Params are the public parameters of one run of the protocol (one round).
// Every client and the server build the same Graph from them.
type Params struct {
	// Session binds keys, ciphertexts and masks to one run: it goes into
	// every key derivation and every ciphertext's associated data. Use a
	// value no other run used (for example a hash of the run seed and the
	// round number).
	Session uint64
	// IDs are the round's clients, sorted ascending and distinct. A
	// client's share coordinate is its position in IDs plus one.
	IDs []uint64
	// K is the number of neighbours of each client: even and below
	// len(IDs)-1 for a sparse Harary graph, or len(IDs)-1 for the
	// complete graph (the original SecAgg).
	K int
	// T is the threshold: T shares of a secret reconstruct it, T-1 reveal
	// nothing. K/2 < T <= K: a majority of a client's neighbours, so that a
	// server that tells some neighbours a client survived and others that
	// it dropped cannot gather t shares of both its secrets.
	T int
	// D is the length of the vectors summed.
	D int
	// GraphSeed seeds the permutation of the clients around the ring of
	// the Harary graph.
	GraphSeed uint64
}

// Validate checks the parameters and returns an error wrapping ErrParams.
func (p Params) Validate() error {
	n := len(p.IDs)
	switch {
	case n < 3 || n > MaxClients:
		return fmt.Errorf("%w: %d clients, want 3..%d", ErrParams, n, MaxClients)
	case p.K < 2 || p.K > n-1:
		return fmt.Errorf("%w: k=%d neighbours of %d clients, want 2..%d", ErrParams, p.K, n, n-1)
	case p.K < n-1 && p.K%2 != 0:
		return fmt.Errorf("%w: k=%d must be even (or n-1 = %d)", ErrParams, p.K, n-1)
	case 2*p.T <= p.K || p.T > p.K:
		return fmt.Errorf("%w: threshold t=%d, want k/2 < t <= k=%d", ErrParams, p.T, p.K)
	case p.D < 1 || p.D > MaxDim:
		return fmt.Errorf("%w: dimension %d, want 1..%d", ErrParams, p.D, MaxDim)
	}
	for i := 1; i < n; i++ {
		if p.IDs[i] <= p.IDs[i-1] {
			return fmt.Errorf("%w: IDs not sorted and distinct at %d", ErrParams, i)
		}
	}
	return nil
}

// Graph is the neighbourhood graph of a round: a Harary graph H(k, n)
// (each client joined to the k/2 nearest on either side of a ring) over a
// seeded permutation of the clients, as in SecAgg+ (Bell et al. 2020).
// It is built deterministically from Params, so every party computes the
// same one. A Graph is read-only after NewGraph and safe for concurrent
// use.
type Graph struct {
	p     Params
	index map[uint64]int
	nbrs  [][]int32 // ascending client indices
}

// NewGraph validates p and builds its graph. It copies p.IDs.
func NewGraph(p Params) (*Graph, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	p.IDs = slices.Clone(p.IDs)
	n := len(p.IDs)
	g := &Graph{p: p, index: make(map[uint64]int, n), nbrs: make([][]int32, n)}
	for i, id := range p.IDs {
		g.index[id] = i
	}
	ring := make([]int32, n)
	for i := range ring {
		ring[i] = int32(i)
	}
	r := rand.New(rand.NewPCG(p.GraphSeed, p.Session^0x736563616767))
	r.Shuffle(n, func(i, j int) { ring[i], ring[j] = ring[j], ring[i] })
	flat := make([]int32, n*p.K)
	for pos, u := range ring {
		nb := flat[int(u)*p.K : int(u+1)*p.K : int(u+1)*p.K]
		if p.K == n-1 {
			c := 0
			for v := range n {
				if v != int(u) {
					nb[c] = int32(v)
					c++
				}
			}
		} else {
			for d := 1; d <= p.K/2; d++ {
				nb[2*d-2] = ring[(pos+d)%n]
				nb[2*d-1] = ring[(pos-d+n)%n]
			}
			slices.Sort(nb)
		}
		g.nbrs[u] = nb
	}
	return g, nil
}

// Params returns the graph's parameters. The caller must not modify IDs.
func (g *Graph) Params() Params { return g.p }

// Index returns the position of a client in the round's IDs.
func (g *Graph) Index(id uint64) (int, bool) {
	i, ok := g.index[id]
	return i, ok
}

// Neighbours returns the IDs of a client's neighbours in ascending order,
// or nil if id is not in the round.
func (g *Graph) Neighbours(id uint64) []uint64 {
	i, ok := g.index[id]
	if !ok {
		return nil
	}
	out := make([]uint64, len(g.nbrs[i]))
	for j, v := range g.nbrs[i] {
		out[j] = g.p.IDs[v]
	}
	return out
}

// adjacent reports whether clients at indices a and b are neighbours.
func (g *Graph) adjacent(a, b int) bool {
	_, ok := slices.BinarySearch(g.nbrs[a], int32(b))
	return ok
}

// shareX is the Shamir x-coordinate of the client at index i.
func shareX(i int) uint32 { return uint32(i) + 1 }

// Choice is a neighbourhood size and threshold with the failure
// probabilities that ChooseK computed for them.
type Choice struct {
	K, T int
	// Log2Fail is log2 of the probability (union bound over clients) that
	// some client keeps fewer than T neighbours that survive to the unmask
	// step, so that the sum cannot be recovered.
	Log2Fail float64
	// Log2Leak is log2 of the probability (union bound) that some client
	// has enough corrupt neighbours to let the server rebuild both of its
	// secrets (T of them for ChooseK, 2T-K for ChooseKMalicious).
	Log2Leak float64
}

// ChooseK returns the smallest even k (or n-1) and a threshold t > k/2 for n
// clients such that, when a fraction drop of them drops out and a fraction
// corrupt is corrupt (both chosen independently of the graph), the
// probability that the sum cannot be recovered is below 2^-eta and the
// probability that some client's secrets reach t corrupt neighbours is
// below 2^-sigma, against an honest-but-curious server. It follows the
// analysis of Bell et al. 2020: a client's k neighbours are a uniform
// sample of the other n-1 clients (the seeded permutation makes them so),
// so the count of its surviving and of its corrupt neighbours is
// hypergeometric, and a union bound over the n clients bounds both
// failures. The second result is false when no k <= n-1 meets both bounds.
func ChooseK(n int, drop, corrupt, eta, sigma float64) (Choice, bool) {
	return chooseK(n, drop, corrupt, eta, sigma, func(k, t int) int { return t })
}

// ChooseKMalicious is ChooseK against a server that lies about who
// survived: it may tell some of a client's honest neighbours that the client
// survived (they reveal b-shares) and the others that it dropped (they
// reveal s-shares). With c corrupt neighbours it then holds up to h+c
// b-shares and k-h+c s-shares for some h, so both secrets stay safe only
// while c < 2t-k; the leakage bound is on that event.
func ChooseKMalicious(n int, drop, corrupt, eta, sigma float64) (Choice, bool) {
	return chooseK(n, drop, corrupt, eta, sigma, func(k, t int) int { return 2*t - k })
}

func chooseK(n int, drop, corrupt, eta, sigma float64, leakAt func(k, t int) int) (Choice, bool) {
	if n < 3 {
		return Choice{}, false
	}
	others := n - 1
	alive := others - int(math.Ceil(drop*float64(others)))
	bad := int(math.Ceil(corrupt * float64(others)))
	for k := 2; k <= others; k++ {
		if k < others && k%2 != 0 {
			continue
		}
		// tail[x] = P[corrupt neighbours >= x], head[x] = P[surviving
		// neighbours <= x].
		tail := make([]float64, k+2)
		head := make([]float64, k+1)
		for x := k; x >= 0; x-- {
			tail[x] = tail[x+1] + hyperPMF(others, bad, k, x)
		}
		for x := 0; x <= k; x++ {
			head[x] = hyperPMF(others, alive, k, x)
			if x > 0 {
				head[x] += head[x-1]
			}
		}
		// Smallest t above k/2 meeting the privacy bound.
		for t := k/2 + 1; t <= k; t++ {
			leak := log2Union(n, tail[max(leakAt(k, t), 0)])
			if leak > -sigma {
				continue
			}
			fail := log2Union(n, head[t-1])
			if fail <= -eta {
				return Choice{K: k, T: t, Log2Fail: fail, Log2Leak: leak}, true
			}
			break // a larger t only makes recovery harder
		}
	}
	return Choice{}, false
}

func log2Union(n int, p float64) float64 {
	if p <= 0 {
		return math.Inf(-1)
	}
	return math.Log2(float64(n)) + math.Log2(p)
}

// hyperPMF is P[X = x] for X the number of marked items in a sample of k
// from N items of which m are marked.
func hyperPMF(N, m, k, x int) float64 {
	if x < 0 || x > k || x > m || k-x > N-m {
		return 0
	}
	return math.Exp(lchoose(m, x) + lchoose(N-m, k-x) - lchoose(N, k))
}

func lchoose(n, k int) float64 {
	a, _ := math.Lgamma(float64(n + 1))
	b, _ := math.Lgamma(float64(k + 1))
	c, _ := math.Lgamma(float64(n - k + 1))
	return a - b - c
}
