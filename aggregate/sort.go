package aggregate

// Sorting and selection of the finite float32 columns of the robust rules.
// The values are finite (Validate) and −0 is stored as +0 (gather), so the
// order is total and any correct sort gives the same array: the robust
// statistics do not depend on the order of Add. These specialised routines
// are several times faster than slices.Sort, whose comparison handles NaN.

// gather copies coordinate i of every row into col, mapping −0 to +0.
func gather(col []float32, rows [][]float32, sel []int, i int) {
	if sel == nil {
		for j, r := range rows {
			v := r[i]
			if v == 0 {
				v = 0
			}
			col[j] = v
		}
		return
	}
	for j, r := range sel {
		v := rows[r][i]
		if v == 0 {
			v = 0
		}
		col[j] = v
	}
}

// sortF32 sorts a ascending.
func sortF32(a []float32) {
	for len(a) > 12 {
		lt, gt := partition3(a)
		// Recurse into the smaller side, loop on the larger.
		if lt < len(a)-gt {
			sortF32(a[:lt])
			a = a[gt:]
		} else {
			sortF32(a[gt:])
			a = a[:lt]
		}
	}
	insertionSort(a)
}

func insertionSort(a []float32) {
	for i := 1; i < len(a); i++ {
		v := a[i]
		j := i
		for ; j > 0 && a[j-1] > v; j-- {
			a[j] = a[j-1]
		}
		a[j] = v
	}
}

// partition3 partitions a around the median of its first, middle and last
// values into a[:lt] < p, a[lt:gt] == p, a[gt:] > p.
func partition3(a []float32) (lt, gt int) {
	x, y, z := a[0], a[len(a)/2], a[len(a)-1]
	p := max(min(x, y), min(max(x, y), z))
	lt, i, gt := 0, 0, len(a)
	for i < gt {
		switch v := a[i]; {
		case v < p:
			a[lt], a[i] = v, a[lt]
			lt++
			i++
		case v > p:
			gt--
			a[gt], a[i] = v, a[gt]
		default:
			i++
		}
	}
	return lt, gt
}

// selectF32 reorders a so that a[k] holds the value of rank k, with no
// greater value before it and no smaller one after.
func selectF32(a []float32, k int) {
	for len(a) > 12 {
		lt, gt := partition3(a)
		switch {
		case k < lt:
			a = a[:lt]
		case k >= gt:
			a, k = a[gt:], k-gt
		default:
			return
		}
	}
	insertionSort(a)
}

// medianF32 returns the median of col, reordering it: the middle value, or
// the mean of the two middle values for an even count.
func medianF32(col []float32) float64 {
	k := len(col)
	selectF32(col, k/2)
	hi := float64(col[k/2])
	if k%2 == 1 {
		return hi
	}
	lo := col[0]
	for _, v := range col[1 : k/2] {
		lo = max(lo, v)
	}
	return (float64(lo) + hi) / 2
}
