package gradient_test

import (
	"crypto/sha256"
	"encoding/hex"
	"math/rand/v2"
	"testing"

	"github.com/fedzip/fedzip/gradient"
)

// goldenSyncs publishes six versions of a model of n parameters (a tenth
// moving ten times faster) under spec and hashes every sync the server
// composes, from each older version and from none, and the full model.
func goldenSyncs(t *testing.T, spec string, n int, tensors []int) string {
	t.Helper()
	sp, err := gradient.ParseSpec(spec)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(11, 12))
	global := make([]float32, n)
	for i := range global {
		global[i] = float32(rng.NormFloat64() * 0.05)
	}
	srv, err := gradient.NewServerEncoder(sp, global, 8)
	if err != nil {
		t.Fatal(err)
	}
	if tensors != nil {
		if err := srv.SetTensors(tensors); err != nil {
			t.Fatal(err)
		}
	}
	h := sha256.New()
	for v := 1; v <= 6; v++ {
		for i := range global {
			s := 0.001
			if i < n/10 {
				s = 0.01
			}
			global[i] += float32(rng.NormFloat64() * s)
		}
		if _, err := srv.Publish(global, uint64(v)); err != nil {
			t.Fatal(err)
		}
		for have := range v {
			b, ok := srv.AppendUpdate(nil, have)
			h.Write([]byte{byte(have), btoi(ok)})
			h.Write(b)
		}
	}
	h.Write(srv.AppendFull(nil))
	return hex.EncodeToString(h.Sum(nil))
}

func btoi(b bool) byte {
	if b {
		return 1
	}
	return 0
}

// TestRedteamOldSyncBytes: the download syncs of the specs that were
// there before seeded syncs (lattice, with and without a tensor table, and
// a top-k upload-style codec) are byte for byte those of commit f0298e4,
// the main branch before today's seeded and support-adam merges: the
// hashes were printed by this test's helper run in that commit's tree.
// Every compose from every older version, and the full model, is hashed.
func TestRedteamOldSyncBytes(t *testing.T) {
	for _, c := range []struct {
		spec    string
		tensors []int
		want    string
	}{
		{"lattice", nil, "4e908c2374f83adeac33844c4e072d4cac4a058bb9e76e5e528982060872269b"},
		{"lattice", []int{1000, 24, 2976}, "cce3c96c5f880971dfd46d9bad097de08daa8be27b7ffdec9b33ea57af30a613"},
		{"topk=0.25,bits=4,ef=on", nil, "45db356aa35b14aa69f81da12b5acae3c97fa5228039af43079a6c6edc95d90f"},
	} {
		if got := goldenSyncs(t, c.spec, 4000, c.tensors); got != c.want {
			t.Errorf("%q %v: syncs hash to %s, before today's changes %s", c.spec, c.tensors, got, c.want)
		}
	}
}
