package difftest

import (
	"testing"

	"github.com/fedzip/fedzip/runspec"
)

// TestDefaultsSimulationAndClusterAgree: the defaults (the strategy with
// its input quorum and quorum-frac, whose threshold depends on the
// clients seen, and the default codecs) give the simulator and a
// coordinator the same model bit for bit, over enough rounds for the
// threshold to change (round 2 opens what round 1's 3 clients sent, later
// rounds need 3/4 of the clients seen).
func TestDefaultsSimulationAndClusterAgree(t *testing.T) {
	rc := run(runspec.DefaultStrategy, runspec.DefaultUploadCodec, runspec.DefaultDownloadCodec, 0)
	rc.Round.Rounds = 5
	d := data(t, 0)
	simHash, _ := simulate(t, rc, d)
	clusterHash, _ := cluster(t, rc, d)
	if simHash != clusterHash {
		t.Fatalf("the simulation ends with model %x, the cluster with %x", simHash[:8], clusterHash[:8])
	}
}
