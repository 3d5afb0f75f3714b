package gradient

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
)

// Selection is which coordinates an update sends.
type Selection uint8

const (
	// Dense sends every coordinate.
	Dense Selection = iota
	// TopK sends the fraction of coordinates of largest magnitude (exact
	// selection, compress.TopK).
	TopK
	// RandK sends a uniformly random fraction of the coordinates, drawn
	// from the seed passed to Encode (compress.RandK). Only the seed goes on
	// the wire, not the indices.
	RandK
)

// String returns "dense", "topk" or "randk".
func (s Selection) String() string {
	switch s {
	case Dense:
		return "dense"
	case TopK:
		return "topk"
	case RandK:
		return "randk"
	}
	return fmt.Sprintf("Selection(%d)", uint8(s))
}

// Values is how the kept values are represented.
type Values uint8

const (
	// Float32 sends the values as they are (bits=32).
	Float32 Values = iota
	// Float16 sends IEEE half-precision values (bits=16).
	Float16
	// BFloat16 sends bfloat16 values (bits=bf16).
	BFloat16
	// Uniform sends Spec.Bits-bit codes of a uniform quantizer with a
	// float32 scale per bucket (bits=1..8; bits=sign is 1 bit).
	Uniform
	// Ternary sends codes in {-1, 0, +1} and one scale per bucket, as in
	// Sparse Ternary Compression (bits=ternary).
	Ternary
	// Lattice is a download codec only (bits=lattice): the model clients
	// hold lives on a lattice, initial model + step·counts with a step per
	// tensor, and each version changes the counts of the top-k coordinates
	// by at most Levels steps. Any client, however far behind, is sent one
	// message: the change of counts since the version it holds. See
	// ServerEncoder.
	Lattice
)

// String returns the value of the bits key for v (for Uniform, "uniform").
func (v Values) String() string {
	switch v {
	case Float32:
		return "32"
	case Float16:
		return "16"
	case BFloat16:
		return "bf16"
	case Uniform:
		return "uniform"
	case Ternary:
		return "ternary"
	case Lattice:
		return "lattice"
	}
	return fmt.Sprintf("Values(%d)", uint8(v))
}

// Entropy is the entropy-coding policy for the sections of an update.
type Entropy uint8

const (
	// EntropyAuto measures each section of each update and keeps the
	// smallest coding: run-coded, gap-coded, Golomb-Rice or fixed-width
	// indices, Huffman or bit-packed codes.
	EntropyAuto Entropy = iota
	// EntropyNone writes fixed-width indices and bit-packed codes.
	EntropyNone
	// EntropyGolomb writes Golomb-Rice coded index gaps and bit-packed
	// codes.
	EntropyGolomb
	// EntropyHuffman writes Golomb-Rice coded index gaps and Huffman coded
	// codes, even where packing would be smaller.
	EntropyHuffman
	// EntropyZstd compresses the fixed-width form of each section with
	// zstd (a baseline: see the figures in the package documentation).
	EntropyZstd
	// EntropyGaps writes gap-coded indices (compress.AppendGapIndices:
	// Elias-gamma buckets, Huffman coded) and, like auto, Huffman or
	// bit-packed codes, whichever is smaller.
	EntropyGaps
	// EntropyRuns writes run-coded indices (compress.AppendRunIndices:
	// the gap code over runs of adjacent indices, for block selection) and
	// codes as auto does.
	EntropyRuns
)

var entropyNames = [...]string{"auto", "none", "golomb", "huffman", "zstd", "gaps", "runs"}

// String returns the value of the entropy key for e.
func (e Entropy) String() string {
	if int(e) < len(entropyNames) {
		return entropyNames[e]
	}
	return fmt.Sprintf("Entropy(%d)", uint8(e))
}

