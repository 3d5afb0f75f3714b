package aggregate

import (
	"fmt"
	"runtime"
	"testing"
)

// The 2NN of McMahan et al. (784-200-200-10) has 199210 parameters.
const n2NN = 199210

var benchUpdates = map[string][]Update{}

// cachedUpdates returns k random updates of n values at density frac with a
// fixed seed; at most distinct of them are different (the rest repeat),
// which bounds the memory of the largest benchmarks.
func cachedUpdates(n, k, distinct int, frac float64) []Update {
	key := fmt.Sprint(n, k, distinct, frac)
	if ups, ok := benchUpdates[key]; ok {
		return ups
	}
	base := randomUpdates(uint64(n)+uint64(k), n, distinct, frac)
	ups := make([]Update, k)
	for i := range ups {
		ups[i] = base[i%distinct]
		ups[i].Weight = float64(1 + i%7)
	}
	benchUpdates[key] = ups
	return ups
}

// benchRound times rounds of s on ups. Besides ns/op it reports ms/round
// and cpu-ms/round, the CPU time of every thread (the garbage collector's
// included) per round, which a shared machine's load disturbs less than
// the wall time. One round runs first, untimed, and the garbage of the
// set-up is collected before the clock starts.
func benchRound(b *testing.B, s Strategy, n int, ups []Update) {
	b.ReportAllocs()
	global := make([]float32, n)
	round := func() {
		acc := s.Begin(n)
		for _, u := range ups {
			if err := acc.Add(u); err != nil {
				b.Fatal(err)
			}
		}
		if err := acc.Apply(global); err != nil {
			b.Fatal(err)
		}
	}
	round()
	runtime.GC()
	cpu0, cpuOK := cpuTime()
	for b.Loop() {
		round()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/1e6, "ms/round")
	if cpu1, ok := cpuTime(); ok && cpuOK {
		b.ReportMetric(float64((cpu1-cpu0).Nanoseconds())/float64(b.N)/1e6, "cpu-ms/round")
	}
}

// BenchmarkRound2NN times one round (Begin, Add of every update, Apply) of
// each strategy for the 2NN with 10 and 100 dense clients. The robust rules
// tolerate f = clients/5 Byzantine updates (Bulyan: as many as 4f+3 ≤
// clients allows, at most clients/5).
func BenchmarkRound2NN(b *testing.B) {
	for _, k := range []int{10, 100} {
		f := k / 5
		fb := min(f, (k-3)/4)
		ups := cachedUpdates(n2NN, k, k, 1)
		for _, spec := range []string{
			"fedavg", "fedavgm", "fedadam", "fedyogi", "fedadagrad",
			"median", "trimmed-mean,beta=0.2",
			fmt.Sprintf("krum,f=%d", f), fmt.Sprintf("multi-krum,f=%d", f), fmt.Sprintf("bulyan,f=%d", fb),
			"fedavg,bound=10", "fedavg,dp-clip=10,dp-noise=1,dp-seed=1",
			"median,bucket=2", "median,filter=0", "median,reputation=2",
		} {
			b.Run(fmt.Sprintf("%s/clients=%d", spec, k), func(b *testing.B) {
				s, err := Parse(spec)
				if err != nil {
					b.Fatal(err)
				}
				benchRound(b, s, n2NN, ups)
			})
		}
	}
}

// BenchmarkRound1M times a round of 100 updates of 1M parameters, dense
// and top-1 % sparse, for the mean-based strategies: sparse rounds cost
// O(kept coordinates) for the updates plus O(n) once for Apply.
func BenchmarkRound1M(b *testing.B) {
	const n, k = 1_000_000, 100
	for _, form := range []struct {
		name string
		frac float64
	}{{"dense", 1}, {"sparse1%", 0.01}} {
		ups := cachedUpdates(n, k, 8, form.frac)
		for _, spec := range []string{"fedavg", "fedadam", "fedavg,bound=10", "fedavg,dp-clip=10,dp-noise=1"} {
			b.Run(fmt.Sprintf("%s/%s", spec, form.name), func(b *testing.B) {
				benchRound(b, mustParse(b, spec), n, ups)
			})
		}
	}
}

// shapes2NN are the 2NN's tensors (784-200-200-10), n2NN parameters.
var shapes2NN = [][]int{{200, 784}, {200}, {200, 200}, {200}, {10, 200}, {10}}

// BenchmarkDefaultAndRobust times one round (Begin, Add of each pre-built
// update, Apply) of the bare FedAvg ("fedavg,bound=off", the default before
// AutoBound), the default strategy (runspec.DefaultStrategy, bounded by
// AutoBound), the recommended robust spec (RobustSpec) and the rules over
// each coordinate's senders, for the 2NN with 10, 30 and 100 clients a
// round, dense and sparse (1 % of the coordinates, as a top-k codec sends).
// Every client's update is different and carries its client ID, so the
// reputation tracks them across the benchmark's rounds. docs/strategies.md
// ("Cost") has the table.
func BenchmarkDefaultAndRobust(b *testing.B) {
	for _, form := range []struct {
		name string
		frac float64
	}{{"dense", 1}, {"sparse1%", 0.01}} {
		for _, k := range []int{10, 30, 100} {
			ups := cachedUpdates(n2NN, k, k, form.frac)
			for i := range ups {
				ups[i].Client, ups[i].ClientKnown = uint64(i+1), true
			}
			for _, spec := range []struct{ name, spec string }{
				{"bare", "fedavg,bound=off"},
				{"default", "fedavgm,lr=3,momentum=0"}, // runspec.DefaultStrategy before the input quorum
				{"default-quorum", "fedavgm,lr=3,momentum=0,anneal=200,quorum=24,quorum-by=input,quorum-frac=0.75"}, // runspec.DefaultStrategy
				{"robust", RobustSpec},
				{"robust-v5", RobustSpecV5},
				{"trimmed-senders", "trimmed-mean,over=senders"},
				{"median-senders", "median,over=senders"},
				{"signvote", "signvote"},
			} {
				b.Run(fmt.Sprintf("%s/%s/clients=%d", spec.name, form.name, k), func(b *testing.B) {
					s := mustParse(b, spec.spec)
					if err := SetShapes(s, shapes2NN); err != nil {
						b.Fatal(err)
					}
					benchRound(b, s, n2NN, ups)
				})
			}
		}
	}
}
