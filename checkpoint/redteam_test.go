package checkpoint

import (
	"encoding/json"
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

// FuzzNetwork: Network on any header the reader would accept returns a
// network whose layout is the header's, or an error wrapping ErrCorrupt;
// it never panics.
func FuzzNetwork(f *testing.F) {
	f.Add(`{"model":"cnn","input":[1,28,28],"classes":10,"tensors":[{"name":"conv1.weight","shape":[32,1,5,5]}]}`)
	f.Add(`{"model":"mlp:4-3","sizes":[4,3],"tensors":[{"name":"fc1.weight","shape":[3,4]},{"name":"fc1.bias","shape":[3]}]}`)
	f.Add(`{"model":"conv:4x3,pool:2,gn:2,fc:10","input":[1,8,8],"classes":10,"tensors":[{"name":"conv1.weight","shape":[4,1,3,3]}]}`)
	f.Fuzz(func(t *testing.T, hdr string) {
		var h Header
		if json.Unmarshal([]byte(hdr), &h) != nil {
			return
		}
		n, err := layoutSize(h)
		if err != nil || n > 1<<20 {
			return
		}
		m := &Model{Header: h, Params: make([]float32, n)}
		net, err := m.Network()
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Network: %v, want ErrCorrupt", err)
			}
			return
		}
		if net.NumParams() != n || len(net.Layout().Tensors) != len(h.Tensors) {
			t.Fatalf("Network %s: %d parameters in %d tensors, the header has %d in %d", net.Name(), net.NumParams(), len(net.Layout().Tensors), n, len(h.Tensors))
		}
	})
}
