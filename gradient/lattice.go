package gradient

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math"
	"slices"
	"sync"

	"github.com/fedzip/fedzip/compress"
)

// The lattice download codec (bits=lattice).
//
// The model clients hold is init + step_t·counts, coordinate by
// coordinate, with init the initial model (version 0), step_t one float32
// per tensor and counts an int32 per coordinate. Every version changes
// the counts of at most the top-k coordinates of global − model by at
// most Levels steps; what is not sent stays in global − model, the exact
// server residual. The steps are set when the first version that changes
// the model is published: Spec.Step times the mean magnitude of each
// tensor's selected change. Later they only halve (refine), which doubles
// the counts and leaves the model unchanged bit for bit.
//
// Because a coordinate's value is a function of its count alone, the sum
// of any run of deltas is again one sparse vector of integer changes:
// a client v versions behind is sent one message, the composition of the
// deltas it missed (the union of their supports, the sums of their
// changes), not v messages; and a client with nothing but the initial
// model, or one behind by more than the kept deltas, is sent the counts
// themselves as a delta from version 0. Both reconstruct the same bits
// whatever path they took, because value = init + float32(step·count) is
// computed from the count, never accumulated.

// errLatticeElsewhere is the error of decoders that do not apply lattice
// messages: only a Replica does.
var errLatticeElsewhere = fmt.Errorf("%w: a lattice sync is a download that only a Replica applies", ErrCorrupt)

// maxLatticeCount bounds |count| of every coordinate: step·count is then
// exact in float32 whenever step is a power of two, and a corrupted or
// hostile message cannot overflow int32.
const maxLatticeCount = 1 << 24

// maxLatticeTensors bounds the tensor table of a message.
const maxLatticeTensors = 1 << 16

// latticeValue is the value of a coordinate of the lattice model. The
// explicit conversion rounds the product to float32 before the addition,
// so that no platform fuses them: every replica computes the same bits.
func latticeValue(init, step float32, count int32) float32 {
	return init + float32(step*float32(count))
}

// lattice is a ServerEncoder's state with a lattice spec.
type lattice struct {
	init    []float32
	counts  []int32
	tensors []int     // sizes, summing to n
	steps   []float32 // one per tensor; nil until the model first changes
	nnz     int       // nonzero counts

	// idx, sel, vals and norm are Publish's scratch; ws its top-k
	// workspace.
	idx, sel []int32
	norm     []float32
	vals     []int32
	ws       compress.Workspace

	// cache holds composed syncs of the current version by the version
	// the client holds (see sync); cleared by Publish.
	mu    sync.Mutex
	cache map[int][]byte

	// With support=seeded only: keys[i], sizes[i] and seeded[i] are the
	// key and length of the support of version version − len(keys) + 1 + i
	// and whether the version moved counts on that support only (the last
	// maxSeededKeys versions); supports rebuilds a support from its key
	// (nil until SetSupportFunc).
	keys     []uint64
	sizes    []int32
	seeded   []bool
	supports SupportFunc
}

// maxSyncCache bounds the composed syncs kept per version (besides the
// sync from version 0).
const maxSyncCache = 64

// scratchPool holds per-call int32 scratch of a model's length for
// composing syncs, which may run concurrently.
var scratchPool sync.Pool

func newLattice(initial []float32) *lattice {
	return &lattice{
		init:    slices.Clone(initial),
		counts:  make([]int32, len(initial)),
		tensors: []int{len(initial)},
	}
}

// SetTensors sets the sizes of the model's tensors, which must sum to its
// length: with the lattice codec each tensor gets its own step (without
// it the model is one tensor). It must be called before the first
// Publish; other codecs ignore it.
func (s *ServerEncoder) SetTensors(sizes []int) error {
	if s.lat == nil {
		return nil
	}
	if s.version != 0 {
		return fmt.Errorf("%w: SetTensors after version %d was published", ErrSpec, s.version)
	}
	if err := checkTensors(sizes, len(s.model)); err != nil {
		return err
	}
	s.lat.tensors = slices.Clone(sizes)
	return nil
}

