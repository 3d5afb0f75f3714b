package aggregate

import "math"

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

// Small columns (at most maxNet values, the usual number of updates or
// buckets of a round) are sorted by a sorting network on int32 keys:
// branch-free min and max in a fixed sequence, several times faster than
// an insertion sort whose branches the data decides. A finite float32
// other than −0 maps to a key of the same order (f32key), so the sorted
// keys give back the array any correct sort gives.

// maxNet is the largest column sorted by a network; a median of more than
// maxMedianNet values of dense updates is found by selection instead.
const (
	maxNet       = 128
	maxMedianNet = 32
)

// netPair is one comparator of a sorting network: after it, a[i] ≤ a[j].
type netPair struct{ i, j uint8 }

// networks[k] sorts k values: Batcher's odd–even merge sort, with the
// comparators that touch positions ≥ k left out (they would compare with
// +∞ padding and do nothing).
var networks = func() (nets [maxNet + 1][]netPair) {
	for k := 2; k <= maxNet; k++ {
		for p := 1; p < k; p <<= 1 {
			for q := p; q >= 1; q >>= 1 {
				for j := q % p; j+q < k; j += 2 * q {
					for i := 0; i < q && i+j+q < k; i++ {
						if (i+j)/(2*p) == (i+j+q)/(2*p) {
							nets[k] = append(nets[k], netPair{uint8(i + j), uint8(i + j + q)})
						}
					}
				}
			}
		}
	}
	return nets
}()

// f32key maps a finite float32 other than −0 to an int32 of the same
// order: negative values have their magnitude bits flipped.
func f32key(v float32) int32 {
	b := int32(math.Float32bits(v))
	return b ^ (b>>31)&0x7fffffff
}

// keyF32 inverts f32key.
func keyF32(k int32) float32 {
	return math.Float32frombits(uint32(k ^ (k>>31)&0x7fffffff))
}

// sortKeys sorts keys[:k] ascending, k ≤ maxNet.
func sortKeys(keys *[maxNet]int32, k int) {
	for _, c := range networks[k] {
		i, j := c.i&(maxNet-1), c.j&(maxNet-1)
		x, y := keys[i], keys[j]
		keys[i], keys[j] = min(x, y), max(x, y)
	}
}

// colRule is the per-coordinate statistic of Median and TrimmedMean.
type colRule struct {
	median     bool
	beta       float64 // TrimmedMean's
	over       MeanOver
	minSenders int // ≥ 1 with MeanSenders
}

// stat returns the statistic of a column whose non-zero values are nz,
// sorted ascending, and z zeros: over the non-zero values alone (the
// senders) with MeanSenders when there are at least minSenders of them,
// over all m+z values otherwise. It gives the bits the sort of the whole
// column gives: the zeros sit between the negative and positive values,
// and adding a zero to the trimmed sum, which is never −0, changes nothing.
func (r colRule) stat(nz []float32, z int) float64 {
	m := len(nz)
	if r.over == MeanSenders && m >= max(r.minSenders, 1) {
		z = 0
	}
	k := m + z
	if z == 0 {
		return r.statSorted(nz)
	}
	neg := 0
	for neg < m && nz[neg] < 0 {
		neg++
	}
	if r.median {
		hi := float64(rankValue(nz, neg, z, k/2))
		if k%2 == 1 {
			return hi
		}
		return (float64(rankValue(nz, neg, z, k/2-1)) + hi) / 2
	}
	cut := int(r.beta * float64(k))
	var s float64
	for _, x := range nz[min(cut, neg):min(k-cut, neg)] {
		s += float64(x)
	}
	if lo, hi := max(cut, neg+z), k-cut; lo < hi {
		for _, x := range nz[lo-z : hi-z] {
			s += float64(x)
		}
	}
	return float64(s * (1 / float64(k-2*cut)))
}

// rankValue returns the value of rank t of the column made of the sorted
// non-zero values nz, of which neg are negative, and z zeros.
func rankValue(nz []float32, neg, z, t int) float32 {
	switch {
	case t < neg:
		return nz[t]
	case t < neg+z:
		return 0
	}
	return nz[t-z]
}

// statSorted returns the statistic of the sorted column v.
func (r colRule) statSorted(v []float32) float64 {
	k := len(v)
	if r.median {
		hi := float64(v[k/2])
		if k%2 == 1 {
			return hi
		}
		return (float64(v[k/2-1]) + hi) / 2
	}
	cut := int(r.beta * float64(k))
	var s float64
	for _, x := range v[cut : k-cut] {
		s += float64(x)
	}
	return float64(s * (1 / float64(k-2*cut)))
}

