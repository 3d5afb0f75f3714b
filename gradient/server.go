package gradient

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math"
	"slices"
	"unsafe"

	"github.com/fedzip/fedzip/compress"
)

// CheckDownload reports whether s can encode the download direction: the
// server has no momentum correction, so a spec with momentum is refused
// (ErrSpec).
func (s Spec) CheckDownload() error {
	if s.Momentum > 0 {
		return fmt.Errorf("%w: momentum=%g: the download direction has no momentum correction", ErrSpec, s.Momentum)
	}
	return nil
}

// CheckUpload reports whether s can encode updates: bits=lattice is a
// download codec only (ErrSpec).
func (s Spec) CheckUpload() error {
	if s.Seeded {
		return fmt.Errorf("%w: support=seeded is a mode of the lattice download codec, not an upload codec", ErrSpec)
	}
	if s.Values == Lattice {
		return fmt.Errorf("%w: bits=lattice is a download codec (the server's model lattice), not an upload codec", ErrSpec)
	}
	return nil
}

// ServerEncoder compresses the download direction, as in Sparse Ternary
// Compression: the coordinator sends clients the compressed change of the
// global model since the version they hold, and keeps a server-side
// residual.
//
// It tracks the model the clients can reconstruct, Model(), which is
// version 0 (the initial model) plus every published delta as decoded.
// Publishing a new global model encodes global − Model(): the part of
// earlier changes that was not sent is still in that difference, so the
// server residual is implicit (global − Model()) and exact, and the spec's
// ef key is not needed. Clients apply the deltas with ApplyDownload and
// hold Model() bit for bit.
//
// It keeps the last MaxLag encoded deltas. A client behind by at most that
// many versions gets them concatenated; a client further behind, or one for
// which the deltas would be larger than the model, gets the full model
// (float32, FlagFull). Memory: 12 bytes per parameter (the model, a scratch
// difference and the decoder's scratch) plus the kept deltas.
//
// A ServerEncoder is not safe for concurrent use.
type ServerEncoder struct {
	spec    Spec
	enc     *Encoder
	model   []float32
	diff    []float32
	version int
	maxLag  int
	history [][]byte // history[i] leads to version - len(history) + 1 + i
	dec     Decoder
	lat     *lattice // the lattice codec's state, nil for other codecs
}

// NewServerEncoder returns a ServerEncoder at version 0 with a copy of
// initial as the model. spec is the codec of the deltas; its ef key is
// implied and momentum is refused. maxLag >= 0 is the number of deltas kept.
func NewServerEncoder(spec Spec, initial []float32, maxLag int) (*ServerEncoder, error) {
	if err := spec.CheckDownload(); err != nil {
		return nil, err
	}
	if maxLag < 0 {
		return nil, fmt.Errorf("%w: maxLag %d < 0", ErrSpec, maxLag)
	}
	if !finite32(initial) {
		return nil, fmt.Errorf("%w: initial model holds NaN or Inf", ErrNonFinite)
	}
	s := &ServerEncoder{
		spec:   spec,
		model:  append([]float32(nil), initial...),
		diff:   make([]float32, len(initial)),
		maxLag: maxLag,
	}
	if spec.Values == Lattice {
		if err := spec.Validate(); err != nil {
			return nil, err
		}
		if len(initial) < 1 || len(initial) > math.MaxInt32 {
			return nil, fmt.Errorf("%w: model length %d out of [1, 2^31)", ErrLength, len(initial))
		}
		s.lat = newLattice(initial)
		return s, nil
	}
	spec.EF = false
	enc, err := NewEncoder(spec, len(initial))
	if err != nil {
		return nil, err
	}
	s.enc = enc
	return s, nil
}

// Version returns the current model version: the number of Publish calls.
func (s *ServerEncoder) Version() int { return s.version }

// Model returns the model at the current version as clients reconstruct
// it. The slice is the encoder's own: read it, do not keep it.
func (s *ServerEncoder) Model() []float32 { return s.model }

