package secagg

import (
	"fmt"
	"slices"
)

// Supports returns the function that rebuilds, from a round's support
// seed, the random support of k of n coordinates that Support draws,
// appending it to dst: the gradient.SupportFunc of seeded download syncs,
// the same on the coordinator, the simulator and every client. It refuses
// k outside [1, n] (k may come from the network) and is safe for
// concurrent use.
func Supports(n int) func(seed uint64, k int, dst []int32) ([]int32, error) {
	return func(seed uint64, k int, dst []int32) ([]int32, error) {
		if k < 1 || k > n {
			return dst, fmt.Errorf("secagg: a support of %d coordinates of %d", k, n)
		}
		start := len(dst)
		dst = slices.Grow(dst, k)[:start+k]
		Support(dst[start:], n, seed)
		return dst, nil
	}
}