// statKeys is statSorted of the sorted keys of a column of k values.
func (r colRule) statKeys(keys *[maxNet]int32, k int) float64 {
	if r.median {
		hi := float64(keyF32(keys[(k/2)&(maxNet-1)]))
		if k%2 == 1 {
			return hi
		}
		return (float64(keyF32(keys[(k/2-1)&(maxNet-1)])) + hi) / 2
	}
	cut := int(r.beta * float64(k))
	var s float64
	for _, x := range keys[cut : k-cut] {
		s += float64(keyF32(x))
	}
	return float64(s * (1 / float64(k-2*cut)))
}

// colScratch holds a column's non-zero values while they are sorted.
type colScratch struct {
	keys [maxNet]int32
	nz   [maxNet]float32
	big  []float32 // for more than maxNet values
}

// push adds the j-th non-zero value of a column of at most len(s.big)
// values (or maxNet when big is nil).
func (s *colScratch) push(j int, v float32) {
	if s.big != nil {
		s.big[j] = v
	} else {
		s.keys[j&(maxNet-1)] = f32key(v)
	}
}

// sorted returns the first m pushed values, sorted ascending.
func (s *colScratch) sorted(m int) []float32 {
	if s.big != nil {
		sortF32(s.big[:m])
		return s.big[:m]
	}
	sortKeys(&s.keys, m)
	for j, x := range s.keys[:m] {
		s.nz[j] = keyF32(x)
	}
	return s.nz[:m]
}

func newColScratch(k int) *colScratch {
	s := new(colScratch)
	if k > maxNet {
		s.big = make([]float32, k)
	}
	return s
}

// applyDense adds the statistic of each coordinate of rows to global.
func (r colRule) applyDense(global []float32, rows [][]float32) {
	r.applyBuckets(global, rows, nil)
}

