package remote

import (
	"bytes"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// TestModelFile saves and loads the held model, version 0 included; a
// damaged or mis-sized file loads as nothing.
func TestModelFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "model.bin")
	m := []float32{1, -2, 3.5, float32(math.SmallestNonzeroFloat32)}
	if err := saveModel(path, m, 7); err != nil {
		t.Fatal(err)
	}
	if got, v, _ := loadModel(path, len(m), DefaultMaxAbsParam); v != 7 || !slices.Equal(got, m) {
		t.Fatalf("loaded version %d %v", v, got)
	}
	if got, _, _ := loadModel(path, len(m)+1, DefaultMaxAbsParam); got != nil {
		t.Fatal("loaded a model of another size")
	}
	b, _ := os.ReadFile(path)
	for i := range b {
		c := slices.Clone(b)
		c[i] ^= 1
		os.WriteFile(path, c, 0o600)
		if got, _, _ := loadModel(path, len(m), DefaultMaxAbsParam); got != nil {
			t.Fatalf("loaded a file with byte %d flipped", i)
		}
	}
	saveModel(path, m, 0)
	if got, v, _ := loadModel(path, len(m), DefaultMaxAbsParam); v != 0 || !slices.Equal(got, m) {
		t.Fatalf("version 0 (the initial model): loaded version %d %v", v, got)
	}
	if got, _, _ := loadModel(filepath.Join(dir, "missing"), len(m), DefaultMaxAbsParam); got != nil {
		t.Fatal("loaded a missing file")
	}
}

// FuzzParseModelFile: any bytes give a model or an error, never a panic,
// and a model that parses is saved back to the same bytes.
func FuzzParseModelFile(f *testing.F) {
	dir := f.TempDir()
	for i, m := range [][]float32{{1, 2, 3}, {0}, {-1.5, 2.25, 1e-30, 7, 8}} {
		path := filepath.Join(dir, fmt.Sprint(i))
		if err := saveModel(path, m, uint64(i)); err != nil {
			f.Fatal(err)
		}
		b, _ := os.ReadFile(path)
		f.Add(b, len(m))
	}
	f.Add([]byte("FZHM"), 1)
	f.Fuzz(func(t *testing.T, b []byte, n int) {
		m, v, err := parseModelFile(b, n%64)
		if err != nil {
			return
		}
		path := filepath.Join(t.TempDir(), "m")
		if err := saveModel(path, m, v); err != nil {
			t.Fatal(err)
		}
		if again, _ := os.ReadFile(path); !bytes.Equal(again, b) {
			t.Fatalf("parsed model does not save back to the same %d bytes", len(b))
		}
	})
}
