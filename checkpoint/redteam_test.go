package checkpoint

import (
	"errors"
	"runtime"
	"strings"
	"testing"
)

// TestRedteamNetworkHeaderBounds: a model file's header is at most
// MaxHeader bytes of JSON, but Network builds a network from its fields
// before it compares the layout: sizes, an input shape and a spec chosen to
// make that network large must be refused without building it.
func TestRedteamNetworkHeaderBounds(t *testing.T) {
	sizes := make([]int, 400_000)
	for i := range sizes {
		sizes[i] = 1
	}
	one := []TensorInfo{{Name: "fc1.weight", Shape: []int{1, 1}}}
	for _, tc := range []struct {
		name string
		h    Header
	}{
		{"400k sizes", Header{Model: "mlp", Sizes: sizes, Tensors: one}},
		{"mlp spec of 400k sizes", Header{Model: "mlp:1" + strings.Repeat("-1", 400_000), Input: []int{1, 1, 1}, Classes: 1, Tensors: one}},
		{"huge input", Header{Model: "conv:8x3,fc:10", Input: []int{1 << 16, 4096, 4096}, Classes: 10, Tensors: one}},
		{"negative input", Header{Model: "cnn", Input: []int{-1, 28, 28}, Classes: 10, Tensors: one}},
		{"huge classes", Header{Model: "cnn", Input: []int{1, 28, 28}, Classes: 1 << 40, Tensors: one}},
	} {
		m := &Model{Header: tc.h, Params: []float32{0}}
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		_, err := m.Network()
		runtime.ReadMemStats(&after)
		if !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: Network() = %v, want ErrCorrupt", tc.name, err)
		}
		if a := after.TotalAlloc - before.TotalAlloc; a > 8<<20 {
			t.Errorf("%s: Network allocated %d MB before refusing", tc.name, a>>20)
		}
	}
}
