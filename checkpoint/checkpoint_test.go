package checkpoint

import (
	"bytes"
	"errors"
	"path/filepath"
	"testing"

	"github.com/fedzip/fedzip/nn"
)

func sample(t testing.TB) *Model {
	net, err := nn.NewMLP(4, 3, 2)
	if err != nil {
		t.Fatal(err)
	}
	p := make([]float32, net.NumParams())
	net.Init(p, 1)
	m := New(net, p)
	m.Header.Round, m.Header.Version, m.Header.Dataset = 7, 7, "synthetic"
	m.Header.Extra = map[string]string{"seed": "1"}
	return m
}

func TestRoundTrip(t *testing.T) {
	m := sample(t)
	path := filepath.Join(t.TempDir(), "m.fzmodel")
	if err := WriteFile(path, m); err != nil {
		t.Fatal(err)
	}
	got, err := ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got.Header.Round != 7 || got.Header.Extra["seed"] != "1" || len(got.Params) != len(m.Params) {
		t.Fatalf("header %+v", got.Header)
	}
	for i := range m.Params {
		if got.Params[i] != m.Params[i] {
			t.Fatalf("param %d = %v, want %v", i, got.Params[i], m.Params[i])
		}
	}
	net, err := got.MLP()
	if err != nil || net.NumParams() != len(m.Params) {
		t.Fatal(net, err)
	}
}

func TestCorruption(t *testing.T) {
	good, err := Marshal(sample(t))
	if err != nil {
		t.Fatal(err)
	}
	flip := func(i int) []byte { b := bytes.Clone(good); b[i] ^= 0x10; return b }
	cases := []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, ErrCorrupt},
		{"magic", flip(0), ErrMagic},
		{"version", flip(8), ErrVersion},
		{"header too large", func() []byte { b := bytes.Clone(good); b[15] = 0x7f; return b }(), ErrTooLarge},
		{"truncated", good[:len(good)-9], ErrCorrupt},
		{"checksum only truncated", good[:len(good)-1], ErrCorrupt},
		{"bit flip in a parameter", flip(len(good) - 10), ErrChecksum},
		{"trailing", append(bytes.Clone(good), 0), ErrCorrupt},
	}
	for _, tc := range cases {
		if _, err := Read(bytes.NewReader(tc.b)); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
}

func FuzzRead(f *testing.F) {
	good, _ := Marshal(sample(f))
	f.Add(good)
	f.Add(good[:40])
	f.Add([]byte(Magic))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Read(bytes.NewReader(b))
		if err != nil {
			return
		}
		// Whatever decodes must encode back to the same bytes.
		again, err := Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		m2, err := Read(bytes.NewReader(again))
		if err != nil {
			t.Fatalf("re-encoded model does not decode: %v", err)
		}
		if len(m2.Params) != len(m.Params) {
			t.Fatal("round trip changed the parameter count")
		}
	})
}

// TestNetworkRoundTrip writes a conv net and reads it back: the file names
// its spec, input shape and classes, and Network rebuilds the same layout.
// A header whose shape disagrees with its tensors is refused.
func TestNetworkRoundTrip(t *testing.T) {
	net, err := nn.ParseModel("conv:4x3,pool:2,gn:2,fc:10", nn.Shape{C: 1, H: 8, W: 8}, 10)
	if err != nil {
		t.Fatal(err)
	}
	params := make([]float32, net.NumParams())
	net.Init(params, 1)
	b, err := Marshal(New(net, params))
	if err != nil {
		t.Fatal(err)
	}
	m, err := Read(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	got, err := m.Network()
	if err != nil {
		t.Fatal(err)
	}
	if got.Name() != net.Name() || !got.Layout().Equal(net.Layout()) || got.InputShape() != net.InputShape() {
		t.Fatalf("read back %s %v, wrote %s %v", got.Name(), got.InputShape(), net.Name(), net.InputShape())
	}
	if _, err := m.MLP(); err == nil {
		t.Error("MLP() of a conv net: want an error")
	}
	m.Header.Input = []int{1, 12, 12}
	if _, err := m.Network(); !errors.Is(err, ErrCorrupt) {
		t.Errorf("shape 1×12×12 against tensors of 1×8×8: %v, want ErrCorrupt", err)
	}
	m.Header.Input = nil
	if _, err := m.Network(); !errors.Is(err, ErrCorrupt) {
		t.Errorf("no shape: %v, want ErrCorrupt", err)
	}
}