// Spec describes a codec: what an Encoder selects, how it quantizes and
// codes, and what client state it keeps. The zero Spec is "none": dense
// float32 values, no state. Build one with ParseSpec; Spec values compare
// with ==.
type Spec struct {
	// Select and Fraction: which coordinates are sent, and for TopK and
	// RandK the fraction of them, in (0, 1].
	Select   Selection
	Fraction float64
	// Values and Bits: how values are sent. Bits is 1..8 for Uniform and
	// 0 otherwise.
	Values Values
	Bits   int
	// Stochastic selects the unbiased stochastic quantizers (QSGD,
	// TernGrad) over the deterministic ones.
	Stochastic bool
	// EF keeps an error-feedback residual: what an update does not send
	// (including its quantization error) is added to the next one.
	EF bool
	// Momentum, in [0, 1), is the factor of DGC's momentum correction
	// with factor masking; 0 is off. It needs EF.
	Momentum float64
	// Decay, in (0, 1], multiplies the error-feedback residual each time
	// the encoder is used, before the new delta is added, so that what a
	// client held back long ago fades instead of arriving stale; 0 is off
	// (the same as 1). It needs EF.
	Decay float64
	// Clip, if positive, scales each delta down to at most this L2 norm
	// before anything else.
	Clip float64
	// Warmup is the number of rounds of DGC's density warm-up (0: none).
	Warmup int
	// WarmStart is the density of the first warm-up round, in (0, 1]; 0
	// means DGC's 25 %. Only with Warmup.
	WarmStart float64
	// Entropy is the entropy-coding policy.
	Entropy Entropy
	// Bucket is the number of values per quantization scale (0: one scale
	// per update). Only for Uniform and Ternary.
	Bucket int
	// Block, if at least 2, makes top-k select whole blocks of Block
	// consecutive coordinates, those of largest L1 norm, instead of single
	// coordinates (0: single coordinates). Only with TopK.
	Block int
	// Step is, for Lattice, the lattice step of each tensor as a multiple
	// of the mean magnitude of the tensor's top-k change in the first
	// version that changes the model (DefaultLatticeStep if not given).
	Step float64
	// Levels is, for Lattice, the most steps a coordinate moves in one
	// version (DefaultLatticeLevels if not given).
	Levels int
	// Refine is, for Lattice, the fraction of the top-k budget below
	// which the lattice is refined: when fewer than Refine·k coordinates
	// are half a step or more from the global model, every step halves
	// (0: never).
	Refine float64
	// Seeded is, for Lattice, the seeded-support mode (support=seeded):
	// a version published with its support (ServerEncoder.PublishSupport)
	// moves the counts of exactly that support to the global model's
	// nearest counts, and a sync across such versions names the supports'
	// keys instead of indices (see "Seeded syncs" in the package
	// documentation of the lattice codec).
	Seeded bool
}

// Lattice defaults, chosen on the iid 2NN with seeds 1–3 (see
// docs/codecs.md).
const (
	DefaultLatticeStep   = 2
	DefaultLatticeLevels = 7
)

