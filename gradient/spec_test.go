package gradient

import (
	"errors"
	"math"
	"strings"
	"testing"
)

func TestParseSpec(t *testing.T) {
	tests := []struct {
		in   string
		want Spec
	}{
		{"none", Spec{}},
		{" none ", Spec{}},
		{"bits=32", Spec{}},
		{"topk=0.01", Spec{Select: TopK, Fraction: 0.01}},
		{"randk=1", Spec{Select: RandK, Fraction: 1}},
		{"bits=16", Spec{Values: Float16}},
		{"bits=bf16", Spec{Values: BFloat16}},
		{"bits=4", Spec{Values: Uniform, Bits: 4}},
		{"bits=1", Spec{Values: Uniform, Bits: 1}},
		{"bits=sign", Spec{Values: Uniform, Bits: 1}},
		{"bits=ternary", Spec{Values: Ternary}},
		{"topk=0.001, bits=4 ,ef=on", Spec{Select: TopK, Fraction: 0.001, Values: Uniform, Bits: 4, EF: true}},
		{"bits=8,stochastic=on,bucket=512", Spec{Values: Uniform, Bits: 8, Stochastic: true, Bucket: 512}},
		{"ef=off,stochastic=off", Spec{}},
		{"topk=0.001,ef=on,momentum=0.9,warmup=4,clip=2.5,entropy=golomb",
			Spec{Select: TopK, Fraction: 0.001, EF: true, Momentum: 0.9, Warmup: 4, Clip: 2.5, Entropy: EntropyGolomb}},
		{"entropy=zstd", Spec{Entropy: EntropyZstd}},
		{"topk=0.01,ef=on,decay=0.5", Spec{Select: TopK, Fraction: 0.01, EF: true, Decay: 0.5}},
		{"ef=on,decay=1", Spec{EF: true, Decay: 1}},
		{"topk=0.01,warmup=2,warmstart=0.05", Spec{Select: TopK, Fraction: 0.01, Warmup: 2, WarmStart: 0.05}},
		{"topk=0.04,bits=ternary,ef=on,block=8", Spec{Select: TopK, Fraction: 0.04, Values: Ternary, EF: true, Block: 8}},
		{"dgc", Spec{Select: TopK, Fraction: 0.001, EF: true, Momentum: 0.9, Warmup: 4}},
		{"stc", Spec{Select: TopK, Fraction: 0.01, Values: Ternary, EF: true}},
		{"stcd", Spec{Select: TopK, Fraction: 0.01, Values: Ternary, EF: true, Decay: 0.7, Warmup: 8, WarmStart: 0.05}},
		{"stcg", Spec{Select: TopK, Fraction: 0.0065, Values: Ternary, EF: true, Warmup: 8, WarmStart: 0.05}},
		{"stcw", Spec{Select: TopK, Fraction: 0.01, Values: Ternary, EF: true, Warmup: 8, WarmStart: 0.05}},
		{"qsgd8", Spec{Values: Uniform, Bits: 8, Stochastic: true, Bucket: 512}},
		{"topk1", Spec{Select: TopK, Fraction: 0.01, Values: Uniform, Bits: 8, EF: true}},
	}
	for _, tt := range tests {
		got, err := ParseSpec(tt.in)
		if err != nil {
			t.Errorf("ParseSpec(%q): %v", tt.in, err)
			continue
		}
		if got != tt.want {
			t.Errorf("ParseSpec(%q) = %+v, want %+v", tt.in, got, tt.want)
		}
	}
}

