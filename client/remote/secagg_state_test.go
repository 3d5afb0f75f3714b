package remote

import (
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/fedzip/fedzip/gradient"
	"github.com/fedzip/fedzip/transport/fedzippb"
)

// TestSecAggResidualFileAttack writes what an outsider with access to the
// state folder, or a crash, could leave in secagg-residual.bin: values that
// overflow, NaN, infinities, a file of the wrong length and garbage. The
// client still encodes codes within its fixed-point range (the other
// clients' sum is not its to move), and the file it writes back either
// loads as finite values or is refused whole and read as zeros.
func TestSecAggResidualFileAttack(t *testing.T) {
	const d, bits = testParams, 8
	res := &fedzippb.SecAggStepResponse{Session: 1, Ids: []uint64{1, 2, 3}, Neighbours: 2, Threshold: 2,
		Dim: d, GraphSeed: 2, SupportSeed: 3, Clip: 0.5, Bits: bits, MaskBits: 12}
	levels := int32(1)<<(bits-1) - 1
	inf, nan := float32(math.Inf(1)), float32(math.NaN())
	for name, content := range map[string][]byte{
		"overflow": gradient.AppendFloat32s(nil, filled(3e38)),
		"nan":      gradient.AppendFloat32s(nil, filled(nan)),
		"inf":      gradient.AppendFloat32s(nil, filled(inf)),
		"short":    []byte{1, 2, 3},
		"garbage":  []byte("not a residual, not even close to one; not a residual"),
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), secAggFile)
			if err := os.WriteFile(path, content, 0o600); err != nil {
				t.Fatal(err)
			}
			residual := make([]float32, d)
			loadFloats(path, residual)
			p, err := newSecAggPeer(res, 1, filled(3e38), residual, 7)
			if err != nil {
				t.Fatal(err)
			}
			for i, c := range p.codes {
				if v := int32(c); v < -levels || v > levels {
					t.Fatalf("code %d is %d, beyond ±%d", i, v, levels)
				}
			}
			if err := saveFloats(path, residual); err != nil {
				t.Fatal(err)
			}
			back := make([]float32, d)
			loadFloats(path, back)
			for i, v := range back {
				if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
					t.Fatalf("the residual read back holds %v at %d", v, i)
				}
			}
		})
	}
}