func checkTensors(sizes []int, n int) error {
	if len(sizes) == 0 || len(sizes) > maxLatticeTensors {
		return fmt.Errorf("%w: %d tensors, want 1..%d", ErrCorrupt, len(sizes), maxLatticeTensors)
	}
	sum := 0
	for _, z := range sizes {
		if z < 1 || z > n-sum {
			return fmt.Errorf("%w: tensor sizes %v do not split a model of %d", ErrLength, sizes, n)
		}
		sum += z
	}
	if sum != n {
		return fmt.Errorf("%w: tensor sizes sum to %d, model has %d", ErrLength, sum, n)
	}
	return nil
}

// publishLattice is Publish for the lattice codec; s.diff holds
// global − model. With seeded set (PublishSupport) the version moves
// counts to the nearest of global (moveNearest) and records key; without,
// it moves the top-k by at most Levels steps.
func (s *ServerEncoder) publishLattice(global []float32, seeded bool, key uint64, support []int32) (Stats, error) {
	l, n := s.lat, len(s.model)
	st := Stats{N: n, ClipFactor: 1}
	if !finite32(s.diff) {
		return st, fmt.Errorf("%w: global − model holds NaN or Inf", ErrNonFinite)
	}
	k := s.spec.Kept(n, s.version+1)
	idx := grow(&l.idx, k)
	onSupport := false
	sel, vals := l.sel[:0], l.vals[:0]
	if seeded {
		var err error
		if sel, vals, onSupport, err = l.moveNearest(global, s.diff, support, s.spec.Step, sel, vals); err != nil {
			return st, err
		}
	} else if l.steps == nil {
		compress.TopK(idx, s.diff, &l.ws)
		slices.Sort(idx)
		steps, err := latticeSteps(s.diff, idx, l.tensors, s.spec.Step)
		if err != nil {
			return st, err
		}
		l.steps = steps // nil while the model has not changed
	}
	if !seeded && l.steps != nil {
		// Select in steps: the coordinates furthest from the model in
		// units of their tensor's step.
		norm := grow(&l.norm, n)
		off := 0
		for t, z := range l.tensors {
			inv := 1 / l.steps[t]
			for i := off; i < off+z; i++ {
				norm[i] = s.diff[i] * inv
			}
			off += z
		}
		l.refine(norm, int(math.Ceil(s.spec.Refine*float64(k))))
		compress.TopK(idx, norm, &l.ws)
		slices.Sort(idx)
		levels := float64(s.spec.Levels)
		t, end := 0, l.tensors[0]
		for _, i := range idx {
			for int(i) >= end {
				t++
				end += l.tensors[t]
			}
			q := math.Round(float64(s.diff[i]) / float64(l.steps[t]))
			v := int64(max(-levels, min(levels, q)))
			c := int64(l.counts[i])
			v = max(-maxLatticeCount-c, min(maxLatticeCount-c, v))
			if v == 0 {
				continue
			}
			if !isFinite32(latticeValue(l.init[i], l.steps[t], int32(c+v))) {
				continue // beyond float32 at this step: never sent
			}
			sel = append(sel, i)
			vals = append(vals, int32(v))
		}
	}
	msg := s.historySlot()
	msg = appendLatticeMessage(msg, n, s.version, s.version+1, l.tensors, l.steps, sel, vals)
	// Apply the delta as the clients will.
	for j, i := range sel {
		c := l.counts[i]
		nc := c + vals[j]
		switch {
		case c == 0:
			l.nnz++
		case nc == 0:
			l.nnz--
		}
		l.counts[i] = nc
	}
	l.rebuild(s.model, sel)
	l.sel, l.vals = sel, vals
	s.version++
	s.pushHistory(msg)
	if s.spec.Seeded {
		l.pushKey(key, len(support), onSupport)
	}
	l.mu.Lock()
	l.cache = nil
	l.mu.Unlock()
	st.Kept, st.Bytes = len(sel), len(msg)
	return st, nil
}

// maxRefines bounds the halvings of one Publish.
const maxRefines = 8