func TestParseSpecErrors(t *testing.T) {
	tests := []struct {
		in, mention string // the error must mention this
	}{
		{"", "empty"},
		{"fast", "not key=value"},
		{"topk", "not key=value"},
		{"speed=3", `unknown key "speed"`},
		{"topk=0", "topk=0: want a fraction in (0, 1]"},
		{"topk=1.5", "topk=1.5"},
		{"topk=NaN", "topk=NaN"},
		{"randk=-0.1", "randk=-0.1"},
		{"topk=0.1,randk=0.1", "exclude"},
		{"topk=0.1,topk=0.2", "topk given twice"},
		{"bits=0", "bits=0: want 32, 16, bf16, 1..8, ternary, sign or lattice"},
		{"bits=9", "bits=9"},
		{"bits=12", "bits=12"},
		{"bits=fp8", "bits=fp8"},
		{"stochastic=yes", "stochastic=yes: want on or off"},
		{"ef=1", "ef=1: want on or off"},
		{"momentum=1", "momentum=1: want a factor in [0, 1)"},
		{"momentum=0.9", "needs ef=on"},
		{"decay=0.5", "decay=0.5: needs ef=on"},
		{"ef=on,decay=0", "decay=0: want a factor in (0, 1]"},
		{"ef=on,decay=1.5", "decay=1.5"},
		{"ef=on,decay=NaN", "decay=NaN"},
		{"topk=0.01,warmstart=0.1", "warmstart=0.1: needs warmup"},
		{"block=4", "block=4: needs topk"},
		{"randk=0.1,block=4", "block=4: needs topk"},
		{"topk=0.1,block=1", "block=1: want a number of coordinates in [2, 65536]"},
		{"topk=0.01,warmup=1,warmstart=0", "warmstart=0: want a density in (0, 1]"},
		{"topk=0.01,warmup=1,warmstart=2", "warmstart=2"},
		{"clip=0", "clip=0"},
		{"clip=-1", "clip=-1"},
		{"clip=Inf", "clip=Inf"},
		{"warmup=-1", "warmup=-1"},
		{"warmup=3", "warmup=3: needs topk or randk"},
		{"entropy=lz4", "entropy=lz4: want auto, none, golomb, huffman, zstd"},
		{"entropy=golomb", "entropy=golomb"},
		{"randk=0.1,entropy=golomb", "needs topk"},
		{"topk=0.1,entropy=huffman", "entropy=huffman"},
		{"bucket=64", "bucket=64: needs bits=1..8"},
		{"bits=4,bucket=-1", "bucket=-1"},
		{"bits=16,stochastic=on", "stochastic=on: needs bits=1..8"},
	}
	for _, tt := range tests {
		_, err := ParseSpec(tt.in)
		if err == nil {
			t.Errorf("ParseSpec(%q) succeeded", tt.in)
			continue
		}
		if !errors.Is(err, ErrSpec) {
			t.Errorf("ParseSpec(%q): %v does not wrap ErrSpec", tt.in, err)
		}
		if !strings.Contains(err.Error(), tt.mention) {
			t.Errorf("ParseSpec(%q): %q does not mention %q", tt.in, err, tt.mention)
		}
	}
}

// TestSpecStringRoundTrip checks ParseSpec(s.String()) == s for the test
// specs and every preset, and that the canonical form is a fixed point.
func TestSpecStringRoundTrip(t *testing.T) {
	specs := append([]string(nil), testSpecs...)
	specs = append(specs, PresetNames()...)
	specs = append(specs, "topk=0.123456789012345", "randk=1e-05,bits=bf16", "clip=1e-300", "bits=sign,ef=on,bucket=7")
	for _, s := range specs {
		sp := mustSpec(t, s)
		c := sp.String()
		back, err := ParseSpec(c)
		if err != nil {
			t.Errorf("%q -> %q: %v", s, c, err)
			continue
		}
		if back != sp {
			t.Errorf("%q -> %q -> %+v, want %+v", s, c, back, sp)
		}
		if back.String() != c {
			t.Errorf("%q: canonical form %q is not a fixed point: %q", s, c, back.String())
		}
	}
	if got := (Spec{}).String(); got != "none" {
		t.Errorf("zero Spec: %q", got)
	}
	if got := mustSpec(t, "dgc").String(); got != "topk=0.001,ef=on,momentum=0.9,warmup=4" {
		t.Errorf("dgc: %q", got)
	}
}