// Presets are the named specs that ParseSpec accepts, with the spec each
// stands for:
//
//	none    dense float32, what FedAvg sends
//	dgc     topk=0.001,ef=on,momentum=0.9,warmup=4 (Lin et al. 2018: 0.1 %
//	        density, float32 values, momentum correction with factor
//	        masking, density warm-up 25 % -> 0.1 % over four rounds)
//	stc     topk=0.01,bits=ternary,ef=on (Sattler et al. 2019: 1 % density,
//	        ternary values with the mean magnitude as scale)
//	stcm    stc with DGC's momentum correction and warm-up
//	stcd    topk=0.01,bits=ternary,ef=on,decay=0.7,warmup=8,warmstart=0.05:
//	        stc whose residual fades (decay) and whose density falls from
//	        5 % to 1 % over the first eight rounds; with the server strategy
//	        fedavgm,lr=3,momentum=0 it reaches 96 % on the iid 2NN with
//	        283× fewer upload bytes than dense FedAvg (292× on a second
//	        seed), see README, "accuracy per byte"
//	stcg    topk=0.0065,bits=ternary,ef=on,warmup=8,warmstart=0.05: stc at
//	        0.65 % density with the gentle warm-up and no decay; with
//	        fedavgm,lr=3,momentum=0 it meets the three goals of issue 3 on
//	        seed 1 (iid 96 %: 305×; shards 95 %: 282×; 97.63 % at round
//	        200), see README, "accuracy per byte"
//	stcw    topk=0.01,bits=ternary,ef=on,warmup=8,warmstart=0.05: stc at
//	        1 % density with stcg's warm-up; the default upload codec:
//	        with fedavgm,lr=3,momentum=0,anneal=200 and lattice downloads
//	        it reaches 96 % on the iid 2NN with 150× fewer bytes in both
//	        directions than dense FedAvg and ends within 0.6 points of it
//	        at round 200 (docs/benchmarks.md, "Total bytes to accuracy")
//	qsgd8   bits=8,stochastic=on,bucket=512 (Alistarh et al. 2017: dense,
//	        unbiased 8-bit, a scale per 512 values)
//	qsgd4   bits=4,stochastic=on,bucket=512
//	topk1   topk=0.01,bits=8,ef=on (the reference point of issue 3)
//	topk4   topk=0.01,bits=4,ef=on
//	efsign  bits=sign,ef=on (Karimireddy et al. 2019: dense scaled sign
//	        with error feedback)
//	terngrad bits=ternary,stochastic=on (Wen et al. 2017: dense unbiased
//	        ternary)
//	lattice topk=0.02,bits=lattice,step=2,levels=7: the download codec of
//	        compact syncs (see ServerEncoder); not an upload codec
//	seeded  topk=0.02,bits=lattice,step=0.5,levels=7,support=seeded: the
//	        lattice codec for a model that changes on random supports
//	        drawn from seeds (secure aggregation's): syncs list the
//	        supports' keys, not indices (see ServerEncoder.PublishSupport)
var Presets = map[string]string{
	"none":     "none",
	"dgc":      "topk=0.001,ef=on,momentum=0.9,warmup=4",
	"stc":      "topk=0.01,bits=ternary,ef=on",
	"stcm":     "topk=0.01,bits=ternary,ef=on,momentum=0.9,warmup=4",
	"stcd":     "topk=0.01,bits=ternary,ef=on,decay=0.7,warmup=8,warmstart=0.05",
	"stcg":     "topk=0.0065,bits=ternary,ef=on,warmup=8,warmstart=0.05",
	"stcw":     "topk=0.01,bits=ternary,ef=on,warmup=8,warmstart=0.05",
	"qsgd8":    "bits=8,stochastic=on,bucket=512",
	"qsgd4":    "bits=4,stochastic=on,bucket=512",
	"topk1":    "topk=0.01,bits=8,ef=on",
	"topk4":    "topk=0.01,bits=4,ef=on",
	"efsign":   "bits=sign,ef=on",
	"terngrad": "bits=ternary,stochastic=on",
	"lattice":  "topk=0.02,bits=lattice,step=2,levels=7",
	"seeded":   "topk=0.02,bits=lattice,step=0.5,levels=7,support=seeded",
}