// applyBuckets is applyDense over the means of the buckets of rows when
// buckets is not nil: row j of the column is the float32 mean of
// rows[buckets[j]], summed in that order from +0 and multiplied by the
// float32 1/len(buckets[j]), as Bucketing averages. It returns false,
// leaving global partly written, when a mean is not finite.
func (r colRule) applyBuckets(global []float32, rows [][]float32, buckets [][]int) bool {
	k := len(rows)
	if buckets != nil {
		k = len(buckets)
	}
	var invs [maxNet]float32
	for j, b := range buckets {
		invs[j&(maxNet-1)] = 1 / float32(len(b))
	}
	finite := true
	// mean returns the value of row j at coordinate i.
	mean := func(j, i int) float32 {
		if buckets == nil {
			return rows[j][i]
		}
		var m float32
		for _, p := range buckets[j] {
			m += rows[p][i]
		}
		m *= invs[j&(maxNet-1)]
		if math.Float32bits(m)&0x7f800000 == 0x7f800000 {
			finite = false
		}
		return m
	}
	if r.median && k > maxMedianNet {
		// A selection finds a median of many values in O(k), faster
		// than any sort.
		col := make([]float32, k)
		buf := make([]float32, 0, k)
		for i := range global {
			buf = buf[:0]
			for j := range col {
				var v float32
				if buckets == nil {
					v = rows[j][i]
				} else {
					v = mean(j, i)
				}
				if v == 0 {
					v = 0 // −0 as +0
				} else {
					buf = append(buf, v)
				}
				col[j] = v
			}
			v := col
			if r.over == MeanSenders && len(buf) >= max(r.minSenders, 1) {
				v = buf
			}
			global[i] = addTo(global[i], medianF32(v))
		}
		return finite
	}
	s := newColScratch(k)
	if s.big != nil {
		for i := range global {
			m := 0
			for j := 0; j < k; j++ {
				if v := mean(j, i); v != 0 {
					s.push(m, v)
					m++
				}
			}
			global[i] = addTo(global[i], r.stat(s.sorted(m), k-m))
		}
		return finite
	}
	net := networks[k]
	column := func(i int) {
		keys := &s.keys
		m := 0
		for j := 0; j < k; j++ {
			if v := mean(j, i); v != 0 {
				keys[m&(maxNet-1)] = f32key(v)
				m++
			}
		}
		var d float64
		if m == k {
			// No zero: the column is its senders, in either mode.
			sortKeys(keys, k)
			d = r.statKeys(keys, k)
		} else {
			d = r.stat(s.sorted(m), k-m)
		}
		global[i] = addTo(global[i], d)
	}
	// Blocks of lanes coordinates without a zero go through the network
	// together, a comparator at a time over the block: independent lanes
	// instead of one chain of dependent min and max.
	var blk [maxNet][lanes]int32
	var sum [lanes]float64
	cut := int(r.beta * float64(k))
	n := len(global)
	i0 := 0
	for ; i0+lanes <= n; i0 += lanes {
		zero := false
		if buckets == nil {
			for j, row := range rows {
				dst := &blk[j&(maxNet-1)]
				for w, v := range row[i0 : i0+lanes] {
					if math.Float32bits(v)&^(1<<31) == 0 {
						zero = true
					}
					dst[w] = f32key(v)
				}
			}
		} else {
			var bad uint32
			for j, b := range buckets {
				dst := &blk[j&(maxNet-1)]
				var acc [lanes]float32
				for _, p := range b {
					for w, v := range rows[p][i0 : i0+lanes] {
						acc[w] += v
					}
				}
				inv := invs[j&(maxNet-1)]
				for w, v := range acc {
					v *= inv
					bits := math.Float32bits(v)
					bad |= bits&0x7f800000 + 0x00800000
					if bits&^(1<<31) == 0 {
						zero = true
					}
					dst[w] = f32key(v)
				}
			}
			if bad&(1<<31) != 0 {
				finite = false
			}
		}
		if zero {
			for i := i0; i < i0+lanes; i++ {
				column(i)
			}
			continue
		}
		for _, c := range net {
			a, b := &blk[c.i&(maxNet-1)], &blk[c.j&(maxNet-1)]
			for w := range lanes {
				x, y := a[w], b[w]
				a[w], b[w] = min(x, y), max(x, y)
			}
		}
		g := global[i0 : i0+lanes]
		if r.median {
			hi := &blk[(k/2)&(maxNet-1)]
			if k%2 == 1 {
				for w := range g {
					g[w] = addTo(g[w], float64(keyF32(hi[w])))
				}
				continue
			}
			lo := &blk[(k/2-1)&(maxNet-1)]
			for w := range g {
				g[w] = addTo(g[w], (float64(keyF32(lo[w]))+float64(keyF32(hi[w])))/2)
			}
			continue
		}
		sum = [lanes]float64{}
		for t := cut; t < k-cut; t++ {
			row := &blk[t&(maxNet-1)]
			for w := range sum {
				sum[w] += float64(keyF32(row[w]))
			}
		}
		inv := 1 / float64(k-2*cut)
		for w := range g {
			g[w] = addTo(g[w], float64(sum[w]*inv))
		}
	}
	for i := i0; i < n; i++ {
		column(i)
	}
	return finite
}

// lanes is the number of coordinates applyDense sorts at once.
const lanes = 16

// applyUpdates is applyDense for validated updates, dense or sparse: when
// every update is sparse, their values are gathered by coordinate first
// (a counting sort of the coordinates sent), in O(n + Σs), and a
// coordinate that none sent takes the statistic of zeros, 0.
func (r colRule) applyUpdates(global []float32, ups []Update) {
	n, k := len(global), len(ups)
	sparse := 0
	for _, u := range ups {
		if u.IsSparse() {
			sparse++
		}
	}
	if sparse < k {
		r.applyDense(global, denseRows(ups, n))
		return
	}
	// end[i] counts the values sent at coordinates ≤ i; filling each
	// coordinate's values backwards leaves end[i] at its start.
	end := make([]int32, n+1)
	total := 0
	for _, u := range ups {
		for _, i := range u.Indices {
			end[i]++
		}
		total += len(u.Indices)
	}
	var run int32
	for i, c := range end[:n] {
		run += c
		end[i] = run
	}
	end[n] = run
	vals := make([]float32, total)
	for _, u := range ups {
		for j, i := range u.Indices {
			end[i]--
			vals[end[i]] = u.Values[j]
		}
	}
	s := newColScratch(k)
	for i := range global {
		lo, hi := end[i], end[i+1]
		if lo == hi {
			global[i] = addTo(global[i], 0)
			continue
		}
		m := 0
		for _, v := range vals[lo:hi] {
			if v != 0 {
				s.push(m, v)
				m++
			}
		}
		global[i] = addTo(global[i], r.stat(s.sorted(m), k-m))
	}
}
