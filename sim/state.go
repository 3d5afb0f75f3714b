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
		return &store[float32]{size: 4,
			put: func(dst, src []float32) { copy(dst, src) },
			get: func(dst, src []float32) { copy(dst, src) }}, nil
	case "float16":
		return &store[uint16]{size: 2, put: compress.ToFloat16, get: compress.FromFloat16}, nil
	}
	return nil, fmt.Errorf("sim: unknown state store %q (want float32 or float16)", kind)
}

// store keeps each client's residual and velocity as []T, converted by put
// and get.
type store[T any] struct {
	size  int64 // bytes per value
	put   func(dst []T, src []float32)
	get   func(dst []float32, src []T)
	mu    sync.Mutex
	m     map[round.ClientID]*[2][]T
	bytes int64
}

func (s *store[T]) Load(id round.ClientID, r, v []float32) {
	s.mu.Lock()
	st := s.m[id]
	s.mu.Unlock()
	if st == nil {
		clear(r)
		clear(v)
		return
	}
	s.get(r, st[0])
	s.get(v, st[1])
}

func (s *store[T]) Save(id round.ClientID, r, v []float32) {
	s.mu.Lock()
	if s.m == nil {
		s.m = map[round.ClientID]*[2][]T{}
	}
	st := s.m[id]
	if st == nil {
		st = &[2][]T{make([]T, len(r)), make([]T, len(v))}
		s.m[id] = st
		s.bytes += s.size * int64(len(r)+len(v))
	}
	s.mu.Unlock()
	s.put(st[0], r)
	s.put(st[1], v)
}

func (s *store[T]) Bytes() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bytes
}
