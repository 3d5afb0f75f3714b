package compress

import (
	"fmt"
	"math"
	"sync"
	"testing"

	"github.com/klauspost/compress/huff0"
	"github.com/klauspost/compress/zstd"
)

// Benchmarks come in size families, n = 1e3 ... 1e7 float32, on fixed-seed
// data. b.SetBytes(4*n) makes MB/s the throughput in dense input, whatever
// the kernel actually touches, so that kernels compare with the memory
// pass. Sub-benchmarks are named by size and density, for example
// BenchmarkTopK/n=1e7/k=0.01, so that scripts can pair them with
// BenchmarkMemoryPass/n=1e7.

var benchSizes = []int{1e3, 1e4, 1e5, 1e6, 1e7}

func sizeName(n int) string {
	e := math.Log10(float64(n))
	if e == math.Trunc(e) {
		return fmt.Sprintf("1e%d", int(e))
	}
	return fmt.Sprint(n)
}

var benchData sync.Map // "kind/n" -> []float32

// benchVec returns a shared fixed-seed vector; callers must not modify it.
func benchVec(kind string, n int) []float32 {
	key := fmt.Sprintf("%s/%d", kind, n)
	if v, ok := benchData.Load(key); ok {
		return v.([]float32)
	}
	v := genVec(kind, n, 42)
	benchData.Store(key, v)
	return v
}

var sink float64

// BenchmarkMemoryPass is the floor: one read pass over x, summing |x|.
func BenchmarkMemoryPass(b *testing.B) {
	for _, n := range benchSizes {
		b.Run("n="+sizeName(n), func(b *testing.B) {
			x := benchVec("normal", n)
			b.SetBytes(int64(4 * n))
			b.ReportAllocs()
			for b.Loop() {
				sink += SumAbs(x)
			}
		})
	}
}

var densities = []float64{0.01, 0.001}

// forSizeDensity runs f for every size and density with k >= 1.
func forSizeDensity(b *testing.B, minN int, f func(b *testing.B, n, k int)) {
	for _, n := range benchSizes {
		if n < minN {
			continue
		}
		for _, d := range densities {
			k := int(d * float64(n))
			if k == 0 {
				continue
			}
			b.Run(fmt.Sprintf("n=%s/k=%g", sizeName(n), d), func(b *testing.B) { f(b, n, k) })
		}
	}
}

// BenchmarkTopK is the fused error-feedback step: exact top-k selection of
// the accumulator, gathering the values and zeroing them in place. The
// accumulator is restored outside the timed region after every call, so
// that each call sees the same data.
func BenchmarkTopK(b *testing.B) {
	forSizeDensity(b, 0, func(b *testing.B, n, k int) {
		acc := append([]float32(nil), benchVec("normal", n)...)
		idx, val := make([]int32, k), make([]float32, k)
		var ws Workspace
		TopKResidual(idx, val, acc, &ws)
		Scatter(acc, idx, val)
		b.SetBytes(int64(4 * n))
		b.ReportAllocs()
		b.ResetTimer()
		for range b.N {
			TopKResidual(idx, val, acc, &ws)
			b.StopTimer()
			Scatter(acc, idx, val)
			b.StartTimer()
		}
	})
}

// BenchmarkTopKIndices is TopK alone: indices only, x unchanged.
func BenchmarkTopKIndices(b *testing.B) {
	forSizeDensity(b, 1e5, func(b *testing.B, n, k int) {
		x := benchVec("normal", n)
		idx := make([]int32, k)
		var ws Workspace
		TopK(idx, x, &ws) // size the workspace
		b.SetBytes(int64(4 * n))
		b.ReportAllocs()
		for b.Loop() {
			TopK(idx, x, &ws)
		}
	})
}

func BenchmarkTopKSampled(b *testing.B) {
	forSizeDensity(b, 1e5, func(b *testing.B, n, k int) {
		x := benchVec("normal", n)
		idx := make([]int32, k)
		var ws Workspace
		m, _ := TopKSampled(idx, x, 0, &ws)
		b.SetBytes(int64(4 * n))
		b.ReportAllocs()
		for b.Loop() {
			m, _ = TopKSampled(idx, x, 0, &ws)
		}
		b.ReportMetric(float64(m)/float64(k), "selected/k")
	})
}