// refine halves every step, doubling every count, while fewer than want
// coordinates are at least half a step from the global model (norm is
// global − model in steps, and is doubled with the steps): the lattice
// gets finer as training's changes get smaller, so that the sync budget
// of k coordinates per version buys precision instead of going unused.
// The model does not change: step/2 · 2·count is the same float32
// product, as both factors are scaled by a power of two. It stops where a
// count or a step would leave its bounds.
func (l *lattice) refine(norm []float32, want int) {
	if want <= 0 {
		return
	}
	for range maxRefines {
		far := 0
		for _, x := range norm {
			if x >= 0.5 || x <= -0.5 {
				far++
			}
		}
		if far >= want {
			return
		}
		var big int32
		for _, c := range l.counts {
			big = max(big, c, -c)
		}
		if 2*int64(big) > maxLatticeCount || slices.Min(l.steps) < 0x1p-125 {
			return
		}
		for t := range l.steps {
			l.steps[t] /= 2
		}
		for i := range l.counts {
			l.counts[i] *= 2
		}
		for i := range norm {
			norm[i] *= 2
		}
	}
}

// stepRatios returns the power of two by which counts at steps from
// are multiplied to be counts at the finer or equal steps to, for each
// tensor, or false if a ratio is not a power of two in [1, 2^24].
func stepRatios(dst []int64, from, to []float32) ([]int64, bool) {
	dst = dst[:0]
	for t := range to {
		r := float64(from[t]) / float64(to[t])
		f, e := math.Frexp(r)
		if f != 0.5 || e < 1 || e > 25 {
			return nil, false
		}
		dst = append(dst, int64(1)<<(e-1))
	}
	return dst, true
}

// rebuild recomputes the model's coordinates idx from their counts.
func (l *lattice) rebuild(model []float32, idx []int32) {
	t, end := 0, l.tensors[0]
	for _, i := range idx {
		for int(i) >= end {
			t++
			end += l.tensors[t]
		}
		model[i] = latticeValue(l.init[i], l.steps[t], l.counts[i])
	}
}

// latticeSteps returns the step of each tensor: factor times the mean
// magnitude of the tensor's selected coordinates of diff (of all its
// coordinates if none is selected; of the model's if the tensor has not
// changed), or nil if diff is zero. Every step is a positive normal
// float32, small enough that maxLatticeCount steps stay finite.
func latticeSteps(diff []float32, idx []int32, tensors []int, factor float64) ([]float32, error) {
	sel := make([]float64, len(tensors))
	cnt := make([]int, len(tensors))
	t, end := 0, tensors[0]
	for _, i := range idx {
		for int(i) >= end {
			t++
			end += tensors[t]
		}
		sel[t] += math.Abs(float64(diff[i]))
		cnt[t]++
	}
	var total float64
	means := make([]float64, len(tensors))
	off := 0
	for t, z := range tensors {
		if cnt[t] > 0 && sel[t] > 0 {
			means[t] = sel[t] / float64(cnt[t])
		} else {
			var a float64
			for _, x := range diff[off : off+z] {
				a += math.Abs(float64(x))
			}
			means[t] = a / float64(z)
		}
		total += sel[t]
		off += z
	}
	if total == 0 {
		return nil, nil
	}
	// A tensor that did not change (the first layer, say, while a quorum
	// holds it) takes the largest step of the others: its own changes, when
	// they come, are not known yet, and training's changes shrink. With the
	// smallest, the main job with quorum=24,quorum-by=input downloaded
	// 5.8 MiB instead of 5.0.
	largest := 0.0
	for _, m := range means {
		if m > 0 {
			largest = max(largest, m)
		}
	}
	steps := make([]float32, len(tensors))
	for t, m := range means {
		if m == 0 {
			m = largest
		}
		x := factor * m
		if x > math.MaxFloat32/(2*maxLatticeCount) {
			return nil, fmt.Errorf("%w: lattice step %g of tensor %d is too large for float32", ErrNonFinite, x, t)
		}
		steps[t] = float32(max(x, 0x1p-126))
	}
	return steps, nil
}