// Publish advances to the next version: it encodes global − Model() with
// the spec (random draws from seed), keeps the message, and adds it to
// Model() as clients will. It returns the statistics of the delta.
func (s *ServerEncoder) Publish(global []float32, seed uint64) (Stats, error) {
	if len(global) != len(s.model) {
		return Stats{}, fmt.Errorf("%w: model of %d values, server encoder has %d", ErrLength, len(global), len(s.model))
	}
	if s.version >= math.MaxUint32 {
		return Stats{}, fmt.Errorf("%w: version %d", ErrTooLarge, s.version)
	}
	for i, g := range global {
		s.diff[i] = g - s.model[i]
	}
	if s.lat != nil {
		return s.publishLattice(global, false, 0, nil)
	}
	// Reuse the bytes of the delta that drops out of the history. Encode
	// writes nothing on error, so the history stays intact until it
	// succeeds.
	buf, st, err := s.enc.encode(s.historySlot(), s.diff, s.version+1, s.version, seed)
	if err != nil {
		return st, err
	}
	v, err := s.dec.apply(s.model, s.version, buf, Limits{MaxParams: len(s.model), MaxBytes: len(buf)}.norm())
	if err != nil {
		// The encoder produced what the decoder refuses: a bug.
		panic(fmt.Sprintf("gradient: ServerEncoder: own delta refused: %v", err))
	}
	s.version = v
	s.pushHistory(buf)
	return st, nil
}

// historySlot returns the bytes of the delta that drops out of the
// history when the next is pushed, for reuse (nil if none does).
func (s *ServerEncoder) historySlot() []byte {
	if s.maxLag > 0 && len(s.history) == s.maxLag {
		return s.history[0][:0]
	}
	return nil
}

// pushHistory keeps msg as the delta to the current version.
func (s *ServerEncoder) pushHistory(msg []byte) {
	if s.maxLag == 0 {
		return
	}
	if len(s.history) == s.maxLag {
		copy(s.history, s.history[1:])
		s.history = s.history[:len(s.history)-1]
	}
	s.history = append(s.history, msg)
}

// fullHeader is the header of a full-model message.
func fullHeader(n, version int) Header {
	h := Header{Flags: FlagFull, Selection: Dense, Format: FormatFloat32, Bits: 32, N: n, K: n, Round: version}
	h.Sections[0] = Section{Kind: SectionValues, Coding: CodingRaw, Length: 4 * n}
	h.NumSections = 1
	return h
}

// fullSize is the size of a full-model message for n parameters at the
// largest version: at least that of any full-model message.
func fullSize(n int) int { return fullSizeAt(n, math.MaxUint32) }

// fullSizeAt is the size of a full-model message for n parameters at
// version.
func fullSizeAt(n, version int) int {
	h := fullHeader(n, version)
	var b [64]byte
	return len(appendHeader(b[:0], &h)) + 4*n + crcSize
}

// AppendUpdate appends to dst what a client holding version have needs to
// reach the current version, and reports whether that is the full model:
// nothing if have is current; otherwise the deltas since have,
// concatenated, or the full model if have is not a version of the last
// MaxLag or the deltas would be at least as large.
func (s *ServerEncoder) AppendUpdate(dst []byte, have int) ([]byte, bool) {
	if s.lat != nil {
		return append(dst, s.sync(have)...), false
	}
	if _, full := s.UpdateSize(have); full {
		return s.AppendFull(dst), true
	}
	for _, m := range s.history[len(s.history)-(s.version-have):] {
		dst = append(dst, m...)
	}
	return dst, false
}

// UpdateSize returns the number of bytes AppendUpdate(dst, have) appends
// and whether they are the full model, without writing them: a caller
// that sends whole models in another form (raw float32, say) asks first.
// It does not modify the encoder.
func (s *ServerEncoder) UpdateSize(have int) (int, bool) {
	if s.lat != nil {
		return len(s.sync(have)), false
	}
	if have == s.version {
		return 0, false
	}
	lag := s.version - have
	if have < 0 || lag < 0 || lag > len(s.history) {
		return fullSizeAt(len(s.model), s.version), true
	}
	size := 0
	for _, m := range s.history[len(s.history)-lag:] {
		size += len(m)
	}
	if size >= fullSize(len(s.model)) {
		return fullSizeAt(len(s.model), s.version), true
	}
	return size, false
}

