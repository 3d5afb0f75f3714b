package deliver

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDeviceDependencies keeps the runtime small: deliver must not import
// the coordinator, the transport, the training or update-coding code, nor
// gRPC (checked with go list -deps, skipped without a go command).
func TestDeviceDependencies(t *testing.T) {
	goCmd, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command")
	}
	out, err := exec.Command(goCmd, "list", "-deps", ".").Output()
	if err != nil {
		t.Skip("go list:", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, banned := range []string{
			"github.com/fedzip/fedzip/coordinator", "github.com/fedzip/fedzip/transport",
			"github.com/fedzip/fedzip/gradient", "github.com/fedzip/fedzip/sim",
			"github.com/fedzip/fedzip/client", "github.com/fedzip/fedzip/round",
			"github.com/fedzip/fedzip/aggregate", "github.com/fedzip/fedzip/nn",
			"github.com/fedzip/fedzip/checkpoint", "google.golang.org/grpc",
		} {
			if dep == banned || strings.HasPrefix(dep, banned+"/") {
				t.Errorf("deliver depends on %s", dep)
			}
		}
	}
}
