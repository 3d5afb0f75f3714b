package secagg_test

import (
	"fmt"

	"github.com/fedzip/fedzip/secagg"
)

// ExampleChooseK prints the neighbourhood size and threshold for rounds of
// 10 to 10,000 clients of which 30% may drop out and 10% may be corrupt,
// with failure below 2^-30 and leakage below 2^-40.
func ExampleChooseK() {
	for _, n := range []int{10, 100, 1000, 10000} {
		c, ok := secagg.ChooseK(n, 0.3, 0.1, 30, 40)
		fmt.Printf("n=%d k=%d t=%d ok=%v\n", n, c.K, c.T, ok)
	}
	for _, n := range []int{10, 100, 1000, 10000} {
		c, ok := secagg.ChooseKMalicious(n, 0.3, 0.1, 30, 40)
		fmt.Printf("malicious server: n=%d k=%d t=%d ok=%v\n", n, c.K, c.T, ok)
	}
	// Output:
	// n=10 k=8 t=5 ok=true
	// n=100 k=62 t=32 ok=true
	// n=1000 k=222 t=112 ok=true
	// n=10000 k=306 t=154 ok=true
	// malicious server: n=10 k=8 t=5 ok=true
	// malicious server: n=100 k=72 t=42 ok=true
	// malicious server: n=1000 k=464 t=274 ok=true
	// malicious server: n=10000 k=930 t=551 ok=true
}

// ExampleFixedPoint encodes two clients' values, sums the codes modulo
// 2^32 and decodes the sum.
func ExampleFixedPoint() {
	f := secagg.FixedPoint{Clip: 1, Bits: 8}
	a, b := make([]uint32, 3), make([]uint32, 3)
	f.Encode(a, []float32{0.5, -0.25, 2})
	f.Encode(b, []float32{-1, -0.25, 0})
	sum := []uint32{a[0] + b[0], a[1] + b[1], a[2] + b[2]}
	out := make([]float32, 3)
	f.Decode(out, sum)
	fmt.Printf("%.3f, at most %d clients\n", out, f.MaxClients())
	// Output:
	// [-0.496 -0.504 1.000], at most 16909320 clients
}
