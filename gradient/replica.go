package gradient

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math"
	"slices"
)

// Replica is a client's copy of the model a ServerEncoder's clients hold:
// it starts at version 0, the initial model, and applies every kind of
// download message: deltas of the compressed codecs, lattice syncs (from
// the version it holds or from version 0) and whole models. With the
// lattice codec it keeps the counts, so that any later sync applies and
// the model equals the server's Model() bit for bit whatever path it took.
//
// Memory: the initial model and the model (8 bytes per parameter), plus
// 4 per parameter with the lattice codec. A Replica is not safe for
// concurrent use.
type Replica struct {
	init    []float32
	model   []float32
	version int
	// onLattice reports that model is init + steps·counts (counts nil
	// means all zero); false after a whole model or another codec's delta,
	// when only a sync from version 0 applies.
	onLattice bool
	counts    []int32
	tensors   []int
	steps     []float32
	dec       Decoder
	next      []int32 // scratch: new counts of a sync's indices
	// supports rebuilds a seeded sync's supports (nil: seeded syncs are
	// refused); bm, sup and uidx are its scratch (the union's bitmap, one
	// support, the union's indices).
	supports SupportFunc
	bm       []uint64
	sup      []int32
	uidx     []int32
}

// SetSupportFunc sets the function that rebuilds a support from its key,
// which the replica needs to apply seeded lattice syncs (support=seeded):
// the same as the server's. Without it a seeded sync is refused.
func (r *Replica) SetSupportFunc(f SupportFunc) { r.supports = f }

// NewReplica returns a Replica holding version 0, a copy of init (the
// run's initial model, which a client computes from the run's seed).
func NewReplica(init []float32) (*Replica, error) {
	if len(init) < 1 || len(init) > math.MaxInt32 {
		return nil, fmt.Errorf("%w: model length %d out of [1, 2^31)", ErrLength, len(init))
	}
	if !finite32(init) {
		return nil, fmt.Errorf("%w: initial model holds NaN or Inf", ErrNonFinite)
	}
	return &Replica{init: slices.Clone(init), model: slices.Clone(init), onLattice: true}, nil
}

// Model returns the model the replica holds. The slice is the replica's
// own: read it, do not keep it across Apply.
func (r *Replica) Model() []float32 { return r.model }

// Version returns the version of the model the replica holds.
func (r *Replica) Version() int { return r.version }

// Apply applies a download stream (what ServerEncoder.AppendUpdate wrote,
// possibly several messages) and returns the version the replica holds
// afterwards. A delta must start from the version held (ErrBase
// otherwise), except a lattice sync from version 0, which starts from the
// initial model; a whole model replaces the model. A lattice sync must
// be the only message of its stream (ErrCorrupt otherwise). Each message is
// applied only once it is decoded and checked completely (indices, the
// tensor table, counts within bounds, values finite), so that on error
// the replica holds the returned version intact.
func (r *Replica) Apply(src []byte, limits Limits) (int, error) {
	lim := limits.norm()
	for first := true; len(src) > 0; first = false {
		h, err := parse(src, lim, true)
		if err != nil {
			return r.version, err
		}
		msg := src[:h.Size]
		src = src[h.Size:]
		if h.Format == FormatLattice && (!first || len(src) > 0) {
			// One sync leads anywhere: a stream of them would only make
			// the replica redo O(n) work (reset, rescale) per message.
			return r.version, fmt.Errorf("%w: a lattice sync in a stream of several messages", ErrCorrupt)
		}
		if h.N != len(r.model) {
			return r.version, fmt.Errorf("%w: message for a model of %d parameters, replica has %d", ErrLength, h.N, len(r.model))
		}
		switch {
		case h.Format == FormatLattice:
			err = r.applyLattice(&h, msg)
		case h.Full():
			r.version, err = r.dec.apply(r.model, r.version, msg, lim)
			if err == nil {
				r.onLattice, r.counts, r.steps, r.tensors = false, nil, nil, nil
			}
		default:
			var v int
			if v, err = r.dec.apply(r.model, r.version, msg, lim); err == nil {
				r.version = v
				r.onLattice, r.counts, r.steps, r.tensors = false, nil, nil, nil
			}
		}
		if err != nil {
			return r.version, err
		}
	}
	return r.version, nil
}

func (r *Replica) applyLattice(h *Header, msg []byte) error {
	if h.Selection == RandK {
		return r.applySeeded(h, msg)
	}
	tensors, steps, idx, vals, err := r.dec.lattice(h, msg)
	if err != nil {
		return err
	}
	return r.applyCounts(h, tensors, steps, idx, vals)
}

