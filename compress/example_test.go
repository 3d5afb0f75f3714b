package compress_test

import (
	"fmt"

	"github.com/fedzip/fedzip/compress"
)

func Example_sparseUpdate() {
	// An error-feedback accumulator of 16 coordinates: send the top 4.
	acc := []float32{0.1, -2, 0, 0.3, 5, 0, -0.2, 0, 0, 1.5, 0, 0, -0.1, 0, 3, 0}
	idx := make([]int32, 4)
	val := make([]float32, 4)
	compress.TopKResidual(idx, val, acc, nil)
	fmt.Println("indices:", idx, "values:", val)

	// 4-bit codes with one scale, then Rice-coded indices and packed codes.
	codes := make([]int8, 4)
	scales := make([]float32, 1)
	compress.Quantize(codes, scales, val, 4, 0)
	sym := make([]uint8, 4)
	compress.ToSymbols(sym, codes, 4)
	wire := compress.AppendRiceIndices(nil, idx, len(acc))
	wire = compress.AppendPacked(wire, sym, 4)
	fmt.Println("codes:", codes, "wire bytes:", len(wire))

	// The receiver decodes with the counts it knows from its header.
	gotIdx := make([]int32, 4)
	used, _ := compress.DecodeRiceIndices(gotIdx, wire, len(acc))
	gotSym := make([]uint8, 4)
	_, _ = compress.Unpack(gotSym, wire[used:], 4)
	gotCodes := make([]int8, 4)
	_ = compress.FromSymbols(gotCodes, gotSym, 4)
	gotVal := make([]float32, 4)
	compress.Dequantize(gotVal, gotCodes, scales, 0)
	fmt.Println("decoded:", gotIdx, gotVal)
	fmt.Println("residual:", acc)
	// Output:
	// indices: [1 4 9 14] values: [-2 5 1.5 3]
	// codes: [-3 7 2 4] wire bytes: 5
	// decoded: [1 4 9 14] [-2.142857 5 1.4285715 2.857143]
	// residual: [0.1 0 0 0.3 0 0 -0.2 0 0 0 0 0 -0.1 0 0 0]
}

func ExampleRandK() {
	idx := make([]int32, 5)
	compress.RandK(idx, 100, 42, nil)
	again := make([]int32, 5)
	compress.RandK(again, 100, 42, nil)
	fmt.Println(len(idx), idx[0] < idx[1], fmt.Sprint(idx) == fmt.Sprint(again))
	// Output: 5 true true
}

func ExampleFloat16bits() {
	for _, f := range []float32{1, 0.1, 65504, 65520, 1e-8} {
		h := compress.Float16bits(f)
		fmt.Printf("%g -> %#04x -> %g\n", f, h, compress.Float16frombits(h))
	}
	// Output:
	// 1 -> 0x3c00 -> 1
	// 0.1 -> 0x2e66 -> 0.099975586
	// 65504 -> 0x7bff -> 65504
	// 65520 -> 0x7c00 -> +Inf
	// 1e-08 -> 0x0000 -> 0
}

func ExampleTopK() {
	x := []float32{0.5, -3, 1, 3, -0.1, 2}
	idx := make([]int32, 3)
	t := compress.TopK(idx, x, nil)
	fmt.Println(idx, t)
	// Output: [1 3 5] 2
}
