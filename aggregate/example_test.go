package aggregate_test

import (
	"fmt"

	"github.com/fedzip/fedzip/aggregate"
)

// A round of the trimmed mean: the outlying fourth client moves neither
// coordinate.
func ExampleParse() {
	s, err := aggregate.Parse("trimmed-mean,beta=0.25")
	if err != nil {
		panic(err)
	}
	acc := s.Begin(2)
	for _, d := range [][]float32{{1, 1}, {2, 2}, {3, 3}, {100, -100}} {
		if err := acc.Add(aggregate.Update{Weight: 1, Delta: d}); err != nil {
			panic(err)
		}
	}
	global := []float32{0, 0}
	if err := acc.Apply(global); err != nil {
		panic(err)
	}
	fmt.Println(aggregate.Spec(s), global)
	// Output: trimmed-mean,beta=0.25 [2.5 1.5]
}

// Sparse updates carry only the coordinates a client kept; FedAvg adds
// them without densifying.
func ExampleUpdate_sparse() {
	acc := aggregate.FedAvg{}.Begin(5)
	acc.Add(aggregate.Update{Weight: 1, N: 5, Indices: []int32{0, 3}, Values: []float32{4, -2}})
	acc.Add(aggregate.Update{Weight: 3, N: 5, Indices: []int32{3}, Values: []float32{2}})
	global := make([]float32, 5)
	acc.Apply(global)
	fmt.Println(global)
	// Output: [1 0 0 1 0]
}

// Server state goes into a Raft snapshot and comes back bit for bit.
func ExampleMarshalState() {
	s, _ := aggregate.Parse("fedadam,lr=0.05")
	global := []float32{0, 0}
	acc := s.Begin(2)
	acc.Add(aggregate.Update{Weight: 1, Delta: []float32{0.5, -0.5}})
	acc.Apply(global)

	snap, _ := aggregate.MarshalState(s)
	restored, _ := aggregate.Parse("fedadam") // its parameters come from the snapshot
	if err := aggregate.UnmarshalState(restored, snap); err != nil {
		panic(err)
	}
	fmt.Println(aggregate.Spec(restored))
	// Output: fedadam,lr=0.05,beta1=0.9,beta2=0.99,tau=0.001,bound=auto,bound-median=2,weight-cap=2
}

// The privacy spent by 100 rounds of DP-FedAvg sampling 1 % of the clients
// with noise multiplier 1.1.
func ExampleAccountant() {
	var acct aggregate.Accountant
	for range 100 {
		acct.Step(0.01, 1.1)
	}
	eps, order := acct.EpsilonOrder(1e-5)
	fmt.Printf("ε = %.3f at δ = 1e-5 (order %v)\n", eps, order)
	// Output: ε = 0.981 at δ = 1e-5 (order 11)
}
