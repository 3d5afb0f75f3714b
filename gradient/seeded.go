package gradient

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/bits"
	"slices"
)

// Seeded syncs (support=seeded, the "seeded" preset).
//
// When every version of the global model changes only on a random
// support drawn from a key every party knows (secure aggregation's
// random-k, whose key is the round's support seed), a sync need not name
// indices. PublishSupport moves the counts of the version's support to
// the global model's nearest counts, count = round((global − init)/step)
// (no Levels cap), and records the key and the support's length. A sync across versions that all
// did so lists their keys instead of indices: the client rebuilds each
// support from its key (Replica.SetSupportFunc), takes their union U,
// sorted, and reads one count change per coordinate of U, zeros
// included, Huffman-coded. A sync from version 0 may be seeded too (U the
// union of every published support, the values the counts) while every
// version was published with its support.
//
// The wire form is a lattice message with randk selection: the indices
// section holds the supports' length and keys (CodingSeed: the length s
// of every support, a uvarint with 1 ≤ s ≤ n, then the keys, 8 bytes
// little-endian each, one per version from Base+1 to Round, in that
// order), the scales section the tensor table (always with steps), the
// values section the |U| = K count changes. Carrying s lets any client
// rebuild every support (secagg.Support(dst[:s], n, key)) with no
// knowledge of the run; versions whose supports differ in length are
// never seeded together. Both sides bound the work before doing it: at
// most maxSeededKeys keys, and at most seededWork(n) support coordinates
// in all, checked on the length before any support is rebuilt; duplicate
// keys, supports that are not s sorted, distinct coordinates in range,
// and a union whose size is not K are refused.
//
// Every path gives the same bits: a seeded sync is composed from the same
// kept deltas as an explicit one (and refused, for the explicit form, if
// one of them changed a count off the union), and a Replica applies the
// count changes exactly as it applies an explicit sync's.

// SupportFunc rebuilds the support of k coordinates drawn from key: it
// appends the support's k indices, sorted, distinct and in [0, n), to dst
// and returns the result (secagg.Support(dst[:k], n, key), say). It must
// return the same support for the same key and k on every party. k comes
// from the support given to PublishSupport on the server and from the
// sync's bytes on a Replica, where it is at least 1 and at most n, and k
// times the sync's keys at most 32·n. A ServerEncoder may call it from
// concurrent syncs: it must be safe for concurrent use there.
type SupportFunc func(key uint64, k int, dst []int32) ([]int32, error)

// maxSeededKeys bounds the keys of a seeded sync: the versions it spans.
const maxSeededKeys = 1024

// seededWork bounds the support coordinates (keys × support length) a
// seeded sync of a model of n makes a client rebuild: 32 per parameter,
// 3,200 versions of a 1 % support.
func seededWork(n int) int { return 32 * n }

// checkSupport reports a support that is not sorted, distinct and in
// [0, n).
func checkSupport(support []int32, n int) error {
	if len(support) > n {
		return fmt.Errorf("%w: support of %d indices for a model of %d", ErrIndex, len(support), n)
	}
	prev := int32(-1)
	for j, i := range support {
		if i <= prev || int(i) >= n {
			return fmt.Errorf("%w: support index %d (position %d) is not above %d and below %d", ErrIndex, i, j, prev, n)
		}
		prev = i
	}
	return nil
}

// SetSupportFunc sets the function that rebuilds a support from its key,
// which a seeded encoder (support=seeded) needs before PublishSupport.
// It is not part of ServerState: set it again after
// RestoreServerEncoder. Other codecs ignore it.
func (s *ServerEncoder) SetSupportFunc(f SupportFunc) {
	if s.lat != nil {
		s.lat.supports = f
	}
}

