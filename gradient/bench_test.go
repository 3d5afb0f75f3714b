package gradient

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/fedzip/fedzip/dataset"
	"github.com/fedzip/fedzip/nn"
)

// Benchmarks run on fixed-seed heavy-tailed vectors (genDelta) at the 2NN
// size (199,210), 1e6 and 1e7 parameters. b.SetBytes(4*n) makes MB/s the
// throughput in dense float32 input, comparable with
// compress.BenchmarkMemoryPass. Each reports the message size (bytes/update),
// its ratio to dense float32 and the bits per kept coordinate of the index
// and value sections. BenchmarkWire2NN measures the sizes on real 2NN
// deltas from MNIST.

var benchSpecs = []string{"none", "dgc", "stc", "qsgd8", "qsgd4", "topk1", "topk4", "efsign", "terngrad",
	"topk=0.001,bits=4,ef=on", "topk=0.01,bits=4,ef=on,entropy=none", "topk=0.01,bits=4,ef=on,entropy=zstd",
	"randk=0.01,bits=4,ef=on"}

var benchSizes = []int{199210, 1e6, 1e7}

func sizeName(n int) string {
	e := math.Log10(float64(n))
	if e == math.Trunc(e) {
		return fmt.Sprintf("1e%d", int(e))
	}
	return fmt.Sprint(n)
}

var benchDeltas sync.Map // n -> [][]float32

// benchDelta returns one of four fixed-seed deltas of length n, shared.
func benchDelta(n, i int) []float32 {
	v, ok := benchDeltas.Load(n)
	if !ok {
		d := make([][]float32, 4)
		for j := range d {
			d[j] = genDelta(make([]float32, n), uint64(j+1), 0.01)
		}
		v, _ = benchDeltas.LoadOrStore(n, d)
	}
	return v.([][]float32)[i%4]
}

func reportSize(b *testing.B, st Stats) {
	b.ReportMetric(float64(st.Bytes), "bytes/update")
	b.ReportMetric(st.Ratio(), "ratio")
	b.ReportMetric(st.BitsPerKept(), "bits/kept")
	b.ReportMetric(st.IndexBitsPerKept(), "index-bits/kept")
	b.ReportMetric(st.ValueBitsPerKept(), "value-bits/kept")
}

// warmEncoder returns an encoder that has encoded 8 rounds, past any
// warm-up, so that its residual is in a steady state.
func warmEncoder(b *testing.B, spec string, n int) (*Encoder, []byte, Stats) {
	e := mustEncoder(b, spec, n)
	var buf []byte
	var st Stats
	var err error
	for r := 1; r <= 8; r++ {
		if buf, st, err = e.Encode(buf[:0], benchDelta(n, r), 100+r, uint64(r)); err != nil {
			b.Fatal(err)
		}
	}
	return e, buf, st
}

func BenchmarkEncode(b *testing.B) {
	for _, n := range benchSizes {
		for _, s := range benchSpecs {
			b.Run(fmt.Sprintf("n=%s/spec=%s", sizeName(n), s), func(b *testing.B) {
				e, buf, st := warmEncoder(b, s, n)
				b.SetBytes(int64(4 * n))
				b.ReportAllocs()
				i := 0
				for b.Loop() {
					i++
					buf, st, _ = e.Encode(buf[:0], benchDelta(n, i), 200, uint64(i))
				}
				reportSize(b, st)
			})
		}
	}
}

func BenchmarkDecode(b *testing.B) {
	for _, n := range benchSizes {
		for _, s := range benchSpecs {
			b.Run(fmt.Sprintf("n=%s/spec=%s", sizeName(n), s), func(b *testing.B) {
				_, msg, st := warmEncoder(b, s, n)
				dst := make([]float32, n)
				var d Decoder
				b.SetBytes(int64(4 * n))
				b.ReportAllocs()
				for b.Loop() {
					if _, err := d.Decode(dst, msg, Limits{}); err != nil {
						b.Fatal(err)
					}
				}
				reportSize(b, st)
			})
		}
	}
}