// ServerState is a ServerEncoder's state: what a replicated coordinator
// snapshots so that a restored encoder serves the same bytes and reaches
// the same models as one that never stopped.
type ServerState struct {
	// Version is the current version and Model the model clients hold at
	// it.
	Version int
	Model   []float32
	// History are the kept deltas, oldest first: History[i] leads to
	// version Version − len(History) + 1 + i.
	History [][]byte
	// With the lattice codec only: the initial model, the tensor sizes,
	// the steps (nil until the model first changed) and the counts, from
	// which Model is computed.
	Init    []float32 `json:",omitempty"`
	Tensors []int     `json:",omitempty"`
	Steps   []float32 `json:",omitempty"`
	Counts  []int32   `json:",omitempty"`
	// With support=seeded only: the keys and lengths of the last
	// versions' supports (at most the last maxSeededKeys versions, oldest
	// first: Keys[i] and Sizes[i] are those of version Version − len(Keys)
	// + 1 + i; 0 and 0 for a plain Publish) and whether each version moved
	// counts on its support only (PublishSupport).
	Keys   []uint64 `json:",omitempty"`
	Sizes  []int32  `json:",omitempty"`
	Seeded []bool   `json:",omitempty"`
}

// State returns a copy of the encoder's state, which shares no memory
// with the encoder.
func (s *ServerEncoder) State() ServerState {
	st := ServerState{Version: s.version, Model: append([]float32(nil), s.model...), History: make([][]byte, len(s.history))}
	for i, m := range s.history {
		st.History[i] = append([]byte(nil), m...)
	}
	if l := s.lat; l != nil {
		st.Init, st.Tensors = slices.Clone(l.init), slices.Clone(l.tensors)
		st.Steps, st.Counts = slices.Clone(l.steps), slices.Clone(l.counts)
		st.Keys, st.Sizes, st.Seeded = slices.Clone(l.keys), slices.Clone(l.sizes), slices.Clone(l.seeded)
	}
	return st
}

// RestoreServerEncoder returns a ServerEncoder for spec and maxLag (as
// NewServerEncoder) in state st, which it copies. It checks st as bytes
// from disk: the model finite, every kept delta a complete, valid delta
// for the model's size, and the deltas a chain of consecutive versions
// that ends at st.Version. Deltas beyond maxLag, the oldest, are dropped.
func RestoreServerEncoder(spec Spec, st ServerState, maxLag int) (*ServerEncoder, error) {
	if spec.Values == Lattice {
		return restoreLattice(spec, st, maxLag)
	}
	s, err := NewServerEncoder(spec, st.Model, maxLag)
	if err != nil {
		return nil, err
	}
	n := len(st.Model)
	if st.Version < 0 || st.Version > math.MaxUint32 || len(st.History) > st.Version {
		return nil, fmt.Errorf("%w: server state at version %d with %d deltas", ErrCorrupt, st.Version, len(st.History))
	}
	hist := st.History[len(st.History)-min(len(st.History), maxLag):]
	// Apply the deltas to a scratch model: each must decode in full and
	// lead to the next version.
	scratch := make([]float32, n)
	v := st.Version - len(hist)
	for _, m := range hist {
		h, err := ReadHeader(m, Limits{MaxParams: n, MaxBytes: len(m)})
		if err != nil {
			return nil, fmt.Errorf("server state: delta to version %d: %w", v+1, err)
		}
		if h.Full() || h.N != n || h.Base != v || h.Round != v+1 {
			return nil, fmt.Errorf("%w: server state: delta from version %d to %d for %d parameters, want %d to %d for %d",
				ErrCorrupt, h.Base, h.Round, h.N, v, v+1, n)
		}
		if v, err = s.dec.apply(scratch, v, m, Limits{MaxParams: n, MaxBytes: len(m)}.norm()); err != nil {
			return nil, fmt.Errorf("server state: delta to version %d: %w", h.Round, err)
		}
		s.history = append(s.history, append([]byte(nil), m...))
	}
	s.version = st.Version
	return s, nil
}

