package secagg

import (
	"math/rand/v2"
	"testing"
)

func TestMaskedWidth(t *testing.T) {
	for _, c := range []struct {
		bound       int64
		width, want int
		exact, err  bool
	}{
		{bound: 10 * 3, want: 6, exact: true},       // 3-bit codes from 10 clients: ±30 needs ±31
		{bound: 10 * 127, want: 12, exact: true},    // 8-bit codes from 10 clients
		{bound: 31, want: 6, exact: true},           // the edge: 2^5 − 1
		{bound: 32, want: 7, exact: true},           // one past it
		{bound: 0, want: 2, exact: true},            // the narrowest
		{bound: 1<<31 - 1, want: 32, exact: true},   // int32
		{bound: 1 << 31, err: true},                 // beyond 32 bits
		{bound: 30, width: 5, want: 5},              // narrower: wraps possible
		{bound: 30, width: 6, want: 6, exact: true}, // the exact width written out
		{bound: 30, width: 9, want: 9, exact: true},
		{bound: 30, width: 1, err: true},
		{bound: 30, width: 33, err: true},
		{bound: 30, width: -1, err: true},
		{bound: -1, err: true},
	} {
		m, exact, err := MaskedWidth(c.bound, c.width)
		if (err != nil) != c.err {
			t.Errorf("MaskedWidth(%d, %d): error %v, want error %v", c.bound, c.width, err, c.err)
			continue
		}
		if err == nil && (m != c.want || exact != c.exact) {
			t.Errorf("MaskedWidth(%d, %d) = %d, %v; want %d, %v", c.bound, c.width, m, exact, c.want, c.exact)
		}
	}
}

// TestReadSumWraps sums random codes of n clients through the protocol's
// arithmetic (each masked with a random pair mask that cancels, modulo
// 2^32, then cut to m bits as on the wire) and checks, for every width,
// that ReadSum gives the true sum wherever it lies in the signed m-bit
// range, that every other coordinate reads within the range and off by a
// multiple of 2^m, and that CountWraps counts exactly those.
func TestReadSumWraps(t *testing.T) {
	const n, d = 10, 5000
	rng := rand.New(rand.NewPCG(1, 2))
	fp := FixedPoint{Clip: 1, Bits: 3}
	L := fp.Levels()
	plain := make([]uint32, d)
	masked := make([]uint32, d)
	for range n {
		for j := range d {
			// Correlated clients, as on an announced support: a
			// coordinate's codes lean one way.
			c := int32(rng.IntN(int(2*L+1))) - int32(L)
			if j%3 == 0 {
				c = int32(L) - int32(rng.IntN(2))
			}
			plain[j] += uint32(c)
			masked[j] += uint32(c)
		}
	}
	// Masks that cancel: one pair mask added by a client and taken off
	// by another.
	for j := range d {
		r := rng.Uint32()
		masked[j] += r
		masked[j] -= r
	}
	exactM, _, err := MaskedWidth(int64(n)*L, 0)
	if err != nil {
		t.Fatal(err)
	}
	for m := 2; m <= 12; m++ {
		read := make([]uint32, d)
		for j, v := range masked {
			read[j] = v & (1<<m - 1) // the low m bits the clients send, summed mod 2^m
		}
		ReadSum(read, m)
		want := 0
		lo, hi := -(int64(1) << (m - 1)), int64(1)<<(m-1)-1
		for j := range d {
			p, r := int64(int32(plain[j])), int64(int32(read[j]))
			if r < lo || r > hi {
				t.Fatalf("m=%d: coordinate %d reads %d, outside [%d, %d]", m, j, r, lo, hi)
			}
			if p >= lo && p <= hi {
				if r != p {
					t.Fatalf("m=%d: coordinate %d: true sum %d in range, read %d", m, j, p, r)
				}
				continue
			}
			want++
			if (p-r)%(int64(1)<<m) != 0 {
				t.Fatalf("m=%d: coordinate %d: read %d is not the true sum %d modulo 2^m", m, j, r, p)
			}
		}
		got, err := CountWraps(read, plain, m)
		if err != nil {
			t.Fatalf("m=%d: %v", m, err)
		}
		if got != want {
			t.Errorf("m=%d: CountWraps = %d, want %d", m, got, want)
		}
		if m >= exactM && got != 0 {
			t.Errorf("m=%d (exact width %d): %d wraps", m, exactM, got)
		}
		if m == 4 && got == 0 {
			t.Errorf("m=4: no wraps; the test's codes do not exercise wrapping")
		}
	}
}

// TestCountWrapsRefuses checks that a sum that is not the plain sum
// modulo 2^m (a protocol fault, not a wrap) is an error, not a wrap.
func TestCountWrapsRefuses(t *testing.T) {
	plain := []uint32{5, uint32(0xFFFFFFFF), 40}
	wrapped := int32(40 - 64)
	read := []uint32{5, uint32(0xFFFFFFFF), uint32(wrapped)}
	if n, err := CountWraps(read, plain, 6); err != nil || n != 1 {
		t.Fatalf("a wrap of 64 at m = 6: %d, %v; want 1, nil", n, err)
	}
	read[0] = 6
	if _, err := CountWraps(read, plain, 6); err == nil {
		t.Fatal("a sum off by 1: no error")
	}
	if n, err := CountWraps(plain, plain, 32); err != nil || n != 0 {
		t.Fatalf("m = 32, equal sums: %d, %v", n, err)
	}
}