func BenchmarkDecodeSparse(b *testing.B) {
	for _, n := range benchSizes {
		for _, s := range []string{"dgc", "stc", "topk4"} {
			b.Run(fmt.Sprintf("n=%s/spec=%s", sizeName(n), s), func(b *testing.B) {
				_, msg, st := warmEncoder(b, s, n)
				var d Decoder
				var idx []int32
				var val []float32
				b.SetBytes(int64(4 * n))
				b.ReportAllocs()
				for b.Loop() {
					var err error
					if idx, val, _, err = d.DecodeSparse(idx[:0], val[:0], msg, Limits{}); err != nil {
						b.Fatal(err)
					}
				}
				reportSize(b, st)
			})
		}
	}
}

// twoNN holds the updates of a short dense FedAvg run of the 2NN
// (784-200-200-10, 199,210 parameters) on MNIST, iid over 100 clients:
// twoNN.deltas[r][c] is the update of client c in round r+1 (E = 1,
// B = 10, lr = 0.1), the global model following the dense mean.
var twoNN = struct {
	once   sync.Once
	deltas [][][]float32
	err    error
}{}

const twoNNRounds, twoNNClients = 12, 5

func twoNNDeltas(b *testing.B) [][][]float32 {
	twoNN.once.Do(func() {
		dir, err := dataset.MNISTDir("")
		if err != nil {
			twoNN.err = err
			return
		}
		train, _, err := dataset.LoadMNIST(dir)
		if err != nil {
			twoNN.err = err
			return
		}
		part, err := dataset.IID(train.N, 100, 1)
		if err != nil {
			twoNN.err = err
			return
		}
		m, err := nn.NewMLP(784, 200, 200, 10)
		if err != nil {
			twoNN.err = err
			return
		}
		global := make([]float32, m.NumParams())
		m.Init(global, 1)
		tr := nn.NewTrainer(m, 10)
		local := make([]float32, len(global))
		for r := range twoNNRounds {
			round := make([][]float32, twoNNClients)
			mean := make([]float32, len(global))
			for c := range round {
				copy(local, global)
				rng := rand.New(rand.NewPCG(uint64(r), uint64(c)))
				tr.Epochs(local, train.X, train.Y, part[c], 1, nn.SGD{LR: 0.1}, rng)
				d := make([]float32, len(global))
				for i := range d {
					d[i] = local[i] - global[i]
					mean[i] += d[i] / twoNNClients
				}
				round[c] = d
			}
			for i := range global {
				global[i] += mean[i]
			}
			twoNN.deltas = append(twoNN.deltas, round)
		}
	})
	if twoNN.err != nil {
		b.Skip("MNIST not available:", twoNN.err)
	}
	return twoNN.deltas
}

// BenchmarkWire2NN encodes the updates of five 2NN clients over twelve
// rounds, each client with its own Encoder, and reports the mean size of an
// update over the rounds after any warm-up (rounds 5..12), its ratio to
// dense float32, and the bits per kept coordinate.
func BenchmarkWire2NN(b *testing.B) {
	for _, s := range benchSpecs {
		b.Run("spec="+s, func(b *testing.B) {
			deltas := twoNNDeltas(b)
			n := len(deltas[0][0])
			var bytes, header, index, values, kept, updates int
			for b.Loop() {
				bytes, header, index, values, kept, updates = 0, 0, 0, 0, 0, 0
				encs := make([]*Encoder, twoNNClients)
				for c := range encs {
					encs[c] = mustEncoder(b, s, n)
				}
				var buf []byte
				for r, round := range deltas {
					for c, d := range round {
						var st Stats
						var err error
						buf, st, err = encs[c].Encode(buf[:0], d, r+1, uint64(r*10+c))
						if err != nil {
							b.Fatal(err)
						}
						if r+1 >= 5 {
							bytes += st.Bytes
							header += st.HeaderBytes
							index += st.IndexBytes
							values += st.ValueBytes + st.ScaleBytes
							kept += st.Kept
							updates++
						}
					}
				}
			}
			b.ReportMetric(float64(bytes)/float64(updates), "bytes/update")
			b.ReportMetric(float64(4*n*updates)/float64(bytes), "ratio")
			b.ReportMetric(float64(header)/float64(updates), "header-bytes")
			b.ReportMetric(8*float64(bytes)/float64(kept), "bits/kept")
			b.ReportMetric(8*float64(index)/float64(kept), "index-bits/kept")
			b.ReportMetric(8*float64(values)/float64(kept), "value-bits/kept")
		})
	}
}