// applySeeded applies a seeded sync: it rebuilds the union of the keys'
// supports (bounded by union before any support is rebuilt past the
// bound) and applies the count changes over it as an explicit sync's.
func (r *Replica) applySeeded(h *Header, msg []byte) error {
	tensors, steps, k, keys, vals, err := r.dec.seeded(h, msg)
	if err != nil {
		return err
	}
	if r.supports == nil {
		return fmt.Errorf("%w: a seeded lattice sync, and the replica has no support func (SetSupportFunc)", ErrSpec)
	}
	if h.Base != 0 && (h.Base != r.version || !r.onLattice) {
		return fmt.Errorf("%w: lattice sync from version %d, replica holds version %d (on the lattice: %v)", ErrBase, h.Base, r.version, r.onLattice)
	}
	n := len(r.model)
	bm := grow(&r.bm, (n+63)/64)
	size, sup, err := union(r.supports, keys, k, n, bm, r.sup)
	r.sup = sup
	if err != nil || size != h.K {
		clear(bm)
		if err != nil {
			return err
		}
		return fmt.Errorf("%w: a seeded lattice sync of %d values for a union of %d coordinates", ErrCorrupt, h.K, size)
	}
	idx := bitmapIndices(grow(&r.uidx, size)[:0], bm)
	return r.applyCounts(h, tensors, steps, idx, vals)
}

// applyCounts applies the count changes vals of the sorted coordinates idx
// of a lattice sync with the tensor table tensors, steps (nil: none).
func (r *Replica) applyCounts(h *Header, tensors []int, steps []float32, idx, vals []int32) error {
	fresh := h.Base == 0
	switch {
	case h.Round <= h.Base:
		return fmt.Errorf("%w: lattice sync from version %d to %d", ErrCorrupt, h.Base, h.Round)
	case !fresh && (h.Base != r.version || !r.onLattice):
		return fmt.Errorf("%w: lattice sync from version %d, replica holds version %d (on the lattice: %v)", ErrBase, h.Base, r.version, r.onLattice)
	}
	// A sync at finer steps than the replica's: its counts are scaled to
	// them first (the model does not change).
	// The table must be the replica's (checked first: stepRatios indexes
	// both steps by the sync's tensors).
	var ratios []int64
	if !fresh && r.steps != nil && steps != nil && !slices.Equal(tensors, r.tensors) {
		return fmt.Errorf("%w: lattice sync with a tensor table that does not refine the replica's", ErrCorrupt)
	}
	if !fresh && r.steps != nil && steps != nil && !slices.Equal(steps, r.steps) {
		var ok bool
		if ratios, ok = stepRatios(nil, r.steps, steps); !ok {
			return fmt.Errorf("%w: lattice sync with a tensor table that does not refine the replica's", ErrCorrupt)
		}
		if r.counts != nil {
			t, end := 0, tensors[0]
			for i, c := range r.counts {
				for i >= end {
					t++
					end += tensors[t]
				}
				if x := int64(c) * ratios[t]; x > maxLatticeCount || x < -maxLatticeCount {
					return fmt.Errorf("%w: lattice count %d at coordinate %d at the finer steps", ErrCorrupt, x, i)
				}
			}
		}
	}
	if steps == nil && fresh {
		// Nothing has changed since the initial model.
		tensors, steps = nil, nil
	} else if steps == nil {
		tensors, steps = r.tensors, r.steps
	}
	// Check every new count and value before changing anything.
	next := grow(&r.next, len(idx))
	t, end := 0, 0
	if steps != nil {
		end = tensors[0]
	}
	for j, i := range idx {
		c := int64(vals[j])
		for int(i) >= end {
			t++
			end += tensors[t]
		}
		if !fresh && r.counts != nil {
			old := int64(r.counts[i])
			if ratios != nil {
				old *= ratios[t]
			}
			c += old
		}
		if c > maxLatticeCount || c < -maxLatticeCount {
			return fmt.Errorf("%w: lattice count %d at coordinate %d", ErrCorrupt, c, i)
		}
		if !isFinite32(latticeValue(r.init[i], steps[t], int32(c))) {
			return fmt.Errorf("%w: lattice value at coordinate %d", ErrNonFinite, i)
		}
		next[j] = int32(c)
	}
	if fresh {
		copy(r.model, r.init)
		if r.counts != nil {
			clear(r.counts)
		}
	}
	if ratios != nil && r.counts != nil {
		t, end = 0, tensors[0]
		for i := range r.counts {
			for i >= end {
				t++
				end += tensors[t]
			}
			r.counts[i] *= int32(ratios[t])
		}
	}
	if len(idx) > 0 && r.counts == nil {
		r.counts = make([]int32, len(r.model))
	}
	for j, i := range idx {
		r.counts[i] = next[j]
	}
	r.tensors, r.steps = tensors, steps
	if steps != nil {
		t, end = 0, tensors[0]
		for _, i := range idx {
			for int(i) >= end {
				t++
				end += tensors[t]
			}
			r.model[i] = latticeValue(r.init[i], steps[t], r.counts[i])
		}
	}
	r.version, r.onLattice = h.Round, true
	return nil
}

// The replica's state file: magic, format version, n, version, a flag
// byte (bit 0: on the lattice with steps), then either the tensor table
// and the counts (zigzag varints), or the model (little-endian float32),
// and a CRC-32C of everything before it.
const replicaMagic = "FZRP"

