package coordinator

import (
	"errors"
	"testing"

	"github.com/fedzip/fedzip/runspec"
)

// TestRunConfigSeededDownload: the coordinator accepts seeded downloads
// under secure aggregation with a random support, and refuses them with
// an announced support or without secure aggregation (runspec's checks,
// which the coordinator's Validate runs).
func TestRunConfigSeededDownload(t *testing.T) {
	run := testRun(1)
	run.UploadCodec = ""
	run.SecAgg = &runspec.SecAgg{Fraction: 0.1, Bits: 12}
	for _, codec := range []string{runspec.DefaultDownloadCodec, runspec.SeededDownloadCodec} {
		run.DownloadCodec = codec
		if err := run.Validate(); err != nil {
			t.Fatalf("a secagg run with %s downloads: %v", codec, err)
		}
		if err := run.checkApply(); err != nil {
			t.Fatalf("the FSM refuses a secagg run with %s downloads: %v", codec, err)
		}
	}
	run.SecAgg.Support = "announced"
	if err := run.Validate(); !errors.Is(err, runspec.ErrInvalid) {
		t.Fatalf("seeded downloads with an announced support: %v, want ErrInvalid", err)
	}
	run.SecAgg = nil
	if err := run.Validate(); !errors.Is(err, runspec.ErrInvalid) {
		t.Fatalf("seeded downloads without secure aggregation: %v, want ErrInvalid", err)
	}
}