// sync returns what a client holding version have needs: one lattice
// message to the current version, from have when the kept deltas reach
// back to it (their composition), otherwise from version 0 (the counts
// themselves), whichever is smaller; nothing if have is current. A
// client cannot make it work without bound: every have out of reach
// shares the one cached sync from version 0, and once maxSyncCache haves
// are cached the others get it too (so with more than maxSyncCache kept
// deltas, which syncs are compositions depends on the requests served
// before: two coordinators may send different bytes, never a different
// model). The bytes may be shared: callers must not modify them. It is safe for
// concurrent use with other calls of sync.
func (s *ServerEncoder) sync(have int) []byte {
	if have == s.version {
		return nil
	}
	if lag := s.version - have; have <= 0 || lag <= 0 || lag > len(s.history) {
		// Out of reach of the kept deltas: every such have shares the
		// one cached sync from version 0, so that a client cannot fill
		// the cache with copies of it.
		have = 0
		if s.version == 0 {
			return nil
		}
	}
	l := s.lat
	l.mu.Lock()
	b, ok := l.cache[have]
	full := len(l.cache) >= maxSyncCache
	l.mu.Unlock()
	if ok {
		return b
	}
	if full && have > 0 {
		// At most maxSyncCache compositions per version, however many
		// haves clients name: the others get the sync from version 0.
		return s.sync(0)
	}
	n := len(s.model)
	var msg []byte
	if have > 0 {
		msg = s.compose(have)
		if sm := s.composeSeeded(have); sm != nil && (msg == nil || len(sm) < len(msg)) && len(sm) < len(s.sync(0)) {
			msg = sm
		}
		if msg == nil {
			msg = s.sync(0)
		}
	}
	if msg == nil {
		idx := make([]int32, 0, l.nnz)
		vals := make([]int32, 0, l.nnz)
		for i, c := range l.counts {
			if c != 0 {
				idx = append(idx, int32(i))
				vals = append(vals, c)
			}
		}
		msg = appendLatticeMessage(nil, n, 0, s.version, l.tensors, l.steps, idx, vals)
		if sm := s.composeSeeded(0); sm != nil && len(sm) < len(msg) {
			msg = sm
		}
	}
	l.mu.Lock()
	if len(l.cache) < maxSyncCache || have == 0 { // the sync from 0 is always kept
		if l.cache == nil {
			l.cache = make(map[int][]byte)
		}
		l.cache[have] = msg
	}
	l.mu.Unlock()
	return msg
}

// compose returns the composition of the kept deltas from have to the
// current version as one message from have, or nil if it would not be
// smaller than the counts themselves (a message from version 0).
func (s *ServerEncoder) compose(have int) []byte {
	l, n := s.lat, len(s.model)
	sp, _ := scratchPool.Get().(*[]int64)
	if sp == nil || len(*sp) != n {
		b := make([]int64, n)
		sp = &b
	}
	sum := *sp
	defer scratchPool.Put(sp)
	var d Decoder
	var touched []int32
	var ratios []int64
	lim := Limits{MaxParams: n}.norm()
	clean := func() {
		for _, i := range touched {
			sum[i] = 0
		}
	}
	for _, m := range s.history[len(s.history)-(s.version-have):] {
		h, err := parse(m, lim, false)
		if err != nil {
			panic(fmt.Sprintf("gradient: kept lattice delta refused: %v", err))
		}
		_, steps, idx, vals, err := d.lattice(&h, m)
		if err != nil {
			panic(fmt.Sprintf("gradient: kept lattice delta refused: %v", err))
		}
		if len(idx) == 0 {
			continue
		}
		var ok bool
		if ratios, ok = stepRatios(ratios, steps, l.steps); !ok {
			clean()
			return nil
		}
		t, end := 0, l.tensors[0]
		for j, i := range idx {
			for int(i) >= end {
				t++
				end += l.tensors[t]
			}
			if sum[i] == 0 {
				touched = append(touched, i)
			}
			sum[i] += int64(vals[j]) * ratios[t]
		}
		if len(touched) >= l.nnz {
			// Not smaller than the counts: stop early.
			clean()
			return nil
		}
	}
	slices.Sort(touched)
	idx := make([]int32, 0, len(touched))
	vals := make([]int32, 0, len(touched))
	for _, i := range touched {
		v := sum[i]
		sum[i] = 0
		switch {
		case v == 0:
		case v > 2*maxLatticeCount || v < -2*maxLatticeCount:
			clean()
			return nil
		default:
			idx = append(idx, i)
			vals = append(vals, int32(v))
		}
	}
	return appendLatticeMessage(nil, n, have, s.version, l.tensors, l.steps, idx, vals)
}