// PublishSupport is Publish for a version whose global model changed on
// support only, drawn from key by the encoder's SupportFunc (support=seeded
// only; seed is unused, as the lattice draws nothing). support must be
// sorted, distinct, in range and the SupportFunc's for key. The version
// moves every coordinate of support to the nearest count of global, and
// also any coordinate off it whose nearest count is not its count (one
// that changed off the support, or that a plain Publish left off its
// nearest count): such a version is explicit, and syncs across it list
// indices; otherwise syncs across it may list keys (see "Seeded syncs").
// A plain Publish on a seeded encoder is the lattice's own (top-k, Levels
// steps) and is explicit.
func (s *ServerEncoder) PublishSupport(global []float32, seed, key uint64, support []int32) (Stats, error) {
	if s.lat == nil || !s.spec.Seeded {
		return Stats{}, fmt.Errorf("%w: PublishSupport needs bits=lattice,support=seeded, not %s", ErrSpec, s.spec)
	}
	if s.lat.supports == nil {
		return Stats{}, fmt.Errorf("%w: PublishSupport before SetSupportFunc", ErrSpec)
	}
	n := len(s.model)
	if len(global) != n {
		return Stats{}, fmt.Errorf("%w: model of %d values, server encoder has %d", ErrLength, len(global), n)
	}
	if err := checkSupport(support, n); err != nil {
		return Stats{}, err
	}
	got, err := s.lat.supports(key, len(support), s.lat.idx[:0])
	if err != nil {
		return Stats{}, fmt.Errorf("gradient: support of key %#x: %w", key, err)
	}
	s.lat.idx = got
	if !slices.Equal(got, support) {
		return Stats{}, fmt.Errorf("%w: the support func rebuilds another support for key %#x (%d indices, given %d)", ErrIndex, key, len(got), len(support))
	}
	if s.version >= math.MaxUint32 {
		return Stats{}, fmt.Errorf("%w: version %d", ErrTooLarge, s.version)
	}
	for i, g := range global {
		s.diff[i] = g - s.model[i]
	}
	return s.publishLattice(global, true, key, support)
}

// moveNearest selects, for PublishSupport, the coordinates whose nearest
// count of global is not their count (all of support's, and off it only
// those), appending them and their count changes to sel and vals; it
// reports whether they all lie on support. The steps are set at the first
// change: factor times the mean |global − model| of each tensor's changed
// support coordinates. A nearest count is clamped to ±maxLatticeCount, and
// one whose value is not finite is not taken.
func (l *lattice) moveNearest(global, diff []float32, support []int32, factor float64, sel, vals []int32) ([]int32, []int32, bool, error) {
	if l.steps == nil {
		idx := make([]int32, 0, len(support))
		for _, i := range support {
			if diff[i] != 0 {
				idx = append(idx, i)
			}
		}
		steps, err := latticeSteps(diff, idx, l.tensors, factor)
		if err != nil {
			return sel, vals, false, err
		}
		if steps == nil {
			return sel, vals, true, nil // nothing changed yet
		}
		l.steps = steps
	}
	on := true
	j := 0 // next support position
	off := 0
	for t, z := range l.tensors {
		step := float64(l.steps[t])
		for i := off; i < off+z; i++ {
			q := math.Round((float64(global[i]) - float64(l.init[i])) / step)
			q = max(-maxLatticeCount, min(maxLatticeCount, q))
			c := int32(q)
			for j < len(support) && int(support[j]) < i {
				j++
			}
			if c == l.counts[i] || !isFinite32(latticeValue(l.init[i], l.steps[t], c)) {
				continue
			}
			if j >= len(support) || int(support[j]) != i {
				on = false
			}
			sel = append(sel, int32(i))
			vals = append(vals, c-l.counts[i])
		}
		off += z
	}
	return sel, vals, on, nil
}

// pushKey records the key and support length of the version just
// published and whether it moved counts on its support only, keeping the
// last maxSeededKeys.
func (l *lattice) pushKey(key uint64, k int, seeded bool) {
	if len(l.keys) == maxSeededKeys {
		copy(l.keys, l.keys[1:])
		copy(l.sizes, l.sizes[1:])
		copy(l.seeded, l.seeded[1:])
		l.keys, l.sizes, l.seeded = l.keys[:maxSeededKeys-1], l.sizes[:maxSeededKeys-1], l.seeded[:maxSeededKeys-1]
	}
	l.keys = append(l.keys, key)
	l.sizes = append(l.sizes, int32(k))
	l.seeded = append(l.seeded, seeded)
}