// AppendFull appends the full model at the current version: a dense
// float32 message with FlagFull and Round set to the version.
func (s *ServerEncoder) AppendFull(dst []byte) []byte {
	h := fullHeader(len(s.model), s.version)
	start := len(dst)
	dst = appendHeader(dst, &h)
	dst = AppendFloat32s(dst, s.model)
	return binary.LittleEndian.AppendUint32(dst, crc32.Checksum(dst[start:], castagnoli))
}

// ApplyDownload applies a download stream (what AppendUpdate wrote) to
// model, which holds version have, and returns the version it holds
// afterwards. Each delta must apply to the version reached so far
// (ErrBase otherwise); a full model replaces model. The messages are
// applied one by one, each only once it has been decoded and checked
// completely, so that on error model holds the returned version intact.
// It uses a pooled Decoder.
func ApplyDownload(model []float32, have int, src []byte, limits Limits) (int, error) {
	d := decoders.Get().(*Decoder)
	v, err := d.ApplyDownload(model, have, src, limits)
	decoders.Put(d)
	return v, err
}

// ApplyDownload is the package-level ApplyDownload with d's scratch
// memory.
func (d *Decoder) ApplyDownload(model []float32, have int, src []byte, limits Limits) (int, error) {
	return d.apply(model, have, src, limits.norm())
}

func (d *Decoder) apply(model []float32, version int, src []byte, lim Limits) (int, error) {
	for len(src) > 0 {
		h, err := parse(src, lim, true)
		if err != nil {
			return version, err
		}
		msg := src[:h.Size]
		src = src[h.Size:]
		if h.N != len(model) {
			return version, fmt.Errorf("%w: message for a model of %d parameters, model has %d", ErrLength, h.N, len(model))
		}
		if h.Format == FormatLattice {
			return version, errLatticeElsewhere
		}
		if h.Full() {
			v := grow(&d.dense, h.N)
			if err := d.values(v, &h, msg); err != nil {
				return version, err
			}
			copy(model, v)
			version = h.Round
			continue
		}
		if h.Base != version {
			return version, fmt.Errorf("%w: delta from version %d to %d, model is at version %d", ErrBase, h.Base, h.Round, version)
		}
		if h.Selection == Dense {
			v := grow(&d.dense, h.N)
			if err := d.values(v, &h, msg); err != nil {
				return version, err
			}
			for i, x := range v {
				model[i] += x
			}
		} else {
			idx, val, err := d.sparse(&h, msg)
			if err != nil {
				return version, err
			}
			compress.ScatterAdd(model, idx, val)
		}
		version = h.Round
	}
	return version, nil
}

// ModelCRC returns the CRC-32C (Castagnoli) of model as little-endian
// float32: the checksum of the bytes a whole-model download of it would
// carry. A client that rebuilt a model from deltas compares it with the
// one the server announces, which checks the whole chain of deltas and the
// model it started from. On little-endian machines it reads the floats'
// memory directly and allocates nothing.
func ModelCRC(model []float32) uint32 {
	if len(model) == 0 {
		return 0
	}
	if littleEndian {
		return crc32.Checksum(unsafe.Slice((*byte)(unsafe.Pointer(&model[0])), 4*len(model)), castagnoli)
	}
	buf := make([]byte, 0, 4*min(len(model), 1024))
	var crc uint32
	for len(model) > 0 {
		m := min(len(model), 1024)
		buf = buf[:0]
		for _, v := range model[:m] {
			buf = binary.LittleEndian.AppendUint32(buf, math.Float32bits(v))
		}
		crc = crc32.Update(crc, castagnoli, buf)
		model = model[m:]
	}
	return crc
}

// littleEndian reports whether float32s are stored little-endian here.
var littleEndian = func() bool {
	x := uint16(1)
	return *(*byte)(unsafe.Pointer(&x)) == 1
}()