// appendLatticeMessage appends a lattice message from version base to
// version to: the tensor table (no steps before the model first
// changed), the sorted indices idx and their nonzero count changes vals.
func appendLatticeMessage(dst []byte, n, base, to int, tensors []int, steps []float32, idx, vals []int32) []byte {
	var sec []byte
	// Indices.
	var isym []uint8
	var u32 []uint32
	sec, ic := appendAutoIndices(sec, idx, n, &isym, &u32)
	il := len(sec)
	sec = appendLatticeTable(sec, tensors, steps)
	tl := len(sec) - il
	sec, vc := appendLatticeValues(sec, vals, 1)
	h := Header{Selection: TopK, Format: FormatLattice, Bits: 32, N: n, K: len(idx), Round: to, Base: base}
	return appendLatticeSections(dst, &h, sec, ic, il, tl, vc)
}

// appendLatticeSections appends a lattice message: h, given its
// selection and counts, with the three sections of sec (the indices or
// keys, il bytes coded ic; the tensor table, tl bytes; the values, the
// rest, coded vc), then sec and the checksum.
func appendLatticeSections(dst []byte, h *Header, sec []byte, ic Coding, il, tl int, vc Coding) []byte {
	h.Sections[0] = Section{Kind: SectionIndices, Coding: ic, Length: il}
	h.Sections[1] = Section{Kind: SectionScales, Coding: CodingRaw, Length: tl}
	h.Sections[2] = Section{Kind: SectionValues, Coding: vc, Length: len(sec) - il - tl}
	h.NumSections = 3
	start := len(dst)
	dst = appendHeader(dst, h)
	dst = append(dst, sec...)
	return binary.LittleEndian.AppendUint32(dst, crc32.Checksum(dst[start:], castagnoli))
}

// appendLatticeTable appends the tensor table: its count (0 without
// steps), sizes, steps.
func appendLatticeTable(sec []byte, tensors []int, steps []float32) []byte {
	if steps == nil {
		return binary.AppendUvarint(sec, 0)
	}
	sec = binary.AppendUvarint(sec, uint64(len(tensors)))
	for _, z := range tensors {
		sec = binary.AppendUvarint(sec, uint64(z))
	}
	for _, x := range steps {
		sec = binary.LittleEndian.AppendUint32(sec, math.Float32bits(x))
	}
	return sec
}

// appendLatticeValues appends count changes as zigzag varints, or as a
// Huffman code of the symbols zigzag(v) − off with the rest as varints,
// whichever is smaller, and returns the coding (see latticeValues).
func appendLatticeValues(sec []byte, vals []int32, off uint64) ([]byte, Coding) {
	at := len(sec)
	for _, v := range vals {
		sec = binary.AppendUvarint(sec, zigzag(v))
	}
	if len(vals) == 0 {
		return sec, CodingRaw
	}
	raw := len(sec) - at
	sym := make([]uint8, len(vals))
	var rest []byte
	for j, v := range vals {
		z := zigzag(v) - off
		if z < 255 {
			sym[j] = uint8(z)
		} else {
			sym[j] = 255
			rest = binary.AppendUvarint(rest, z-255)
		}
	}
	huff := compress.AppendHuffman(nil, sym)
	if len(huff)+len(rest) < raw {
		return append(append(sec[:at], huff...), rest...), CodingHuffman
	}
	return sec, CodingRaw
}

func zigzag(v int32) uint64   { return uint64(uint32(v<<1) ^ uint32(v>>31)) }
func unzigzag(z uint64) int64 { return int64(z>>1) ^ -int64(z&1) }

// lattice decodes a lattice message that parse accepted: its tensor table
// (nil without steps) and its indices and count changes, in d's scratch.
// It checks the table (sizes splitting n, steps positive, normal and
// small enough), the indices, and every change nonzero and at most
// 2·maxLatticeCount in magnitude.
func (d *Decoder) lattice(h *Header, src []byte) (tensors []int, steps []float32, idx, vals []int32, err error) {
	if h.Format != FormatLattice || h.Selection != TopK {
		return nil, nil, nil, nil, fmt.Errorf("%w: a %s %s message where an explicit lattice message was expected", ErrCorrupt, h.Selection, h.Format)
	}
	if tensors, steps, err = latticeTable(h, src); err != nil {
		return nil, nil, nil, nil, err
	}
	idx = grow(&d.idx, h.K)
	if err := d.indices(idx, h, src); err != nil {
		return nil, nil, nil, nil, err
	}
	if vals, err = d.latticeValues(h, src, 1); err != nil {
		return nil, nil, nil, nil, err
	}
	return tensors, steps, idx, vals, nil
}

