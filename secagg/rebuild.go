package secagg

import (
	"fmt"
	"slices"
	"sync"

	"github.com/fedzip/fedzip/compress"
)

// Supports returns the function that rebuilds, from a round's support
// seed, the random support of k of n coordinates that Support draws,
// appending it to dst: the gradient.SupportFunc of seeded download syncs,
// the same on the coordinator, the simulator and every client. It refuses
// k outside [1, n] (k may come from the network) and is safe for
// concurrent use. Its draws reuse workspaces (n/8 bytes each), so a sync
// of many keys does not allocate one per key.
func Supports(n int) func(seed uint64, k int, dst []int32) ([]int32, error) {
	pool := sync.Pool{New: func() any { return new(compress.Workspace) }}
	return func(seed uint64, k int, dst []int32) ([]int32, error) {
		if k < 1 || k > n {
			return dst, fmt.Errorf("secagg: a support of %d coordinates of %d", k, n)
		}
		start := len(dst)
		dst = slices.Grow(dst, k)[:start+k]
		ws := pool.Get().(*compress.Workspace)
		supportWS(dst[start:], n, seed, ws)
		pool.Put(ws)
		return dst, nil
	}
}
