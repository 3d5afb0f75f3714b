package aggregate

import (
	"encoding"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math"
)

// Server state is saved in a versioned, self-describing, checksummed
// format, little-endian:
//
//	"FZAG"  magic
//	u8      format version (stateVersion; version 1, without the mean
//	        byte of the mean-based strategies, is still read as mean=all)
//	u8 len, bytes   kind: the strategy's name, "dp" or "rdp"
//	...     the kind's payload: parameters (float64 bits, u64), then state
//	        vectors as u8 present, u64 length, length float64 bits
//	u32     CRC-32C of everything before
//
// The payload holds the parameters as well as the state, so that a
// restored strategy continues exactly as the saved one would have. Decoding
// checks every length against the bytes left before allocating.

const (
	stateMagic   = "FZAG"
	stateVersion = 2
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// MarshalState returns the server state of s for a snapshot, or nil for a
// strategy that keeps none (FedAvg and the robust rules).
func MarshalState(s Strategy) ([]byte, error) {
	if m, ok := s.(encoding.BinaryMarshaler); ok {
		return m.MarshalBinary()
	}
	return nil, nil
}

// UnmarshalState restores into s the state MarshalState returned. A
// stateless strategy accepts only empty state.
func UnmarshalState(s Strategy, data []byte) error {
	if u, ok := s.(encoding.BinaryUnmarshaler); ok {
		return u.UnmarshalBinary(data)
	}
	if len(data) != 0 {
		return fmt.Errorf("%w: %s keeps no state, got %d bytes", ErrState, s.Name(), len(data))
	}
	return nil
}

type stateWriter struct{ b []byte }

func newStateWriter(kind string) *stateWriter {
	w := &stateWriter{b: append([]byte(stateMagic), stateVersion, byte(len(kind)))}
	w.b = append(w.b, kind...)
	return w
}

func (w *stateWriter) u64(x uint64)  { w.b = binary.LittleEndian.AppendUint64(w.b, x) }
func (w *stateWriter) f64(x float64) { w.u64(math.Float64bits(x)) }

func (w *stateWriter) bool(x bool) {
	if x {
		w.b = append(w.b, 1)
	} else {
		w.b = append(w.b, 0)
	}
}

// mean writes a mean-based strategy's MeanOver (format version 2 on).
func (w *stateWriter) mean(m MeanOver) { w.b = append(w.b, byte(m)) }

func (w *stateWriter) vec(v []float64) {
	w.bool(v != nil)
	if v == nil {
		return
	}
	w.u64(uint64(len(v)))
	for _, x := range v {
		w.f64(x)
	}
}

func (w *stateWriter) bytes(p []byte) {
	w.u64(uint64(len(p)))
	w.b = append(w.b, p...)
}

func (w *stateWriter) done() []byte {
	return binary.LittleEndian.AppendUint32(w.b, crc32.Checksum(w.b, castagnoli))
}

type stateReader struct {
	b       []byte
	err     error
	version byte
}

// newStateReader checks the frame of data and returns a reader of the
// payload of the given kind.
func newStateReader(data []byte, kind string) *stateReader {
	r := &stateReader{}
	head := len(stateMagic) + 2
	if len(data) < head+4 {
		r.err = fmt.Errorf("%w: %d bytes is too short", ErrState, len(data))
		return r
	}
	body, sum := data[:len(data)-4], binary.LittleEndian.Uint32(data[len(data)-4:])
	switch {
	case string(body[:len(stateMagic)]) != stateMagic:
		r.err = fmt.Errorf("%w: not strategy state (bad magic)", ErrState)
	case crc32.Checksum(body, castagnoli) != sum:
		r.err = fmt.Errorf("%w: checksum mismatch", ErrState)
	case body[len(stateMagic)] < 1 || body[len(stateMagic)] > stateVersion:
		r.err = fmt.Errorf("%w: format version %d, this build reads 1 to %d", ErrState, body[len(stateMagic)], stateVersion)
	}
	if r.err != nil {
		return r
	}
	r.version = body[len(stateMagic)]
	n := int(body[len(stateMagic)+1])
	if len(body) < head+n {
		r.err = fmt.Errorf("%w: truncated kind", ErrState)
		return r
	}
	if got := string(body[head : head+n]); got != kind {
		r.err = fmt.Errorf("%w: state of %q, want %q", ErrState, got, kind)
		return r
	}
	r.b = body[head+n:]
	return r
}

func (r *stateReader) take(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || len(r.b) < n {
		r.err = fmt.Errorf("%w: truncated", ErrState)
		return nil
	}
	p := r.b[:n]
	r.b = r.b[n:]
	return p
}

func (r *stateReader) u64() uint64 {
	if p := r.take(8); p != nil {
		return binary.LittleEndian.Uint64(p)
	}
	return 0
}

func (r *stateReader) f64() float64 { return math.Float64frombits(r.u64()) }

func (r *stateReader) bool() bool {
	p := r.take(1)
	if p == nil {
		return false
	}
	if p[0] > 1 {
		r.err = fmt.Errorf("%w: bad flag %d", ErrState, p[0])
	}
	return p[0] == 1
}

// mean reads what stateWriter.mean wrote; state of format version 1 has
// none and was saved by a strategy that divided by all updates.
func (r *stateReader) mean() MeanOver {
	if r.version < 2 {
		return MeanAll
	}
	p := r.take(1)
	if p == nil {
		return MeanAll
	}
	if m := MeanOver(p[0]); m == MeanAll || m == MeanSenders {
		return m
	}
	r.err = fmt.Errorf("%w: mean %d", ErrState, p[0])
	return MeanAll
}

func (r *stateReader) vec() []float64 {
	if !r.bool() {
		return nil
	}
	n := r.u64()
	if r.err == nil && n > uint64(len(r.b)/8) {
		r.err = fmt.Errorf("%w: vector of %d values in %d bytes", ErrState, n, len(r.b))
	}
	if r.err != nil {
		return nil
	}
	v := make([]float64, n)
	for i := range v {
		v[i] = r.f64()
	}
	return v
}

func (r *stateReader) bytes() []byte {
	n := r.u64()
	if r.err == nil && n > uint64(len(r.b)) {
		r.err = fmt.Errorf("%w: %d nested bytes in %d", ErrState, n, len(r.b))
		return nil
	}
	return r.take(int(n))
}

// finish reports a decoding error or trailing bytes.
func (r *stateReader) finish() error {
	if r.err == nil && len(r.b) != 0 {
		r.err = fmt.Errorf("%w: %d trailing bytes", ErrState, len(r.b))
	}
	return r.err
}

// MarshalBinary saves the parameters and the momentum.
func (s *FedAvgM) MarshalBinary() ([]byte, error) {
	w := newStateWriter(s.Name())
	w.f64(s.LR)
	w.f64(s.Momentum)
	w.mean(s.Mean)
	w.vec(s.v)
	if s.Anneal != 0 {
		// The schedule goes last, and only when there is one, so that
		// the state of a FedAvgM without it is what earlier builds wrote.
		w.u64(uint64(s.Anneal))
		w.f64(s.LREnd)
		w.u64(s.t)
	}
	return w.done(), nil
}

// UnmarshalBinary restores what MarshalBinary saved; on error s is
// unchanged.
func (s *FedAvgM) UnmarshalBinary(data []byte) error {
	r := newStateReader(data, s.Name())
	t := FedAvgM{LR: r.f64(), Momentum: r.f64()}
	t.Mean, t.v = r.mean(), r.vec()
	if r.err == nil && len(r.b) > 0 {
		a := r.u64()
		if a > MaxAnneal {
			a = MaxAnneal + 1 // refused by Validate
		}
		t.Anneal, t.LREnd, t.t = int(a), r.f64(), r.u64()
		if r.err == nil && (t.Anneal == 0 || t.t > uint64(t.Anneal)) {
			r.err = fmt.Errorf("%w: fedavgm schedule at round %d of %d", ErrState, t.t, t.Anneal)
		}
	}
	if err := r.finish(); err != nil {
		return err
	}
	if err := t.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrState, err)
	}
	*s = t
	return nil
}

