package secagg

import (
	"slices"
	"sync"
	"testing"
)

// TestRedteamSupportsReuse: Supports rebuilds the supports Support draws
// whatever the order, lengths and concurrency of the calls (its pooled
// workspaces come back clear), and a sync's worth of keys allocates no
// workspace per key: a seeded sync of 1,024 one-coordinate supports made
// a client allocate 1,024 × n/8 bytes (537 MB at n = 2^22).
func TestRedteamSupportsReuse(t *testing.T) {
	const n = 5000
	f := Supports(n)
	want := func(key uint64, k int) []int32 {
		s := make([]int32, k)
		Support(s, n, key)
		return s
	}
	var wg sync.WaitGroup
	errs := make(chan string, 8)
	for g := range 8 {
		wg.Go(func() {
			var buf []int32
			for i := range 200 {
				key, k := uint64(g*1000+i), 1+(i*37+g)%n
				var err error
				if buf, err = f(key, k, buf[:0]); err != nil || !slices.Equal(buf, want(key, k)) {
					errs <- "a rebuilt support differs from Support's"
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Fatal(e)
	}
	if raceEnabled {
		return
	}
	buf := make([]int32, 0, n)
	if a := testing.AllocsPerRun(20, func() {
		for key := range uint64(64) {
			buf, _ = f(key, 1, buf[:0])
		}
	}); a > 8 {
		t.Errorf("64 supports allocated %.0f times, want the pool's few", a)
	}
}