func BenchmarkRandK(b *testing.B) {
	forSizeDensity(b, 1e5, func(b *testing.B, n, k int) {
		idx := make([]int32, k)
		var ws Workspace
		RandK(idx, n, 7, &ws)
		b.SetBytes(int64(4 * n))
		b.ReportAllocs()
		for b.Loop() {
			RandK(idx, n, 7, &ws)
		}
	})
}

func BenchmarkThreshold(b *testing.B) {
	for _, n := range []int{1e6, 1e7} {
		b.Run("n="+sizeName(n)+"/k=0.01", func(b *testing.B) {
			x := benchVec("normal", n)
			idx := make([]int32, n/50)
			b.SetBytes(int64(4 * n))
			b.ReportAllocs()
			for b.Loop() {
				Threshold(idx, x, 2.5758) // the 1 % two-sided quantile of N(0,1)
			}
		})
	}
}

// BenchmarkQuantize quantizes dense vectors at 4 and 8 bits with buckets of
// 512 values.
func BenchmarkQuantize(b *testing.B) {
	for _, n := range []int{1e4, 1e6} {
		for _, bits := range []int{1, 4, 8} {
			for _, stoch := range []bool{false, true} {
				name := fmt.Sprintf("n=%s/bits=%d/stochastic=%v", sizeName(n), bits, stoch)
				b.Run(name, func(b *testing.B) {
					x := benchVec("normal", n)
					q := make([]int8, n)
					sc := make([]float32, Buckets(n, 512))
					b.SetBytes(int64(4 * n))
					b.ReportAllocs()
					for b.Loop() {
						if stoch {
							QuantizeStochastic(q, sc, x, bits, 512, 1)
						} else {
							Quantize(q, sc, x, bits, 512)
						}
					}
				})
			}
		}
	}
}

func BenchmarkDequantize(b *testing.B) {
	n := int(1e6)
	x := benchVec("normal", n)
	q := make([]int8, n)
	sc := make([]float32, Buckets(n, 512))
	Quantize(q, sc, x, 8, 512)
	y := make([]float32, n)
	b.SetBytes(int64(4 * n))
	b.ReportAllocs()
	for b.Loop() {
		Dequantize(y, q, sc, 512)
	}
}

func BenchmarkFloat16(b *testing.B) {
	n := int(1e6)
	x := benchVec("normal", n)
	h := make([]uint16, n)
	y := make([]float32, n)
	for _, c := range []struct {
		name string
		f    func()
	}{
		{"ToFloat16", func() { ToFloat16(h, x) }},
		{"FromFloat16", func() { FromFloat16(y, h) }},
		{"ToBFloat16", func() { ToBFloat16(h, x) }},
		{"FromBFloat16", func() { FromBFloat16(y, h) }},
	} {
		b.Run(c.name+"/n=1e6", func(b *testing.B) {
			b.SetBytes(int64(4 * n))
			b.ReportAllocs()
			for b.Loop() {
				c.f()
			}
		})
	}
}

// benchIndices returns the top-k indices of the benchmark vector.
func benchIndices(n, k int) []int32 {
	idx := make([]int32, k)
	TopK(idx, benchVec("normal", n), nil)
	return idx
}

// BenchmarkRice codes the indices of a top-k selection; bits/index is the
// coded size per kept coordinate, including the header byte.
func BenchmarkRice(b *testing.B) {
	forSizeDensity(b, 1e4, func(b *testing.B, n, k int) {
		idx := benchIndices(n, k)
		buf := AppendRiceIndices(nil, idx, n)
		bitsPer := float64(8*len(buf)) / float64(k)
		b.Run("op=encode", func(b *testing.B) {
			b.SetBytes(int64(4 * n))
			b.ReportAllocs()
			for b.Loop() {
				buf = AppendRiceIndices(buf[:0], idx, n)
			}
			b.ReportMetric(bitsPer, "bits/index")
		})
		b.Run("op=decode", func(b *testing.B) {
			dst := make([]int32, k)
			b.SetBytes(int64(4 * n))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := DecodeRiceIndices(dst, buf, n); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(bitsPer, "bits/index")
		})
	})
}