func (st *adaptive) write(w *stateWriter) {
	w.u64(st.t)
	w.vec(st.m)
	w.vec(st.v)
}

func (st *adaptive) read(r *stateReader) {
	st.t, st.m, st.v = r.u64(), r.vec(), r.vec()
	if r.err == nil && st.m != nil && st.v != nil && len(st.m) != len(st.v) {
		r.err = fmt.Errorf("%w: moments of %d and %d values", ErrState, len(st.m), len(st.v))
	}
}

// MarshalBinary saves the parameters, the moments and the round count.
func (s *FedAdam) MarshalBinary() ([]byte, error) {
	w := newStateWriter(s.Name())
	w.f64(s.LR)
	w.f64(s.Beta1)
	w.f64(s.Beta2)
	w.f64(s.Tau)
	w.bool(s.BiasCorrection)
	w.mean(s.Mean)
	s.st.write(w)
	return w.done(), nil
}

// UnmarshalBinary restores what MarshalBinary saved; on error s is
// unchanged.
func (s *FedAdam) UnmarshalBinary(data []byte) error {
	r := newStateReader(data, s.Name())
	t := FedAdam{LR: r.f64(), Beta1: r.f64(), Beta2: r.f64(), Tau: r.f64(), BiasCorrection: r.bool()}
	t.Mean = r.mean()
	t.st.read(r)
	if err := r.finish(); err != nil {
		return err
	}
	if err := t.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrState, err)
	}
	*s = t
	return nil
}