func TestSpecValidate(t *testing.T) {
	bad := []Spec{
		{Select: TopK},
		{Fraction: 0.5},
		{Select: 7, Fraction: 0.5},
		{Values: Uniform},
		{Values: Float16, Bits: 4},
		{Values: 9},
		{Momentum: 0.5},
		{Momentum: math.NaN(), EF: true},
		{Clip: math.Inf(1)},
		{Entropy: 9},
		{Bucket: 3},
	}
	for _, sp := range bad {
		if err := sp.Validate(); !errors.Is(err, ErrSpec) {
			t.Errorf("%+v: Validate = %v, want ErrSpec", sp, err)
		}
		if _, err := NewEncoder(sp, 10); !errors.Is(err, ErrSpec) {
			t.Errorf("%+v: NewEncoder = %v, want ErrSpec", sp, err)
		}
	}
}

func TestDensityWarmup(t *testing.T) {
	sp := mustSpec(t, "dgc")
	want := []float64{0.25, 0.25 * math.Pow(0.004, 0.25), 0.25 * math.Pow(0.004, 0.5), 0.25 * math.Pow(0.004, 0.75), 0.001, 0.001}
	for i, w := range want {
		round := i + 1
		if got := sp.Density(round); math.Abs(got-w) > 1e-12 {
			t.Errorf("round %d: density %g, want %g", round, got, w)
		}
	}
	// DGC's schedule: 25 %, 6.25 %, 1.5625 %, 0.390625 %, 0.1 %, within 2 %.
	for i, w := range []float64{0.25, 0.0625, 0.015625, 0.00390625, 0.001} {
		if got := sp.Density(i + 1); math.Abs(got/w-1) > 0.02 {
			t.Errorf("round %d: density %g, DGC has %g", i+1, got, w)
		}
	}
	if got := sp.Density(0); got != 0.25 {
		t.Errorf("round 0: %g", got)
	}
	if got := mustSpec(t, "topk=0.5,warmup=3").Density(1); got != 0.5 {
		t.Errorf("fraction above the warm-up start: %g", got)
	}
	// warmstart moves the first round's density: 4 %, 2 %, then 1 %.
	ws := mustSpec(t, "topk=0.01,warmup=2,warmstart=0.04")
	for i, w := range []float64{0.04, 0.02, 0.01, 0.01} {
		if got := ws.Density(i + 1); math.Abs(got-w) > 1e-12 {
			t.Errorf("warmstart=0.04: round %d: density %g, want %g", i+1, got, w)
		}
	}
	if got := mustSpec(t, "topk=0.05,warmup=2,warmstart=0.04").Density(1); got != 0.05 {
		t.Errorf("fraction above warmstart: %g", got)
	}
	if got := mustSpec(t, "topk=0.01").Kept(199210, 1); got != 1992 {
		t.Errorf("Kept: %d", got)
	}
	if got := mustSpec(t, "topk=0.000001").Kept(1000, 1); got != 1 {
		t.Errorf("Kept at least 1: %d", got)
	}
}

func FuzzParseSpec(f *testing.F) {
	for _, s := range testSpecs {
		f.Add(s)
	}
	f.Add("topk=1e-3,bits=8")
	f.Fuzz(func(t *testing.T, s string) {
		sp, err := ParseSpec(s)
		if err != nil {
			if !errors.Is(err, ErrSpec) {
				t.Fatalf("%q: %v does not wrap ErrSpec", s, err)
			}
			return
		}
		if err := sp.Validate(); err != nil {
			t.Fatalf("%q parsed to an invalid spec: %v", s, err)
		}
		back, err := ParseSpec(sp.String())
		if err != nil || back != sp {
			t.Fatalf("%q -> %q -> %+v, %v", s, sp.String(), back, err)
		}
	})
}