// AppendBinary appends the replica's state, which ReadReplica reads back
// given the same initial model.
func (r *Replica) AppendBinary(dst []byte) []byte {
	start := len(dst)
	dst = append(dst, replicaMagic...)
	dst = append(dst, 1)
	dst = binary.AppendUvarint(dst, uint64(len(r.model)))
	dst = binary.AppendUvarint(dst, uint64(r.version))
	if r.onLattice && r.steps != nil {
		dst = append(dst, 1)
		dst = binary.AppendUvarint(dst, uint64(len(r.tensors)))
		for _, z := range r.tensors {
			dst = binary.AppendUvarint(dst, uint64(z))
		}
		for _, x := range r.steps {
			dst = binary.LittleEndian.AppendUint32(dst, math.Float32bits(x))
		}
		for i := range r.model {
			var c int32
			if r.counts != nil {
				c = r.counts[i]
			}
			dst = binary.AppendUvarint(dst, uint64(uint32(c<<1)^uint32(c>>31)))
		}
	} else {
		dst = append(dst, 0)
		dst = AppendFloat32s(dst, r.model)
	}
	return binary.LittleEndian.AppendUint32(dst, crc32.Checksum(dst[start:], castagnoli))
}

// ReadReplica reads a replica's state written by AppendBinary for the
// initial model init. It checks everything as bytes from disk: the
// checksum, the sizes (bounded by limits.MaxParams and the input before
// anything is allocated), the tensor table, the counts and the values.
func ReadReplica(init []float32, b []byte, limits Limits) (*Replica, error) {
	lim := limits.norm()
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: replica state: %s", ErrCorrupt, fmt.Sprintf(format, a...))
	}
	if len(b) < len(replicaMagic)+2+crcSize || string(b[:4]) != replicaMagic {
		return nil, fmt.Errorf("%w: replica state", ErrMagic)
	}
	if b[4] != 1 {
		return nil, fmt.Errorf("%w: replica state format %d", ErrVersion, b[4])
	}
	body := b[:len(b)-crcSize]
	if crc32.Checksum(body, castagnoli) != binary.LittleEndian.Uint32(b[len(b)-crcSize:]) {
		return nil, fmt.Errorf("%w: replica state", ErrChecksum)
	}
	pos := 5
	next := func(what string, maxv uint64) (int, error) {
		v, m := binary.Uvarint(body[pos:])
		if m <= 0 || v > maxv {
			return 0, bad("%s", what)
		}
		pos += m
		return int(v), nil
	}
	n, err := next("length", uint64(lim.MaxParams))
	if err != nil {
		return nil, err
	}
	if n != len(init) {
		return nil, fmt.Errorf("%w: replica state of %d parameters, initial model has %d", ErrLength, n, len(init))
	}
	r, err := NewReplica(init)
	if err != nil {
		return nil, err
	}
	if r.version, err = next("version", math.MaxUint32); err != nil {
		return nil, err
	}
	if pos >= len(body) {
		return nil, bad("no flags")
	}
	flags := body[pos]
	pos++
	switch flags {
	case 0:
		if len(body)-pos != 4*n {
			return nil, bad("%d bytes of model for %d parameters", len(body)-pos, n)
		}
		if _, err := DecodeFloat32s(r.model, body[pos:]); err != nil {
			return nil, fmt.Errorf("replica state: %w", err)
		}
		r.onLattice = r.version == 0 && slices.Equal(r.model, r.init)
		return r, nil
	case 1:
	default:
		return nil, bad("flags %#x", flags)
	}
	nt, err := next("tensor count", maxLatticeTensors)
	if err != nil {
		return nil, err
	}
	if nt < 1 || len(body)-pos < 5*nt+n {
		return nil, bad("%d tensors in %d bytes", nt, len(body)-pos)
	}
	r.tensors = make([]int, nt)
	for t := range r.tensors {
		if r.tensors[t], err = next("tensor size", uint64(n)); err != nil {
			return nil, err
		}
	}
	if err := checkTensors(r.tensors, n); err != nil {
		return nil, fmt.Errorf("replica state: %w", err)
	}
	if len(body)-pos < 4*nt {
		return nil, bad("steps")
	}
	r.steps = make([]float32, nt)
	for t := range r.steps {
		x := math.Float32frombits(binary.LittleEndian.Uint32(body[pos:]))
		pos += 4
		if !(x >= 0x1p-126) || float64(x) > math.MaxFloat32/(2*maxLatticeCount) {
			return nil, bad("step %g of tensor %d", x, t)
		}
		r.steps[t] = x
	}
	r.counts = make([]int32, n)
	t, end := 0, r.tensors[0]
	for i := range r.counts {
		z, err := next("count", 1<<32-1)
		if err != nil {
			return nil, err
		}
		c := unzigzag(uint64(z))
		if c > maxLatticeCount || c < -maxLatticeCount {
			return nil, bad("count %d of coordinate %d", c, i)
		}
		for i >= end {
			t++
			end += r.tensors[t]
		}
		r.counts[i] = int32(c)
		r.model[i] = latticeValue(r.init[i], r.steps[t], r.counts[i])
		if !isFinite32(r.model[i]) {
			return nil, fmt.Errorf("%w: replica state: value at coordinate %d", ErrNonFinite, i)
		}
	}
	if pos != len(body) {
		return nil, bad("%d trailing bytes", len(body)-pos)
	}
	return r, nil
}