// PresetNames returns the names of the presets, sorted.
func PresetNames() []string {
	names := make([]string, 0, len(Presets))
	for n := range Presets {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// ParseSpec parses a codec spec: "none", the name of a preset (see
// Presets), or a comma-separated list of key=value items:
//
//	topk=F       send the fraction F in (0, 1] of largest magnitude
//	randk=F      send a random fraction F in (0, 1] (only the seed is sent)
//	bits=B       32 (default), 16, bf16, 1..8, ternary, sign (= 1) or
//	             lattice (downloads only, with topk; see Lattice)
//	step=F       lattice: the step as a multiple of the first change's
//	             mean magnitude per tensor, F in (0, 1e6] (default 2)
//	levels=L     lattice: the most steps a coordinate moves per version,
//	             L in [1, 2^20] (default 7)
//	refine=F     lattice: halve every step when fewer than F·k
//	             coordinates are half a step from the global model, F in
//	             [0, 1] (default 0: never)
//	support=S    lattice: explicit (default) or seeded (versions
//	             published with a support drawn from a key; syncs name
//	             the keys, see ServerEncoder.PublishSupport)
//	stochastic=on|off  unbiased stochastic rounding (bits 1..8, ternary)
//	ef=on|off    error feedback: keep what was not sent in a residual
//	momentum=M   DGC momentum correction with factor masking, M in [0, 1);
//	             needs ef=on
//	decay=D      multiply the residual by D in (0, 1] at every update,
//	             before adding the new delta (stale residuals fade);
//	             needs ef=on
//	clip=C       scale each delta to L2 norm at most C > 0
//	warmup=R     DGC density warm-up over R rounds (with topk or randk)
//	warmstart=F  density of the first warm-up round, F in (0, 1]
//	             (default 0.25, DGC's); needs warmup
//	entropy=E    auto (default), none, golomb, huffman, zstd, gaps or runs
//	bucket=N     values per quantization scale (0: one scale; bits 1..8,
//	             ternary or sign only)
//	block=B      with topk: select blocks of B >= 2 consecutive
//	             coordinates by L1 norm, the fraction F of coordinates in
//	             all; runs of adjacent indices cost little with the run
//	             code that entropy=auto picks for them
//
// Each key may appear once. The error wraps ErrSpec and names the key and
// its allowed values.
func ParseSpec(s string) (Spec, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return Spec{}, fmt.Errorf("%w: empty spec (want none, a preset: %s, or key=value,...)",
			ErrSpec, strings.Join(PresetNames(), ", "))
	}
	if p, ok := Presets[s]; ok {
		s = p
	}
	if s == "none" {
		return Spec{}, nil
	}
	var sp Spec
	seen := map[string]bool{}
	for item := range strings.SplitSeq(s, ",") {
		item = strings.TrimSpace(item)
		key, val, ok := strings.Cut(item, "=")
		key, val = strings.TrimSpace(key), strings.TrimSpace(val)
		if !ok || key == "" {
			return Spec{}, fmt.Errorf("%w: %q: item %q is not key=value (keys: %s; or none or a preset: %s)",
				ErrSpec, s, item, strings.Join(specKeys, ", "), strings.Join(PresetNames(), ", "))
		}
		if seen[key] {
			return Spec{}, fmt.Errorf("%w: %q: key %s given twice", ErrSpec, s, key)
		}
		seen[key] = true
		if err := sp.set(key, val); err != nil {
			return Spec{}, fmt.Errorf("%w: %q: %s", ErrSpec, s, err)
		}
	}
	if seen["topk"] && seen["randk"] {
		return Spec{}, fmt.Errorf("%w: %q: topk and randk exclude each other", ErrSpec, s)
	}
	if sp.Values == Lattice {
		if sp.Step == 0 {
			sp.Step = DefaultLatticeStep
		}
		if sp.Levels == 0 {
			sp.Levels = DefaultLatticeLevels
		}
	}
	if err := sp.check(); err != nil {
		return Spec{}, fmt.Errorf("%w: %q: %s", ErrSpec, s, err)
	}
	return sp, nil
}

var specKeys = []string{"topk", "randk", "bits", "stochastic", "ef", "momentum", "decay", "clip", "warmup", "warmstart", "entropy", "bucket", "block", "step", "levels", "refine", "support"}

func (sp *Spec) set(key, val string) error {
	switch key {
	case "topk", "randk":
		f, err := strconv.ParseFloat(val, 64)
		if err != nil || !(f > 0 && f <= 1) {
			return fmt.Errorf("%s=%s: want a fraction in (0, 1], such as 0.01", key, val)
		}
		sp.Select, sp.Fraction = TopK, f
		if key == "randk" {
			sp.Select = RandK
		}
	case "bits":
		switch val {
		case "32":
			sp.Values, sp.Bits = Float32, 0
		case "16":
			sp.Values, sp.Bits = Float16, 0
		case "bf16":
			sp.Values, sp.Bits = BFloat16, 0
		case "ternary":
			sp.Values, sp.Bits = Ternary, 0
		case "lattice":
			sp.Values, sp.Bits = Lattice, 0
		case "sign":
			sp.Values, sp.Bits = Uniform, 1
		default:
			b, err := strconv.Atoi(val)
			if err != nil || b < 1 || b > 8 {
				return fmt.Errorf("bits=%s: want 32, 16, bf16, 1..8, ternary, sign or lattice", val)
			}
			sp.Values, sp.Bits = Uniform, b
		}
	case "stochastic", "ef":
		var on bool
		switch val {
		case "on":
			on = true
		case "off":
		default:
			return fmt.Errorf("%s=%s: want on or off", key, val)
		}
		if key == "ef" {
			sp.EF = on
		} else {
			sp.Stochastic = on
		}
	case "momentum":
		m, err := strconv.ParseFloat(val, 64)
		if err != nil || !(m >= 0 && m < 1) {
			return fmt.Errorf("momentum=%s: want a factor in [0, 1), such as 0.9", val)
		}
		sp.Momentum = m
	case "decay":
		d, err := strconv.ParseFloat(val, 64)
		if err != nil || !(d > 0 && d <= 1) {
			return fmt.Errorf("decay=%s: want a factor in (0, 1], such as 0.9", val)
		}
		sp.Decay = d
	case "clip":
		c, err := strconv.ParseFloat(val, 64)
		if err != nil || !(c > 0) || math.IsInf(c, 0) {
			return fmt.Errorf("clip=%s: want a finite L2 norm > 0", val)
		}
		sp.Clip = c
	case "warmup":
		r, err := strconv.Atoi(val)
		if err != nil || r < 0 || r > 1<<20 {
			return fmt.Errorf("warmup=%s: want a number of rounds >= 0", val)
		}
		sp.Warmup = r
	case "warmstart":
		f, err := strconv.ParseFloat(val, 64)
		if err != nil || !(f > 0 && f <= 1) {
			return fmt.Errorf("warmstart=%s: want a density in (0, 1], such as 0.05", val)
		}
		sp.WarmStart = f
	case "entropy":
		i := slices.Index(entropyNames[:], val)
		if i < 0 {
			return fmt.Errorf("entropy=%s: want %s", val, strings.Join(entropyNames[:], ", "))
		}
		sp.Entropy = Entropy(i)
	case "bucket":
		n, err := strconv.Atoi(val)
		if err != nil || n < 0 || n > math.MaxInt32 {
			return fmt.Errorf("bucket=%s: want a number of values >= 0 (0: one scale)", val)
		}
		sp.Bucket = n
	case "step":
		f, err := strconv.ParseFloat(val, 64)
		if err != nil || !(f > 0 && f <= 1e6) {
			return fmt.Errorf("step=%s: want a multiple in (0, 1e6], such as 2", val)
		}
		sp.Step = f
	case "refine":
		f, err := strconv.ParseFloat(val, 64)
		if err != nil || !(f >= 0 && f <= 1) {
			return fmt.Errorf("refine=%s: want a fraction in [0, 1], such as 0.25", val)
		}
		sp.Refine = f
	case "support":
		switch val {
		case "explicit":
			sp.Seeded = false
		case "seeded":
			sp.Seeded = true
		default:
			return fmt.Errorf("support=%s: want explicit or seeded (bits=lattice only)", val)
		}
	case "levels":
		n, err := strconv.Atoi(val)
		if err != nil || n < 1 || n > 1<<20 {
			return fmt.Errorf("levels=%s: want a number of steps in [1, 1048576], such as 7", val)
		}
		sp.Levels = n
	case "block":
		n, err := strconv.Atoi(val)
		if err != nil || n < 2 || n > 1<<16 {
			return fmt.Errorf("block=%s: want a number of coordinates in [2, 65536]", val)
		}
		sp.Block = n
	default:
		return fmt.Errorf("unknown key %q (keys: %s)", key, strings.Join(specKeys, ", "))
	}
	return nil
}

// check reports combinations that make no sense, naming the key.
func (sp Spec) check() error {
	switch sp.Select {
	case Dense:
		if sp.Fraction != 0 {
			return fmt.Errorf("a fraction (%g) without topk or randk", sp.Fraction)
		}
	case TopK, RandK:
		if !(sp.Fraction > 0 && sp.Fraction <= 1) {
			return fmt.Errorf("%s=%g: want a fraction in (0, 1]", sp.Select, sp.Fraction)
		}
	default:
		return fmt.Errorf("unknown selection %d", sp.Select)
	}
	quantized := sp.Values == Uniform || sp.Values == Ternary
	switch sp.Values {
	case Float32, Float16, BFloat16, Ternary, Lattice:
		if sp.Bits != 0 {
			return fmt.Errorf("a code width (%d bits) with bits=%s", sp.Bits, sp.Values)
		}
	case Uniform:
		if sp.Bits < 1 || sp.Bits > 8 {
			return fmt.Errorf("bits=%d: want 32, 16, bf16, 1..8, ternary or sign", sp.Bits)
		}
	default:
		return fmt.Errorf("unknown values %d", sp.Values)
	}
	if sp.Stochastic && !quantized {
		return fmt.Errorf("stochastic=on: needs bits=1..8, sign or ternary, not bits=%s", sp.Values)
	}
	if !(sp.Momentum >= 0 && sp.Momentum < 1) {
		return fmt.Errorf("momentum=%g: want a factor in [0, 1)", sp.Momentum)
	}
	if sp.Momentum > 0 && !sp.EF {
		return fmt.Errorf("momentum=%g: needs ef=on (DGC accumulates the corrected momentum in the residual)", sp.Momentum)
	}
	if !(sp.Decay >= 0 && sp.Decay <= 1) {
		return fmt.Errorf("decay=%g: want a factor in (0, 1]", sp.Decay)
	}
	if sp.Decay > 0 && !sp.EF {
		return fmt.Errorf("decay=%g: needs ef=on (it decays the residual)", sp.Decay)
	}
	if sp.Clip < 0 || math.IsNaN(sp.Clip) || math.IsInf(sp.Clip, 0) {
		return fmt.Errorf("clip=%g: want a finite L2 norm > 0", sp.Clip)
	}
	if sp.Warmup < 0 || sp.Warmup > 1<<20 {
		return fmt.Errorf("warmup=%d: want a number of rounds >= 0", sp.Warmup)
	}
	if sp.Warmup > 0 && sp.Select == Dense {
		return fmt.Errorf("warmup=%d: needs topk or randk", sp.Warmup)
	}
	if !(sp.WarmStart >= 0 && sp.WarmStart <= 1) {
		return fmt.Errorf("warmstart=%g: want a density in (0, 1]", sp.WarmStart)
	}
	if sp.WarmStart > 0 && sp.Warmup == 0 {
		return fmt.Errorf("warmstart=%g: needs warmup", sp.WarmStart)
	}
	switch sp.Entropy {
	case EntropyAuto, EntropyNone, EntropyZstd:
	case EntropyGolomb, EntropyGaps, EntropyRuns:
		if sp.Select != TopK {
			return fmt.Errorf("entropy=%s: codes top-k indices, needs topk", sp.Entropy)
		}
	case EntropyHuffman:
		if !quantized {
			return fmt.Errorf("entropy=huffman: codes quantized values, needs bits=1..8, sign or ternary")
		}
	default:
		return fmt.Errorf("unknown entropy %d", sp.Entropy)
	}
	if sp.Bucket < 0 || sp.Bucket > math.MaxInt32 {
		return fmt.Errorf("bucket=%d: want a number of values >= 0", sp.Bucket)
	}
	if sp.Bucket > 0 && !quantized {
		return fmt.Errorf("bucket=%d: needs bits=1..8, sign or ternary, not bits=%s", sp.Bucket, sp.Values)
	}
	if sp.Block != 0 && (sp.Block < 2 || sp.Block > 1<<16) {
		return fmt.Errorf("block=%d: want a number of coordinates in [2, 65536]", sp.Block)
	}
	if sp.Block != 0 && sp.Select != TopK {
		return fmt.Errorf("block=%d: needs topk", sp.Block)
	}
	return sp.checkLattice()
}

// checkLattice checks the keys of bits=lattice: it needs topk, takes step
// and levels, and nothing that keeps client state or changes the coding.
func (sp Spec) checkLattice() error {
	if sp.Values != Lattice {
		if sp.Step != 0 || sp.Levels != 0 || sp.Refine != 0 {
			return fmt.Errorf("step, levels and refine: need bits=lattice")
		}
		if sp.Seeded {
			return fmt.Errorf("support=seeded: needs bits=lattice (a download codec)")
		}
		return nil
	}
	switch {
	case sp.Select != TopK:
		return fmt.Errorf("bits=lattice: needs topk")
	case !(sp.Step > 0 && sp.Step <= 1e6):
		return fmt.Errorf("step=%g: want a multiple in (0, 1e6]", sp.Step)
	case sp.Levels < 1 || sp.Levels > 1<<20:
		return fmt.Errorf("levels=%d: want a number of steps in [1, 1048576]", sp.Levels)
	case !(sp.Refine >= 0 && sp.Refine <= 1):
		return fmt.Errorf("refine=%g: want a fraction in [0, 1]", sp.Refine)
	case sp.Seeded && sp.Refine != 0:
		return fmt.Errorf("support=seeded with refine=%g: a seeded lattice keeps its steps (a halving would move every coordinate off its support)", sp.Refine)
	case sp.EF || sp.Stochastic || sp.Clip != 0 || sp.Warmup != 0 || sp.Bucket != 0 || sp.Block != 0 || sp.Entropy != EntropyAuto:
		return fmt.Errorf("bits=lattice takes only topk, step and levels (the server residual is exact, the coding fixed)")
	}
	return nil
}

// Validate reports whether sp is a spec that ParseSpec could return. The
// error wraps ErrSpec.
func (sp Spec) Validate() error {
	if err := sp.check(); err != nil {
		return fmt.Errorf("%w: %s", ErrSpec, err)
	}
	return nil
}

// Lossless reports whether sp sends every coordinate exactly.
func (sp Spec) Lossless() bool {
	return sp.Select == Dense && sp.Values == Float32
}

// String returns the canonical form of sp: "none" for the zero Spec,
// otherwise the keys that differ from their defaults, in the order topk
// or randk, bits, stochastic, ef, momentum, decay, clip, warmup,
// warmstart, entropy, bucket, block.
// ParseSpec(sp.String()) == sp for every valid sp.
func (sp Spec) String() string {
	var b []string
	f := func(x float64) string { return strconv.FormatFloat(x, 'g', -1, 64) }
	switch sp.Select {
	case TopK, RandK:
		b = append(b, sp.Select.String()+"="+f(sp.Fraction))
	}
	switch sp.Values {
	case Float32:
	case Uniform:
		if sp.Bits == 1 {
			b = append(b, "bits=sign")
		} else {
			b = append(b, "bits="+strconv.Itoa(sp.Bits))
		}
	default:
		b = append(b, "bits="+sp.Values.String())
	}
	if sp.Stochastic {
		b = append(b, "stochastic=on")
	}
	if sp.EF {
		b = append(b, "ef=on")
	}
	if sp.Momentum != 0 {
		b = append(b, "momentum="+f(sp.Momentum))
	}
	if sp.Decay != 0 {
		b = append(b, "decay="+f(sp.Decay))
	}
	if sp.Clip != 0 {
		b = append(b, "clip="+f(sp.Clip))
	}
	if sp.Warmup != 0 {
		b = append(b, "warmup="+strconv.Itoa(sp.Warmup))
	}
	if sp.WarmStart != 0 {
		b = append(b, "warmstart="+f(sp.WarmStart))
	}
	if sp.Entropy != EntropyAuto {
		b = append(b, "entropy="+sp.Entropy.String())
	}
	if sp.Bucket != 0 {
		b = append(b, "bucket="+strconv.Itoa(sp.Bucket))
	}
	if sp.Block != 0 {
		b = append(b, "block="+strconv.Itoa(sp.Block))
	}
	if sp.Values == Lattice {
		b = append(b, "step="+f(sp.Step), "levels="+strconv.Itoa(sp.Levels))
		if sp.Refine != 0 {
			b = append(b, "refine="+f(sp.Refine))
		}
		if sp.Seeded {
			b = append(b, "support=seeded")
		}
	}
	if len(b) == 0 {
		return "none"
	}
	return strings.Join(b, ",")
}

// Density returns the fraction of coordinates sent in the given round
// (rounds count from 1, as in package round): Fraction, or 1 for Dense.
// During DGC's warm-up, rounds 1..Warmup, the density starts at s =
// WarmStart (25 % by default) and falls exponentially to Fraction, reached
// at round Warmup+1: s * (Fraction/s)^((round-1)/Warmup). With Fraction
// 0.001 and Warmup 4 that is 25 %, 6.3 %, 1.6 %, 0.4 %, then 0.1 %, DGC's
// schedule. A Fraction at or above s has no warm-up. Rounds below 1 count
// as round 1.
func (sp Spec) Density(round int) float64 {
	if sp.Select == Dense {
		return 1
	}
	start := warmupStart
	if sp.WarmStart > 0 {
		start = sp.WarmStart
	}
	step := max(round-1, 0)
	if sp.Warmup == 0 || step >= sp.Warmup || sp.Fraction >= start {
		return sp.Fraction
	}
	return start * math.Pow(sp.Fraction/start, float64(step)/float64(sp.Warmup))
}

// warmupStart is the default density of the first warm-up round, as in
// DGC.
const warmupStart = 0.25

// Kept returns the number of coordinates of an n-vector sent in the given
// round: round(Density(round) * n), at least 1 if n > 0 and at most n.
// With Block, it is Blocks(n, round) whole blocks, Block coordinates each,
// at most n: the encoder sends fewer when the last block of the vector,
// shorter if Block does not divide n, is among them.
func (sp Spec) Kept(n, round int) int {
	if n <= 0 {
		return 0
	}
	if sp.Select == Dense {
		return n
	}
	if sp.Block > 1 {
		return min(sp.Blocks(n, round)*sp.Block, n)
	}
	k := int(math.Round(sp.Density(round) * float64(n)))
	return min(max(k, 1), n)
}

// Blocks returns the number of blocks a block top-k selects in the given
// round: round(Density(round) * n / Block), at least 1 and at most the
// ceil(n/Block) blocks of the vector; 0 without Block or for n <= 0.
func (sp Spec) Blocks(n, round int) int {
	if sp.Block < 2 || sp.Select != TopK || n <= 0 {
		return 0
	}
	nb := (n + sp.Block - 1) / sp.Block
	b := int(math.Round(sp.Density(round) * float64(n) / float64(sp.Block)))
	return min(max(b, 1), nb)
}