// union rebuilds the supports of keys, of k coordinates each, with f
// into the bitmap bm (of n bits, zero on entry) and returns the number of
// coordinates set. Before it rebuilds any, it refuses duplicate keys, k
// outside [1, n] and more than seededWork(n) support coordinates in all;
// then supports that are not k sorted, distinct coordinates in range. buf
// is scratch for f; the grown buffer is returned.
func union(f SupportFunc, keys []uint64, k, n int, bm []uint64, buf []int32) (int, []int32, error) {
	if len(keys) < 1 || len(keys) > maxSeededKeys {
		return 0, buf, fmt.Errorf("%w: a seeded sync of %d keys, want 1..%d", ErrCorrupt, len(keys), maxSeededKeys)
	}
	if k < 1 || k > n {
		return 0, buf, fmt.Errorf("%w: supports of %d coordinates for a model of %d", ErrCorrupt, k, n)
	}
	if k*len(keys) > seededWork(n) {
		return 0, buf, fmt.Errorf("%w: a seeded sync of %d supports of %d, more than %d coordinates for a model of %d", ErrTooLarge, len(keys), k, seededWork(n), n)
	}
	for a := range keys {
		for b := a + 1; b < len(keys); b++ {
			if keys[a] == keys[b] {
				return 0, buf, fmt.Errorf("%w: a seeded sync names key %#x twice", ErrCorrupt, keys[a])
			}
		}
	}
	count := 0
	for _, key := range keys {
		var err error
		if buf, err = f(key, k, buf[:0]); err != nil {
			return 0, buf, fmt.Errorf("gradient: support of key %#x: %w", key, err)
		}
		if len(buf) != k {
			return 0, buf, fmt.Errorf("%w: the support func rebuilt %d coordinates for key %#x, want %d", ErrCorrupt, len(buf), key, k)
		}
		if err := checkSupport(buf, n); err != nil {
			return 0, buf, err
		}
		for _, i := range buf {
			w, b := i>>6, uint64(1)<<(i&63)
			if bm[w]&b == 0 {
				bm[w] |= b
				count++
			}
		}
	}
	return count, buf, nil
}

// bitmapIndices appends the set bits of bm, ascending, to dst, clearing
// bm.
func bitmapIndices(dst []int32, bm []uint64) []int32 {
	for w, word := range bm {
		for word != 0 {
			dst = append(dst, int32(w*64+bits.TrailingZeros64(word)))
			word &= word - 1
		}
		bm[w] = 0
	}
	return dst
}

// composeSeeded returns the seeded sync from have to the current version,
// or nil if there is none: a version since have was not published with
// its support (or is no longer known), there are too many keys or too
// much work, or a kept delta changed a count off the union. From version
// 0 the values are the counts over the union (every nonzero count must
// lie in it); from have > 0, the sums of the kept deltas since have.
func (s *ServerEncoder) composeSeeded(have int) []byte {
	l, n := s.lat, len(s.model)
	lag := s.version - have
	if !s.spec.Seeded || l.supports == nil || l.steps == nil || lag < 1 || lag > maxSeededKeys || lag > len(l.keys) {
		return nil
	}
	if have > 0 && lag > len(s.history) {
		return nil
	}
	keys, sizes := l.keys[len(l.keys)-lag:], l.sizes[len(l.sizes)-lag:]
	for j, ok := range l.seeded[len(l.seeded)-lag:] {
		if !ok || sizes[j] != sizes[0] {
			return nil
		}
	}
	k := int(sizes[0])
	bm := make([]uint64, (n+63)/64)
	size, _, err := union(l.supports, keys, k, n, bm, nil)
	if err != nil {
		return nil
	}
	u := bitmapIndices(make([]int32, 0, size), bm)
	// bm is clear again: mark U to check the deltas against it.
	for _, i := range u {
		bm[i>>6] |= 1 << (i & 63)
	}
	vals := make([]int32, len(u))
	if have == 0 {
		nnz := 0
		for j, i := range u {
			vals[j] = l.counts[i]
			if vals[j] != 0 {
				nnz++
			}
		}
		if nnz != l.nnz {
			return nil
		}
		return appendSeededMessage(nil, n, 0, s.version, l.tensors, l.steps, k, keys, vals)
	}
	sp, _ := scratchPool.Get().(*[]int64)
	if sp == nil || len(*sp) != n {
		b := make([]int64, n)
		sp = &b
	}
	sum := *sp // only U's entries are touched, and cleared on return
	defer func() {
		for _, i := range u {
			sum[i] = 0
		}
		scratchPool.Put(sp)
	}()
	var d Decoder
	lim := Limits{MaxParams: n}.norm()
	for _, m := range s.history[len(s.history)-lag:] {
		h, err := parse(m, lim, false)
		if err != nil {
			panic(fmt.Sprintf("gradient: kept lattice delta refused: %v", err))
		}
		_, steps, idx, dv, err := d.lattice(&h, m)
		if err != nil {
			panic(fmt.Sprintf("gradient: kept lattice delta refused: %v", err))
		}
		if len(idx) == 0 {
			continue
		}
		if !slices.Equal(steps, l.steps) {
			return nil
		}
		for j, i := range idx {
			if bm[i>>6]&(1<<(i&63)) == 0 {
				return nil // a change off the union
			}
			sum[i] += int64(dv[j])
		}
	}
	for j, i := range u {
		v := sum[i]
		if v > 2*maxLatticeCount || v < -2*maxLatticeCount {
			return nil
		}
		vals[j] = int32(v)
	}
	return appendSeededMessage(nil, n, have, s.version, l.tensors, l.steps, k, keys, vals)
}

