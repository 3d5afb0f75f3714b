package sim

import (
	"context"
	"testing"
)

// TestTotalBytes: every round's total is its upload plus its download,
// the cumulative total sums the rounds so far, and the total ratio is
// dense FedAvg's total over the same rounds divided by it; with dense
// codecs both ways it is about 1 (the updates' wire headers make it a
// little less), with compressed codecs well above.
func TestTotalBytes(t *testing.T) {
	data, model := synthetic(t, 10)
	init := make([]float32, model.NumParams())
	model.Init(init, 1)
	for _, tc := range []struct {
		up, down string
		lo, hi   float64 // bounds of the last round's total ratio
	}{
		{"none", "", 0.9, 1},
		{"topk=0.1,bits=8,ef=on", "topk=0.1,bits=8", 2, 1e6},
	} {
		cfg := config(4, 0.5)
		cfg.Workers, cfg.UploadCodec, cfg.DownloadCodec = 2, tc.up, tc.down
		res, err := Run(context.Background(), cfg, model, init, data, nil)
		if err != nil {
			t.Fatal(err)
		}
		var total, dense int64
		for _, m := range res.Rounds {
			if m.TotalBytes != m.UploadBytes+m.DownloadBytes || m.DenseTotalBytes != m.DenseUploadBytes+m.DenseDownloadBytes || m.TotalBytes <= 0 {
				t.Fatalf("%s/%s round %d: total %d, dense total %d of %+v", tc.up, tc.down, m.Round, m.TotalBytes, m.DenseTotalBytes, m)
			}
			total += m.TotalBytes
			dense += m.DenseTotalBytes
			if m.CumulativeTotalBytes != total || m.TotalRatio != float64(dense)/float64(total) {
				t.Fatalf("%s/%s round %d: cumulative %d ratio %v, want %d and %v", tc.up, tc.down, m.Round, m.CumulativeTotalBytes, m.TotalRatio, total, float64(dense)/float64(total))
			}
		}
		if r := res.Rounds[len(res.Rounds)-1].TotalRatio; r < tc.lo || r > tc.hi {
			t.Errorf("%s/%s: total ratio %v, want in [%v, %v]", tc.up, tc.down, r, tc.lo, tc.hi)
		}
	}
}
