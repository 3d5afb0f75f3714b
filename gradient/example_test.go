package gradient_test

import (
	"fmt"

	"github.com/fedzip/fedzip/compress"
	"github.com/fedzip/fedzip/gradient"
)

func Example() {
	// A client: top 25 % of its update, 4-bit values, error feedback.
	spec, err := gradient.ParseSpec("topk=0.25,bits=4,ef=on")
	if err != nil {
		panic(err)
	}
	enc, _ := gradient.NewEncoder(spec, 8)
	delta := []float32{0.1, -2, 0, 0.3, 5, 0, -0.2, 1.5}
	msg, st, _ := enc.Encode(nil, delta, 1, 42)
	fmt.Printf("%d coordinates in %d bytes (%d of header)\n", st.Kept, st.Bytes, st.HeaderBytes)
	residual := make([]float32, 8)
	enc.ExportState(residual, nil) // no momentum: no velocity
	fmt.Println("residual:", residual)

	// The server: decode sparse and accumulate.
	agg := make([]float32, 8)
	idx, val, h, err := gradient.DecodeSparse(nil, nil, msg, gradient.Limits{MaxParams: 1 << 20})
	if err != nil {
		panic(err)
	}
	compress.ScatterAdd(agg, idx, val)
	fmt.Println("round", h.Round, "indices", idx, "aggregate", agg)
	// Output:
	// 2 coordinates in 34 bytes (28 of header)
	// residual: [0.1 0.14285707 0 0.3 0 0 -0.2 1.5]
	// round 1 indices [1 4] aggregate [0 -2.142857 0 0 5 0 0 0]
}

func ExampleParseSpec() {
	for _, s := range []string{"dgc", "stc", "bits=8, stochastic=on, bucket=512", "topk=0.01,bits=ternary,ef=on,entropy=auto"} {
		spec, err := gradient.ParseSpec(s)
		fmt.Println(spec, err)
	}
	_, err := gradient.ParseSpec("topk=0.01,bits=12")
	fmt.Println(err)
	// Output:
	// topk=0.001,ef=on,momentum=0.9,warmup=4 <nil>
	// topk=0.01,bits=ternary,ef=on <nil>
	// bits=8,stochastic=on,bucket=512 <nil>
	// topk=0.01,bits=ternary,ef=on <nil>
	// gradient: invalid spec: "topk=0.01,bits=12": bits=12: want 32, 16, bf16, 1..8, ternary, sign or lattice
}

func ExampleServerEncoder() {
	spec, _ := gradient.ParseSpec("topk=0.25")
	initial := []float32{1, 2, 3, 4}
	srv, _ := gradient.NewServerEncoder(spec, initial, 2)

	client := append([]float32(nil), initial...)
	have := 0

	// The global model moves once; the server publishes it twice. One
	// coordinate of the change is sent each time; the rest stays in the
	// server residual, global - srv.Model(), and goes out the next time.
	global := []float32{1, 2, 3.5, 6}
	for v := 1; v <= 2; v++ {
		_, _ = srv.Publish(global, uint64(v))
		down, full := srv.AppendUpdate(nil, have)
		var err error
		have, err = gradient.ApplyDownload(client, have, down, gradient.Limits{})
		fmt.Println("version", have, "client", client, "bytes", len(down), "full", full, err)
	}
	// Output:
	// version 1 client [1 2 3 6] bytes 30 full false <nil>
	// version 2 client [1 2 3.5 6] bytes 30 full false <nil>
}
