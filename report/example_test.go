package report_test

import (
	"fmt"
	"os"
	"strings"

	"github.com/fedzip/fedzip/report"
)

func ExampleSummarize() {
	metrics := `{"round":1,"test_accuracy":0.88,"upload_bytes":400000,"download_bytes":8000000,"dense_upload_bytes":16000000,"dense_download_bytes":16000000}
{"round":2,"test_accuracy":null,"upload_bytes":300000,"download_bytes":600000,"dense_upload_bytes":16000000,"dense_download_bytes":16000000}
{"round":3,"test_accuracy":0.951,"upload_bytes":300000,"download_bytes":600000,"dense_upload_bytes":16000000,"dense_download_bytes":16000000}
`
	run, err := report.Read(strings.NewReader(metrics), "stcm")
	if err != nil {
		fmt.Println(err)
		return
	}
	s := report.Summarize(run, []float64{0.9, 0.99})
	fmt.Printf("best %.3f at round %d, %s in total (%s uploaded), %s smaller than dense\n",
		s.BestAccuracy, s.BestRound, report.Bytes(s.TotalBytes), report.Bytes(s.UploadBytes), report.Times(s.TotalRatio()))
	for _, r := range s.Reached {
		fmt.Printf("%.2f: round %d, %s\n", r.Target, r.Round, report.Bytes(r.TotalBytes))
	}
	report.WriteMarkdown(os.Stdout, "", []report.Summary{s})
	// Output:
	// best 0.951 at round 3, 10.2 MB in total (1.00 MB uploaded), 9.41× smaller than dense
	// 0.90: round 3, 10.2 MB
	// 0.99: round 0, 0 B
	// | run | rounds | final accuracy | best accuracy | to 90% | to 99% | total | vs dense | upload | download |
	// |---|--:|--:|--:|--:|--:|--:|--:|--:|--:|
	// | stcm | 3 | 95.10% | 95.10% (round 3) | 3 rounds, 10.2 MB (9.41×) | not reached | 10.2 MB | 9.41× | 1.00 MB | 9.20 MB |
	//
	// Accuracy is test accuracy; "to X" is the first evaluated round at or above X and the total bytes (uploaded + downloaded) up to it. "vs dense" is dense FedAvg's total (4 bytes per parameter per upload and per download) over the run's. Bytes are decimal (1 MB = 10⁶ bytes).
}
