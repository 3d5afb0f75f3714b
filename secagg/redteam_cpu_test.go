package secagg

import (
	"fmt"
	"slices"
	"testing"
)

// BenchmarkRedteamTwoWrongShares is the server's rebuild of one
// self-mask seed from k shares with threshold t = k/2+1 (a run's
// --secagg-neighbours and --secagg-threshold), honest and with two wrong
// shares at the front, which two colluding neighbours of the owner can
// send: every subset of the first t+1 holds a wrong share, and the
// correction is Berlekamp–Welch's. One wrong share (one-wrong) is
// corrected by the subsets. For k = 300 and 1000 (t ≥ maxBWShares) two
// wrong shares are not corrected (TestRedteamTwoWrongSharesLargeT), so
// only the honest and one-wrong cases run there.
//
//	go test -run '^$' -bench RedteamTwoWrong -benchtime 10x ./secagg/
func BenchmarkRedteamTwoWrongShares(b *testing.B) {
	for _, k := range []int{100, 300, 1000} {
		t := k/2 + 1
		var secret [SecretLen]byte
		xs := make([]uint32, k)
		for i := range xs {
			xs[i] = uint32(i + 1)
		}
		shares, _ := Split(&secret, xs, t, clientRand(1, 1))
		commit := commitSelfMask(1, 1, &secret)
		check := func(s *[SecretLen]byte) bool { return commitSelfMask(1, 1, s) == commit }
		one := slices.Clone(shares)
		one[t].Y[0] = addmod(one[t].Y[0], 1) // the last subset leaves it out
		bad := slices.Clone(shares)
		for i := range 2 {
			bad[i].Y[0] = addmod(bad[i].Y[0], 1)
		}
		cases := []struct {
			name   string
			shares []Share
		}{{"honest", shares}, {"one-wrong", one}, {"two-wrong", bad}}
		if t >= maxBWShares {
			cases = cases[:2]
		}
		for _, c := range cases {
			b.Run(fmt.Sprintf("%s/k=%d/t=%d", c.name, k, t), func(b *testing.B) {
				for b.Loop() {
					if s, err := combineChecked(c.shares, t, check); err != nil || s != secret {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// TestRedteamLeaveOneOut: the secrets combineChecked tries for the t+1
// subsets of the first t+1 shares, each leaving one out, are those
// Combine rebuilds from each subset, in order, for shares with one to
// three wrong (a subset with a wrong share gives some other secret, the
// same both ways); and one wrong share anywhere among the first t+1 is
// corrected.
func TestRedteamLeaveOneOut(t *testing.T) {
	var secret [SecretLen]byte
	for i := range secret {
		secret[i] = byte(7 * i)
	}
	for _, k := range []int{3, 10, 41} {
		th := k/2 + 1
		xs := make([]uint32, k)
		for i := range xs {
			xs[i] = uint32(3*i + 2)
		}
		shares, err := Split(&secret, xs, th, clientRand(uint64(k), 1))
		if err != nil {
			t.Fatal(err)
		}
		for wrong := range 4 {
			bad := slices.Clone(shares)
			for i := range wrong {
				at := (i * 5) % (th + 1)
				bad[at].Y[i%chunks] = addmod(bad[at].Y[i%chunks], uint64(1+i))
			}
			var want [][SecretLen]byte
			sub := make([]Share, th)
			for leave := range th + 1 {
				copy(sub, bad[:leave])
				copy(sub[leave:], bad[leave+1:th+1])
				if s, err := Combine(sub, th); err == nil {
					want = append(want, s)
				}
			}
			var got [][SecretLen]byte
			record := func(s *[SecretLen]byte) bool {
				got = append(got, *s)
				return false
			}
			_, _ = combineChecked(bad, th, record)
			// With a wrong share Combine of all of them fails, so
			// the subsets come first; Berlekamp–Welch's try may follow.
			if wrong > 0 && (len(got) < len(want) || !slices.Equal(got[:len(want)], want)) {
				t.Fatalf("k=%d, %d wrong: the subsets tried %d secrets, not Combine's %d in order", k, wrong, len(got), len(want))
			}
			if wrong <= 1 {
				if s, err := combineChecked(bad, th, func(s *[SecretLen]byte) bool { return *s == secret }); err != nil || s != secret {
					t.Fatalf("k=%d, %d wrong: %v", k, wrong, err)
				}
			}
		}
	}
}

// TestRedteamTwoWrongSharesLargeT: with a threshold of maxBWShares or
// more (a run's --secagg-neighbours 300 gives t = 151), two colluding
// neighbours of an owner that reveal wrong shares, far fewer than the
// ⌊(k − t)/2⌋ = 74 the shares could correct, make its seed fail to
// rebuild: the subsets correct one wrong share, and Berlekamp–Welch, on
// the first maxBWShares shares, needs t + 2 of them. The coordinator then
// abandons the round (Server.Sum fails), so two clients can stop every
// round they are in. ChooseK's neighbourhoods (the default) are far below
// maxBWShares.
func TestRedteamTwoWrongSharesLargeT(t *testing.T) {
	t.Skip("open (redteam): with t >= maxBWShares two wrong shares are not corrected; " +
		"decoding t + 2e shares for small e, or locating wrong shares by their fit to a majority, is needed")
	k := 300
	th := k/2 + 1
	var secret [SecretLen]byte
	xs := make([]uint32, k)
	for i := range xs {
		xs[i] = uint32(i + 1)
	}
	shares, err := Split(&secret, xs, th, clientRand(1, 1))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		shares[i].Y[0] = addmod(shares[i].Y[0], 1)
	}
	if s, err := combineChecked(shares, th, func(s *[SecretLen]byte) bool { return *s == secret }); err != nil || s != secret {
		t.Fatalf("two wrong shares of %d with t = %d: %v", k, th, err)
	}
}
