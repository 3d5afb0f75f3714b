package remote

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/fedzip/fedzip/gradient"
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

// TestTaskInitModel rebuilds a task's initial model: the network's own
// initialisation with the task's seed when the checksum matches, and
// ErrInitModel when the task announces none or another one.
func TestTaskInitModel(t *testing.T) {
	task := goodTask(1, 0, true)
	m, err := TaskModel(task)
	if err != nil {
		t.Fatal(err)
	}
	want := make([]float32, m.NumParams())
	m.Init(want, 9)
	task.InitSeed = 9
	if _, err := TaskInitModel(task); !errors.Is(err, ErrInitModel) {
		t.Fatalf("no checksum: %v", err)
	}
	crc := gradient.ModelCRC(want)
	task.InitCrc32C = &crc
	if got, err := TaskInitModel(task); err != nil || !slices.Equal(got, want) {
		t.Fatalf("got %v (%v), want %v", got, err, want)
	}
	task.InitSeed = 10
	if _, err := TaskInitModel(task); !errors.Is(err, ErrInitModel) {
		t.Fatalf("another seed: %v", err)
	}
	task.InitSeed, task.ModelParams = 9, task.ModelParams+1
	if _, err := TaskInitModel(task); !errors.Is(err, ErrTaskRefused) {
		t.Fatalf("a model the client cannot build: %v", err)
	}
}

// TestReplicaFile saves and loads a client's replica; a missing file
// loads as nothing, and a damaged, oversized or other model's file as
// nothing with an error (the client then starts from the initial model).
func TestReplicaFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "replica.bin")
	init := []float32{0.5, -0.25, 1, 2}
	if rep, err := loadReplica(path, init); rep != nil || err != nil {
		t.Fatalf("a missing file: %v, %v", rep, err)
	}
	rep, err := gradient.NewReplica(init)
	if err != nil {
		t.Fatal(err)
	}
	if err := writeAtomic(path, rep.AppendBinary(nil)); err != nil {
		t.Fatal(err)
	}
	got, err := loadReplica(path, init)
	if err != nil || got.Version() != 0 || !slices.Equal(got.Model(), init) {
		t.Fatalf("loaded %v (%v)", got, err)
	}
	if got, err := loadReplica(path, []float32{0.5, -0.25, 1}); got != nil || err == nil {
		t.Fatal("loaded the replica of another model")
	}
	b, _ := os.ReadFile(path)
	for i := range b {
		c := slices.Clone(b)
		c[i] ^= 1
		os.WriteFile(path, c, 0o600)
		if got, err := loadReplica(path, init); got != nil || err == nil {
			t.Fatalf("loaded a file with byte %d flipped", i)
		}
	}
	os.WriteFile(path, make([]byte, 5*len(init)+1<<20+1), 0o600)
	if got, err := loadReplica(path, init); got != nil || err == nil {
		t.Fatal("loaded an oversized file")
	}
}
