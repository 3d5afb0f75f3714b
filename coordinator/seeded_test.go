package coordinator

import (
	"errors"
	"testing"

	"github.com/fedzip/fedzip/runspec"
)

// TestRunConfigRefusesSeededDownload: the coordinator does not publish
// versions with their supports, so a run that asks for seeded syncs is
// refused (with a valid secure aggregation run, which runspec accepts),
// and its default under --secagg stays the lattice.
func TestRunConfigRefusesSeededDownload(t *testing.T) {
	run := testRun(1)
	run.UploadCodec = ""
	run.SecAgg = &runspec.SecAgg{Fraction: 0.1, Bits: 12}
	run.DownloadCodec = runspec.DefaultDownloadCodec
	if err := run.Validate(); err != nil {
		t.Fatalf("a secagg run with lattice downloads: %v", err)
	}
	run.DownloadCodec = "seeded"
	if err := run.Spec.Validate(); err != nil {
		t.Fatalf("runspec refuses the run itself: %v", err)
	}
	if err := run.Validate(); !errors.Is(err, runspec.ErrInvalid) {
		t.Fatalf("seeded downloads on the coordinator: %v, want ErrInvalid", err)
	}
}