// latticeTable decodes and checks the tensor table of a lattice message
// that parse accepted: sizes splitting n, steps positive, normal and
// small enough; nil, nil for a message without steps (which must then
// change no count).
func latticeTable(h *Header, src []byte) (tensors []int, steps []float32, err error) {
	_, tb := sectionBytes(h, src, SectionScales)
	nt, m := binary.Uvarint(tb)
	if m <= 0 || nt > maxLatticeTensors || nt > uint64(h.N) {
		return nil, nil, fmt.Errorf("%w: lattice tensor table: bad count", ErrCorrupt)
	}
	pos := m
	if nt == 0 {
		if pos != len(tb) || h.K != 0 {
			return nil, nil, fmt.Errorf("%w: a lattice message without steps changes %d counts", ErrCorrupt, h.K)
		}
		return nil, nil, nil
	}
	// Each tensor takes at least 5 bytes: bound before allocating.
	if uint64(len(tb)-pos) < 5*nt {
		return nil, nil, fmt.Errorf("%w: lattice tensor table of %d bytes for %d tensors", ErrCorrupt, len(tb), nt)
	}
	tensors = make([]int, nt)
	for t := range tensors {
		z, m := binary.Uvarint(tb[pos:])
		if m <= 0 || z > uint64(h.N) {
			return nil, nil, fmt.Errorf("%w: lattice tensor table: bad size of tensor %d", ErrCorrupt, t)
		}
		tensors[t] = int(z)
		pos += m
	}
	if err := checkTensors(tensors, h.N); err != nil {
		return nil, nil, fmt.Errorf("lattice tensor table: %w", err)
	}
	if len(tb)-pos != 4*int(nt) {
		return nil, nil, fmt.Errorf("%w: lattice tensor table: %d bytes of steps for %d tensors", ErrCorrupt, len(tb)-pos, nt)
	}
	steps = make([]float32, nt)
	for t := range steps {
		x := math.Float32frombits(binary.LittleEndian.Uint32(tb[pos+4*t:]))
		if !(x >= 0x1p-126) || float64(x) > math.MaxFloat32/(2*maxLatticeCount) {
			return nil, nil, fmt.Errorf("%w: lattice step %g of tensor %d", ErrCorrupt, x, t)
		}
		steps[t] = x
	}
	return tensors, steps, nil
}

// latticeValues decodes the h.K count changes of a lattice message, in
// d's scratch: zigzag varints, or a Huffman code of the symbols
// zigzag(v) − off (255: the rest follows as a varint). An explicit
// message (off 1) has no zero change; a seeded one (off 0) may. Every
// change is at most 2·maxLatticeCount in magnitude.
func (d *Decoder) latticeValues(h *Header, src []byte, off uint64) ([]int32, error) {
	vals := grow(&d.lval, h.K)
	s, vb := sectionBytes(h, src, SectionValues)
	var rest []byte
	var sym []uint8
	if s.Coding == CodingHuffman {
		sym = grow(&d.sym, h.K)
		used, err := compress.DecodeHuffman(sym, vb)
		if err != nil {
			return nil, sectionError(s.Kind, s.Coding, err)
		}
		rest = vb[used:]
	} else {
		rest = vb
	}
	for j := range vals {
		var z uint64
		if sym == nil || sym[j] == 255 {
			x, m := binary.Uvarint(rest)
			if m <= 0 || x > 1<<40 {
				return nil, fmt.Errorf("%w: lattice value %d: bad varint", ErrCorrupt, j)
			}
			rest = rest[m:]
			z = x
			if sym != nil {
				z += 255 + off
			}
		} else {
			z = uint64(sym[j]) + off
		}
		v := unzigzag(z)
		if (v == 0 && off != 0) || v > 2*maxLatticeCount || v < -2*maxLatticeCount {
			return nil, fmt.Errorf("%w: lattice value %d is %d", ErrCorrupt, j, v)
		}
		vals[j] = int32(v)
	}
	if len(rest) != 0 {
		return nil, fmt.Errorf("%w: values section (lattice): %d trailing bytes", ErrCorrupt, len(rest))
	}
	return vals, nil
}

func isFinite32(x float32) bool { return math.Float32bits(x)&0x7f800000 != 0x7f800000 }