// MarshalBinary saves the parameters, the moments and the round count.
func (s *FedYogi) MarshalBinary() ([]byte, error) {
	w := newStateWriter(s.Name())
	w.f64(s.LR)
	w.f64(s.Beta1)
	w.f64(s.Beta2)
	w.f64(s.Tau)
	w.mean(s.Mean)
	s.st.write(w)
	return w.done(), nil
}

// UnmarshalBinary restores what MarshalBinary saved; on error s is
// unchanged.
func (s *FedYogi) UnmarshalBinary(data []byte) error {
	r := newStateReader(data, s.Name())
	t := FedYogi{LR: r.f64(), Beta1: r.f64(), Beta2: r.f64(), Tau: r.f64()}
	t.Mean = r.mean()
	t.st.read(r)
	if err := r.finish(); err != nil {
		return err
	}
	if err := t.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrState, err)
	}
	*s = t
	return nil
}

// MarshalBinary saves the parameters, the moments and the round count.
func (s *FedAdagrad) MarshalBinary() ([]byte, error) {
	w := newStateWriter(s.Name())
	w.f64(s.LR)
	w.f64(s.Beta1)
	w.f64(s.Tau)
	w.mean(s.Mean)
	s.st.write(w)
	return w.done(), nil
}

// UnmarshalBinary restores what MarshalBinary saved; on error s is
// unchanged.
func (s *FedAdagrad) UnmarshalBinary(data []byte) error {
	r := newStateReader(data, s.Name())
	t := FedAdagrad{LR: r.f64(), Beta1: r.f64(), Tau: r.f64()}
	t.Mean = r.mean()
	t.st.read(r)
	if err := r.finish(); err != nil {
		return err
	}
	if err := t.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrState, err)
	}
	*s = t
	return nil
}

// MarshalBinary saves the DP parameters, the round counter, the current
// clip and the inner strategy's state.
func (d *DP) MarshalBinary() ([]byte, error) {
	inner, err := MarshalState(d.inner())
	if err != nil {
		return nil, err
	}
	w := newStateWriter("dp")
	w.f64(d.Clip)
	w.f64(d.NoiseMultiplier)
	w.u64(d.Seed)
	w.u64(uint64(d.ExpectedClients))
	w.bool(d.Adaptive != nil)
	if a := d.Adaptive; a != nil {
		w.f64(a.Quantile)
		w.f64(a.LR)
		w.f64(a.CountStddev)
	}
	w.u64(d.round)
	w.f64(d.clip)
	w.bytes(inner)
	return w.done(), nil
}