func BenchmarkPack(b *testing.B) {
	n := int(1e6)
	for _, bits := range []int{1, 2, 3, 4, 5, 8} {
		src := randSymbols(n, bits, 1)
		buf := AppendPacked(nil, src, bits)
		b.Run(fmt.Sprintf("op=pack/bits=%d/n=1e6", bits), func(b *testing.B) {
			b.SetBytes(int64(n))
			b.ReportAllocs()
			for b.Loop() {
				buf = AppendPacked(buf[:0], src, bits)
			}
		})
		b.Run(fmt.Sprintf("op=unpack/bits=%d/n=1e6", bits), func(b *testing.B) {
			dst := make([]uint8, n)
			b.SetBytes(int64(n))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Unpack(dst, buf, bits); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// symbolSets are quantized symbols of realistic updates:
//   - topk4: 4-bit QSGD codes (deterministic, one scale) of the top 1 % of
//     a Laplace vector of 1e6 (the values a sparse update sends);
//   - topk4s: the same, stochastic;
//   - dense8: 8-bit stochastic QSGD codes of a dense normal vector of 1e6 in
//     buckets of 512;
//   - dense4: 4-bit, likewise.
var symbolSets = sync.OnceValue(func() map[string][]uint8 {
	sets := map[string][]uint8{}
	n := int(1e6)
	x := genVec("laplace", n, 42)
	k := n / 100
	idx, val := make([]int32, k), make([]float32, k)
	TopK(idx, x, nil)
	Gather(val, x, idx)
	for _, c := range []struct {
		name  string
		src   []float32
		bits  int
		stoch bool
		bkt   int
	}{
		{"topk4", val, 4, false, 0},
		{"topk4s", val, 4, true, 0},
		{"dense8", benchVec("normal", n), 8, true, 512},
		{"dense4", benchVec("normal", n), 4, true, 512},
	} {
		q := make([]int8, len(c.src))
		sc := make([]float32, Buckets(len(c.src), c.bkt))
		if c.stoch {
			QuantizeStochastic(q, sc, c.src, c.bits, c.bkt, 3)
		} else {
			Quantize(q, sc, c.src, c.bits, c.bkt)
		}
		s := make([]uint8, len(q))
		ToSymbols(s, q, c.bits)
		sets[c.name] = s
	}
	return sets
})

// huff0Append codes src with huff0 in blocks of at most BlockSizeMax,
// each as a 4-byte length and the block (or a stored block when huff0
// declines), appended to dst.
func huff0Append(dst, src []byte, s *huff0.Scratch) []byte {
	for len(src) > 0 {
		blk := src[:min(len(src), huff0.BlockSizeMax)]
		src = src[len(blk):]
		out, _, err := huff0.Compress1X(blk, s)
		if err != nil {
			out = blk
		}
		dst = append(dst, byte(len(out)), byte(len(out)>>8), byte(len(out)>>16), byte(len(blk)>>16))
		dst = append(dst, out...)
	}
	return dst
}

// BenchmarkEntropySymbols compares the entropy coders on quantized symbols:
// this package's canonical Huffman, klauspost's huff0 (1X, the stream the
// decoder below reads), and zstd at its default and best levels. It
// reports the coded size in bits per symbol beside the order-0 entropy.
// Only the Huffman coders have a decode benchmark here.
func BenchmarkEntropySymbols(b *testing.B) {
	sets := symbolSets()
	for _, name := range []string{"topk4", "topk4s", "dense4", "dense8"} {
		src := sets[name]
		h := entropy(src)
		b.Run("data="+name+"/coder=huffman/op=encode", func(b *testing.B) {
			buf := AppendHuffman(nil, src)
			b.SetBytes(int64(len(src)))
			b.ReportAllocs()
			for b.Loop() {
				buf = AppendHuffman(buf[:0], src)
			}
			b.ReportMetric(float64(8*len(buf))/float64(len(src)), "bits/symbol")
			b.ReportMetric(h, "entropy")
		})
		b.Run("data="+name+"/coder=huffman/op=decode", func(b *testing.B) {
			buf := AppendHuffman(nil, src)
			dst := make([]uint8, len(src))
			b.SetBytes(int64(len(src)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := DecodeHuffman(dst, buf); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("data="+name+"/coder=huff0/op=encode", func(b *testing.B) {
			var s huff0.Scratch
			s.Reuse = huff0.ReusePolicyNone
			var buf []byte
			b.SetBytes(int64(len(src)))
			b.ReportAllocs()
			for b.Loop() {
				buf = huff0Append(buf[:0], src, &s)
			}
			b.ReportMetric(float64(8*len(buf))/float64(len(src)), "bits/symbol")
		})
		if len(src) <= huff0.BlockSizeMax {
			b.Run("data="+name+"/coder=huff0/op=decode", func(b *testing.B) {
				var s huff0.Scratch
				s.Reuse = huff0.ReusePolicyNone
				out, _, err := huff0.Compress1X(src, &s)
				if err != nil {
					b.Skip(err)
				}
				out = append([]byte(nil), out...)
				dst := make([]byte, 0, len(src))
				b.SetBytes(int64(len(src)))
				b.ReportAllocs()
				for b.Loop() {
					var ds huff0.Scratch
					s2, rest, err := huff0.ReadTable(out, &ds)
					if err != nil {
						b.Fatal(err)
					}
					if _, err := s2.Decoder().Decompress1X(dst[:0], rest); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
		for _, lvl := range []zstd.EncoderLevel{zstd.SpeedDefault, zstd.SpeedBestCompression} {
			b.Run(fmt.Sprintf("data=%s/coder=zstd-%s/op=encode", name, lvl), func(b *testing.B) {
				enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(lvl), zstd.WithEncoderConcurrency(1))
				if err != nil {
					b.Fatal(err)
				}
				defer enc.Close()
				var buf []byte
				b.SetBytes(int64(len(src)))
				b.ReportAllocs()
				for b.Loop() {
					buf = enc.EncodeAll(src, buf[:0])
				}
				b.ReportMetric(float64(8*len(buf))/float64(len(src)), "bits/symbol")
			})
		}
	}
}

// encodeTopK4 is the client's encoding of a top-k 1 % 4-bit update with the
// primitives of this package: fused selection and residual update, 4-bit
// QSGD codes with one scale, Rice-coded indices and Huffman-coded symbols.
type topK4 struct {
	n, k int
	idx  []int32
	val  []float32
	q    []int8
	sym  []uint8
	sc   []float32
	ws   Workspace
}

func newTopK4(n, k int) *topK4 {
	return &topK4{n: n, k: k, idx: make([]int32, k), val: make([]float32, k),
		q: make([]int8, k), sym: make([]uint8, k), sc: make([]float32, 1)}
}

func (e *topK4) encode(dst []byte, acc []float32) (out []byte, idxBytes int) {
	TopKResidual(e.idx, e.val, acc, &e.ws)
	Quantize(e.q, e.sc, e.val, 4, 0)
	ToSymbols(e.sym, e.q, 4)
	dst = AppendRiceIndices(dst, e.idx, e.n)
	idxBytes = len(dst)
	return AppendHuffman(dst, e.sym), idxBytes
}

// decode adds the update in src to agg, as an aggregator does.
func (e *topK4) decode(agg []float32, src []byte, scale float32) error {
	used, err := DecodeRiceIndices(e.idx, src, e.n)
	if err != nil {
		return err
	}
	if _, err := DecodeHuffman(e.sym, src[used:]); err != nil {
		return err
	}
	if err := FromSymbols(e.q, e.sym, 4); err != nil {
		return err
	}
	e.sc[0] = scale
	Dequantize(e.val, e.q, e.sc, 0)
	ScatterAdd(agg, e.idx, e.val)
	return nil
}

// BenchmarkUpdate measures encoding (including selection) and decoding
// (into a dense aggregate) of a top-k 4-bit update, with the wire size per
// kept coordinate split into indices and values.
func BenchmarkUpdate(b *testing.B) {
	forSizeDensity(b, 1e5, func(b *testing.B, n, k int) {
		acc := append([]float32(nil), benchVec("normal", n)...)
		e := newTopK4(n, k)
		buf, idxBytes := e.encode(nil, acc)
		Scatter(acc, e.idx, e.val)
		idxBits := float64(8*idxBytes) / float64(k)
		valBits := float64(8*(len(buf)-idxBytes)) / float64(k)
		b.Run("bits=4/op=encode", func(b *testing.B) {
			b.SetBytes(int64(4 * n))
			b.ReportAllocs()
			for b.Loop() {
				buf, _ = e.encode(buf[:0], acc)
				b.StopTimer()
				Scatter(acc, e.idx, e.val)
				b.StartTimer()
			}
			b.ReportMetric(idxBits, "index-bits/k")
			b.ReportMetric(valBits, "value-bits/k")
		})
		b.Run("bits=4/op=decode", func(b *testing.B) {
			agg := make([]float32, n)
			d := newTopK4(n, k)
			b.SetBytes(int64(4 * n))
			b.ReportAllocs()
			for b.Loop() {
				if err := d.decode(agg, buf, e.sc[0]); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(idxBits, "index-bits/k")
			b.ReportMetric(valBits, "value-bits/k")
		})
	})
}
