package dataset_test

import (
	"bytes"
	"fmt"

	"github.com/fedzip/fedzip/dataset"
)

func ExampleIID() {
	p, err := dataset.IID(10, 3, 1)
	if err != nil {
		panic(err)
	}
	fmt.Println(p.Sizes(), p.Total())
	// Output: [4 3 3] 10
}

func ExampleShards() {
	labels := []uint8{0, 0, 1, 1, 2, 2, 3, 3}
	p, err := dataset.Shards(labels, 2, 2, 1) // 4 shards of 2 examples, 2 per client
	if err != nil {
		panic(err)
	}
	for k := range p {
		fmt.Println(k, dataset.LabelCounts(labels, 4, p[k]))
	}
	// Output:
	// 0 [2 0 2 0]
	// 1 [0 2 0 2]
}

func ExampleWriteIDX() {
	var buf bytes.Buffer
	in := &dataset.IDX{Type: dataset.IDXUint8, Dims: []int{2, 2}, Data: []byte{0, 64, 128, 255}}
	if err := dataset.WriteIDX(&buf, in); err != nil {
		panic(err)
	}
	fmt.Printf("% x\n", buf.Bytes())
	out, err := dataset.ReadIDX(&buf, "example.idx", 0)
	fmt.Println(out.Dims, out.Data, err)

	_, err = dataset.ReadIDX(bytes.NewReader([]byte{0, 0, 8, 1, 0, 0, 0, 9, 1, 2}), "short.idx", 0)
	fmt.Println(err)
	// Output:
	// 00 00 08 02 00 00 00 02 00 00 00 02 00 40 80 ff
	// [2 2] [0 64 128 255] <nil>
	// dataset: short.idx: truncated: got 2 of 9 payload bytes for dimensions [9]
}