// UnmarshalBinary restores what MarshalBinary saved into d, whose Inner
// must be a strategy of the saved kind; on error d is unchanged.
func (d *DP) UnmarshalBinary(data []byte) error {
	r := newStateReader(data, "dp")
	t := DP{Inner: d.Inner, Clip: r.f64(), NoiseMultiplier: r.f64(), Seed: r.u64()}
	m := r.u64()
	if m > maxClients {
		m = maxClients + 1 // rejected by Validate
	}
	t.ExpectedClients = int(m)
	if r.bool() {
		t.Adaptive = &AdaptiveClip{Quantile: r.f64(), LR: r.f64(), CountStddev: r.f64()}
	}
	t.round, t.clip = r.u64(), r.f64()
	inner := r.bytes()
	if err := r.finish(); err != nil {
		return err
	}
	if t.clip != 0 && !(t.clip > 0 && t.clip < math.Inf(1)) {
		return fmt.Errorf("%w: clip %v", ErrState, t.clip)
	}
	// Decode the inner state into a fresh strategy first, so that a failure
	// leaves d's inner strategy unchanged.
	probe, err := probeState(d.inner(), inner)
	if err != nil {
		return err
	}
	t.Inner = probe
	if err := t.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrState, err)
	}
	if err := UnmarshalState(d.inner(), inner); err != nil {
		return err
	}
	t.Inner = d.Inner
	*d = t
	return nil
}

// probeState returns a strategy of the kind of s holding data: a fresh one
// for a stateful s, s itself for a stateless one.
func probeState(s Strategy, data []byte) (Strategy, error) {
	if _, ok := s.(encoding.BinaryUnmarshaler); !ok {
		return s, UnmarshalState(s, data)
	}
	probe, err := cloneStrategy(s)
	if err != nil {
		return nil, err
	}
	return probe, UnmarshalState(probe, data)
}

// cloneStrategy returns a fresh strategy of the same kind as s.
func cloneStrategy(s Strategy) (Strategy, error) {
	switch s.(type) {
	case *FedAvgM:
		return &FedAvgM{}, nil
	case *FedAdam:
		return &FedAdam{}, nil
	case *FedYogi:
		return &FedYogi{}, nil
	case *FedAdagrad:
		return &FedAdagrad{}, nil
	case *CenteredClip:
		return &CenteredClip{}, nil
	}
	return nil, fmt.Errorf("%w: cannot restore into %T", ErrState, s)
}

// MarshalBinary saves the orders, the composed RDP and the step count.
func (a *Accountant) MarshalBinary() ([]byte, error) {
	w := newStateWriter("rdp")
	w.u64(uint64(a.steps))
	w.vec(a.orders())
	w.vec(a.rdp)
	return w.done(), nil
}

// UnmarshalBinary restores what MarshalBinary saved; on error a is
// unchanged.
func (a *Accountant) UnmarshalBinary(data []byte) error {
	r := newStateReader(data, "rdp")
	steps, orders, rdp := r.u64(), r.vec(), r.vec()
	if err := r.finish(); err != nil {
		return err
	}
	if len(orders) == 0 || (rdp != nil && len(rdp) != len(orders)) || steps > math.MaxInt32 || (steps > 0) != (rdp != nil) {
		return fmt.Errorf("%w: accountant with %d orders, %d values, %d steps", ErrState, len(orders), len(rdp), steps)
	}
	for i, o := range orders {
		if !(o > 1) || (rdp != nil && (math.IsNaN(rdp[i]) || rdp[i] < 0)) {
			return fmt.Errorf("%w: accountant order %v", ErrState, o)
		}
	}
	*a = Accountant{Orders: orders, rdp: rdp, steps: int(steps)}
	return nil
}
