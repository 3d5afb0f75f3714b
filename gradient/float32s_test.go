package gradient

import (
	"errors"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
)

// TestDecodeFloat32s: what AppendFloat32s writes reads back bit for bit,
// into dst's memory when it has the capacity; a length that is not a
// multiple of 4 and every NaN or infinity are refused, naming the index.
func TestDecodeFloat32s(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	x := make([]float32, 1000)
	for i := range x {
		x[i] = float32(rng.NormFloat64()) * 1e3
	}
	x[3], x[4] = float32(math.Copysign(0, -1)), math.MaxFloat32
	x[5] = math.Float32frombits(1) // smallest subnormal
	b := AppendFloat32s(nil, x)
	dst := make([]float32, 0, len(x))
	got, err := DecodeFloat32s(dst, b)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(x) || &got[0] != &dst[:1][0] {
		t.Fatalf("decoded %d values, into dst's memory: %v", len(got), &got[0] == &dst[:1][0])
	}
	for i := range x {
		if math.Float32bits(got[i]) != math.Float32bits(x[i]) {
			t.Fatalf("value %d: %v, want %v", i, got[i], x[i])
		}
	}
	if got, err := DecodeFloat32s(nil, b[:8]); err != nil || len(got) != 2 {
		t.Fatalf("nil dst: %d values, %v", len(got), err)
	}
	if _, err := DecodeFloat32s(dst, b[:7]); !errors.Is(err, ErrLength) {
		t.Fatalf("7 bytes: %v, want ErrLength", err)
	}
	for _, bits := range []uint32{0x7f800000, 0xff800000, 0x7fc00000, 0xffffffff, 0x7f800001} {
		bad := AppendFloat32s(nil, x)
		bad[4*700], bad[4*700+1], bad[4*700+2], bad[4*700+3] = byte(bits), byte(bits>>8), byte(bits>>16), byte(bits>>24)
		_, err := DecodeFloat32s(dst, bad)
		if !errors.Is(err, ErrNonFinite) {
			t.Fatalf("%#08x: %v, want ErrNonFinite", bits, err)
		}
		if want := "value 700 is"; !strings.Contains(err.Error(), want) {
			t.Fatalf("%#08x: %q does not name the index (%q)", bits, err, want)
		}
	}
}

// TestDecodeFloat32sNoAlloc: decoding into a dst with the capacity
// allocates nothing; into a short one, once, whatever the length.
func TestDecodeFloat32sNoAlloc(t *testing.T) {
	if testing.CoverMode() != "" || raceEnabled {
		t.Skip("coverage and race instrumentation allocate")
	}
	b := AppendFloat32s(nil, genDelta(make([]float32, 50000), 1, 0.01))
	dst := make([]float32, 50000)
	if a := testing.AllocsPerRun(10, func() { dst, _ = DecodeFloat32s(dst, b) }); a != 0 {
		t.Errorf("%v allocations per DecodeFloat32s with capacity", a)
	}
	if a := testing.AllocsPerRun(10, func() { _, _ = DecodeFloat32s(nil, b) }); a != 1 {
		t.Errorf("%v allocations per DecodeFloat32s into nil, want 1", a)
	}
}

// FuzzDecodeFloat32s: arbitrary bytes decode without panicking; what
// decodes is finite and encodes back to the same bytes, and what is
// refused is refused for its length or for a non-finite value that the
// bytes hold.
func FuzzDecodeFloat32s(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{1, 2, 3})
	f.Add(AppendFloat32s(nil, []float32{1, -2, 0.5}))
	f.Add(AppendFloat32s(nil, []float32{1, float32(math.Inf(1))}))
	f.Add(AppendFloat32s(nil, []float32{float32(math.NaN())}))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := DecodeFloat32s(make([]float32, 0, 3), b)
		switch {
		case len(b)%4 != 0:
			if !errors.Is(err, ErrLength) {
				t.Fatalf("%d bytes: %v", len(b), err)
			}
			return
		case err != nil:
			if !errors.Is(err, ErrNonFinite) {
				t.Fatalf("refused with %v", err)
			}
			finite := true
			for i := 0; i < len(b); i += 4 {
				u := uint32(b[i]) | uint32(b[i+1])<<8 | uint32(b[i+2])<<16 | uint32(b[i+3])<<24
				finite = finite && u&0x7f800000 != 0x7f800000
			}
			if finite {
				t.Fatalf("finite values refused: %v", err)
			}
			return
		}
		for i, v := range got {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				t.Fatalf("value %d is %v", i, v)
			}
		}
		if back := AppendFloat32s(nil, got); string(back) != string(b) {
			t.Fatal("the values do not encode back to the bytes")
		}
	})
}

// BenchmarkDecodeFloat32s decodes a model of 1e6 parameters into a
// reused destination.
func BenchmarkDecodeFloat32s(b *testing.B) {
	x := genDelta(make([]float32, 1_000_000), 1, 0.01)
	buf := AppendFloat32s(nil, x)
	dst := make([]float32, len(x))
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		dst, _ = DecodeFloat32s(dst, buf)
	}
}
