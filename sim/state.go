package sim

import (
	"fmt"
	"sync"

	"github.com/fedzip/fedzip/compress"
	"github.com/fedzip/fedzip/round"
)

// StateStore keeps each virtual client's codec state (the error-feedback
// residual and the DGC momentum) between the rounds it takes part in. This
// is the one part of the simulator whose memory grows with the number of
// clients: n values per client that has ever been selected, for each
// buffer the codec keeps.
type StateStore interface {
	// Load copies client id's state into residual and velocity (either may
	// be nil), or zeroes them for a client seen for the first time.
	Load(id round.ClientID, residual, velocity []float32)
	// Save stores client id's state.
	Save(id round.ClientID, residual, velocity []float32)
	// Bytes returns the memory the store holds.
	Bytes() int64
}

// NewStateStore returns a store by name: "float32" keeps the state exactly
// (4 bytes per value); "float16" rounds it to IEEE half precision (2 bytes
// per value), which halves the memory and perturbs the residual by at most
// 2⁻¹¹ relative.
func NewStateStore(kind string) (StateStore, error) {
	switch kind {
	case "", "float32":
		return &f32Store{m: map[round.ClientID]*f32State{}}, nil
	case "float16":
		return &f16Store{m: map[round.ClientID]*f16State{}}, nil
	}
	return nil, fmt.Errorf("sim: unknown state store %q (want float32 or float16)", kind)
}

type f32State struct{ r, v []float32 }

type f32Store struct {
	mu    sync.Mutex
	m     map[round.ClientID]*f32State
	bytes int64
}

func (s *f32Store) Load(id round.ClientID, r, v []float32) {
	s.mu.Lock()
	st := s.m[id]
	s.mu.Unlock()
	if st == nil {
		clear(r)
		clear(v)
		return
	}
	copy(r, st.r)
	copy(v, st.v)
}

func (s *f32Store) Save(id round.ClientID, r, v []float32) {
	s.mu.Lock()
	st := s.m[id]
	if st == nil {
		st = &f32State{r: make([]float32, len(r)), v: make([]float32, len(v))}
		s.m[id] = st
		s.bytes += int64(4 * (len(r) + len(v)))
	}
	s.mu.Unlock()
	copy(st.r, r)
	copy(st.v, v)
}

func (s *f32Store) Bytes() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bytes
}

type f16State struct{ r, v []uint16 }

type f16Store struct {
	mu    sync.Mutex
	m     map[round.ClientID]*f16State
	bytes int64
}

func (s *f16Store) Load(id round.ClientID, r, v []float32) {
	s.mu.Lock()
	st := s.m[id]
	s.mu.Unlock()
	if st == nil {
		clear(r)
		clear(v)
		return
	}
	compress.FromFloat16(r, st.r)
	compress.FromFloat16(v, st.v)
}

func (s *f16Store) Save(id round.ClientID, r, v []float32) {
	s.mu.Lock()
	st := s.m[id]
	if st == nil {
		st = &f16State{r: make([]uint16, len(r)), v: make([]uint16, len(v))}
		s.m[id] = st
		s.bytes += int64(2 * (len(r) + len(v)))
	}
	s.mu.Unlock()
	compress.ToFloat16(st.r, r)
	compress.ToFloat16(st.v, v)
}

func (s *f16Store) Bytes() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bytes
}
