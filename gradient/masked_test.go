package gradient

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"testing"
)

// TestMaskedRoundTrip packs values at every width and reads back their
// low bits, and checks the size is the header plus ⌈count·m/8⌉.
func TestMaskedRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for m := 1; m <= 32; m++ {
		for _, n := range []int{0, 1, 7, 100} {
			y := make([]uint32, n)
			for i := range y {
				y[i] = r.Uint32()
			}
			b := AppendMasked(nil, y, m)
			if want := maskedHeader + (n*m+7)/8; len(b) != want {
				t.Fatalf("m=%d n=%d: %d bytes, want %d", m, n, len(b), want)
			}
			got := make([]uint32, n)
			gm, err := ReadMasked(got, b)
			if err != nil || gm != m {
				t.Fatalf("m=%d n=%d: %v, width %d", m, n, err, gm)
			}
			for i := range y {
				if want := uint32(uint64(y[i]) & (1<<m - 1)); got[i] != want {
					t.Fatalf("m=%d: value %d = %#x, want %#x", m, i, got[i], want)
				}
			}
		}
	}
}

// TestMaskedRefuses checks the decoder's refusals.
func TestMaskedRefuses(t *testing.T) {
	good := AppendMasked(nil, []uint32{1, 2, 3}, 5)
	for name, c := range map[string]struct {
		b    []byte
		n    int
		want error
	}{
		"short header": {good[:3], 3, ErrTruncated},
		"short":        {good[:len(good)-1], 3, ErrTruncated},
		"trailing":     {append(bytes.Clone(good), 0), 3, ErrCorrupt},
		"width 0":      {append([]byte{0}, good[1:]...), 3, ErrCorrupt},
		"width 33":     {append([]byte{33}, good[1:]...), 3, ErrCorrupt},
		"count":        {good, 4, ErrLength},
		"padding":      {append(bytes.Clone(good[:len(good)-1]), 0x80), 3, ErrCorrupt},
		"huge":         {[]byte{8, 0xff, 0xff, 0xff, 0xff}, 3, ErrTooLarge},
	} {
		if _, err := ReadMasked(make([]uint32, c.n), c.b); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", name, err, c.want)
		}
	}
}

// FuzzReadMasked: the decoder never panics, and what it accepts
// re-encodes to the same bytes.
func FuzzReadMasked(f *testing.F) {
	f.Add(AppendMasked(nil, []uint32{1, 2, 3}, 5), 3)
	f.Add(AppendMasked(nil, []uint32{0xffffffff}, 32), 1)
	f.Fuzz(func(t *testing.T, b []byte, n int) {
		if n < 0 || n > 1<<12 {
			return
		}
		dst := make([]uint32, n)
		m, err := ReadMasked(dst, b)
		if err != nil {
			return
		}
		if again := AppendMasked(nil, dst, m); !bytes.Equal(again, b) {
			t.Fatalf("re-encodes to %x, read %x", again, b)
		}
	})
}