// restoreLattice is RestoreServerEncoder for the lattice codec: st must
// hold the initial model, the tensor table, the steps and the counts, and
// Model must be what they give, bit for bit; the kept deltas must be a
// chain of lattice messages with the same table that ends at st.Version.
func restoreLattice(spec Spec, st ServerState, maxLag int) (*ServerEncoder, error) {
	s, err := NewServerEncoder(spec, st.Init, maxLag)
	if err != nil {
		return nil, err
	}
	n, l := len(st.Init), s.lat
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: lattice server state: %s", ErrCorrupt, fmt.Sprintf(format, a...))
	}
	if st.Version < 0 || st.Version > math.MaxUint32 || len(st.History) > st.Version {
		return nil, bad("version %d with %d deltas", st.Version, len(st.History))
	}
	if len(st.Model) != n || len(st.Counts) != n {
		return nil, bad("model of %d, counts of %d, initial model of %d", len(st.Model), len(st.Counts), n)
	}
	if err := checkTensors(st.Tensors, n); err != nil {
		return nil, fmt.Errorf("lattice server state: %w", err)
	}
	l.tensors = slices.Clone(st.Tensors)
	if st.Steps != nil {
		if len(st.Steps) != len(st.Tensors) {
			return nil, bad("%d steps for %d tensors", len(st.Steps), len(st.Tensors))
		}
		for t, x := range st.Steps {
			if !(x >= 0x1p-126) || float64(x) > math.MaxFloat32/(2*maxLatticeCount) {
				return nil, bad("step %g of tensor %d", x, t)
			}
		}
		l.steps = slices.Clone(st.Steps)
	}
	all := make([]int32, 0, n)
	for i, c := range st.Counts {
		if c > maxLatticeCount || c < -maxLatticeCount || (c != 0 && l.steps == nil) {
			return nil, bad("count %d of coordinate %d", c, i)
		}
		if c != 0 {
			l.nnz++
		}
		all = append(all, int32(i))
	}
	copy(l.counts, st.Counts)
	if l.steps != nil {
		l.rebuild(s.model, all)
	}
	for i, x := range s.model {
		if math.Float32bits(x) != math.Float32bits(st.Model[i]) {
			return nil, bad("the model differs from init + step·counts at coordinate %d", i)
		}
	}
	if len(st.Keys) != len(st.Seeded) || len(st.Keys) != len(st.Sizes) || len(st.Keys) > st.Version || (len(st.Keys) > 0 && !spec.Seeded) {
		return nil, bad("%d keys, %d lengths and %d seeded flags at version %d (support=seeded: %v)", len(st.Keys), len(st.Sizes), len(st.Seeded), st.Version, spec.Seeded)
	}
	for _, k := range st.Sizes {
		if k < 0 || int(k) > n {
			return nil, bad("support length %d of a model of %d", k, n)
		}
	}
	if spec.Seeded {
		// (Whether a version really moved counts on its support only is
		// checked again whenever a seeded sync is composed.)
		keep := max(len(st.Keys)-maxSeededKeys, 0)
		l.keys, l.sizes, l.seeded = slices.Clone(st.Keys[keep:]), slices.Clone(st.Sizes[keep:]), slices.Clone(st.Seeded[keep:])
	}
	hist := st.History[len(st.History)-min(len(st.History), maxLag):]
	v := st.Version - len(hist)
	lim := Limits{MaxParams: n}.norm()
	for _, m := range hist {
		h, err := parse(m, lim, false)
		if err != nil {
			return nil, fmt.Errorf("lattice server state: delta to version %d: %w", v+1, err)
		}
		if h.N != n || h.Base != v || h.Round != v+1 {
			return nil, bad("delta from version %d to %d for %d parameters, want %d to %d for %d", h.Base, h.Round, h.N, v, v+1, n)
		}
		tensors, steps, _, _, err := s.dec.lattice(&h, m)
		if err != nil {
			return nil, fmt.Errorf("lattice server state: delta to version %d: %w", v+1, err)
		}
		if steps != nil {
			// (Without steps the state has never changed, and no delta
			// has steps: composing one would index the missing ones.)
			if _, ok := stepRatios(nil, steps, l.steps); !ok || l.steps == nil || !slices.Equal(tensors, l.tensors) {
				return nil, bad("delta to version %d has a tensor table the current one does not refine", v+1)
			}
		}
		s.history = append(s.history, slices.Clone(m))
		v++
	}
	s.version = st.Version
	return s, nil
}