// appendSeededMessage appends a seeded sync from version base to to: the
// supports' length k and the keys of the versions base+1..to, the tensor
// table and the count changes over the union of the keys' supports,
// sorted (see "Seeded syncs").
func appendSeededMessage(dst []byte, n, base, to int, tensors []int, steps []float32, k int, keys []uint64, vals []int32) []byte {
	sec := binary.AppendUvarint(nil, uint64(k))
	for _, key := range keys {
		sec = binary.LittleEndian.AppendUint64(sec, key)
	}
	kl := len(sec)
	sec = appendLatticeTable(sec, tensors, steps)
	tl := len(sec) - kl
	sec, vc := appendLatticeValues(sec, vals, 0)
	h := Header{Selection: RandK, Format: FormatLattice, Bits: 32, N: n, K: len(vals), Round: to, Base: base}
	return appendLatticeSections(dst, &h, sec, CodingSeed, kl, tl, vc)
}

// seeded decodes a seeded sync that parse accepted: its tensor table
// (which must have steps), its supports' length k (in [1, n], k times the
// keys at most seededWork(n) and at least K), its keys (one per version
// from Base+1 to Round) and its K count changes, in d's scratch.
func (d *Decoder) seeded(h *Header, src []byte) (tensors []int, steps []float32, k int, keys []uint64, vals []int32, err error) {
	if h.Format != FormatLattice || h.Selection != RandK {
		return nil, nil, 0, nil, nil, fmt.Errorf("%w: a %s %s message where a seeded lattice sync was expected", ErrCorrupt, h.Selection, h.Format)
	}
	if tensors, steps, err = latticeTable(h, src); err != nil {
		return nil, nil, 0, nil, nil, err
	}
	if steps == nil {
		return nil, nil, 0, nil, nil, fmt.Errorf("%w: a seeded lattice sync without steps", ErrCorrupt)
	}
	_, kb := sectionBytes(h, src, SectionIndices)
	k64, w := binary.Uvarint(kb)
	if w <= 0 || k64 < 1 || k64 > uint64(h.N) {
		return nil, nil, 0, nil, nil, fmt.Errorf("%w: a seeded lattice sync with supports of %d coordinates (%d bytes) for a model of %d", ErrCorrupt, k64, w, h.N)
	}
	k, kb = int(k64), kb[w:]
	nk := len(kb) / 8
	if len(kb)%8 != 0 || nk < 1 || nk > maxSeededKeys || h.Round <= h.Base || h.Round-h.Base != nk {
		return nil, nil, 0, nil, nil, fmt.Errorf("%w: a seeded lattice sync from version %d to %d with %d bytes of keys", ErrCorrupt, h.Base, h.Round, len(kb))
	}
	if k*nk > seededWork(h.N) {
		return nil, nil, 0, nil, nil, fmt.Errorf("%w: a seeded lattice sync of %d supports of %d, more than %d coordinates for a model of %d", ErrTooLarge, nk, k, seededWork(h.N), h.N)
	}
	if h.K > k*nk {
		return nil, nil, 0, nil, nil, fmt.Errorf("%w: a seeded lattice sync of %d values for %d supports of %d", ErrCorrupt, h.K, nk, k)
	}
	keys = grow(&d.keys, nk)
	for j := range keys {
		keys[j] = binary.LittleEndian.Uint64(kb[8*j:])
	}
	if vals, err = d.latticeValues(h, src, 0); err != nil {
		return nil, nil, 0, nil, nil, err
	}
	return tensors, steps, k, keys, vals, nil
}
