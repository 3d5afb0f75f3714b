package runspec

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// TestDimsFileSource sizes a model from a CSV's header and labels, and
// refuses a missing file with ErrInvalid.
func TestDimsFileSource(t *testing.T) {
	path := filepath.Join(t.TempDir(), "d.csv")
	if err := os.WriteFile(path, []byte("label,a,b,c\n0,1,2,3\n4,5,6,7\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if in, classes, err := Dims("csv:" + path); err != nil || in != 3 || classes != 5 {
		t.Fatalf("Dims = %d, %d, %v; want 3, 5", in, classes, err)
	}
	if _, _, err := Dims("csv:" + path + ".missing"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("missing file: %v", err)
	}
}
