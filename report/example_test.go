package report_test

import (
	"fmt"
	"os"
	"strings"

	"github.com/fedzip/fedzip/report"
)

func ExampleSummarize() {
	metrics := `{"round":1,"test_accuracy":0.88,"upload_bytes":400000}
{"round":2,"test_accuracy":null,"upload_bytes":300000}
{"round":3,"test_accuracy":0.951,"upload_bytes":300000}
`
	run, err := report.Read(strings.NewReader(metrics), "stcm")
	if err != nil {
		fmt.Println(err)
		return
	}
	s := report.Summarize(run, []float64{0.9, 0.99})
	fmt.Printf("best %.3f at round %d, %s uploaded\n", s.BestAccuracy, s.BestRound, report.Bytes(s.UploadBytes))
	for _, r := range s.Reached {
		fmt.Printf("%.2f: round %d, %s\n", r.Target, r.Round, report.Bytes(r.UploadBytes))
	}
	report.WriteMarkdown(os.Stdout, "", []report.Summary{s})
	// Output:
	// best 0.951 at round 3, 1.00 MB uploaded
	// 0.90: round 3, 1.00 MB
	// 0.99: round 0, 0 B
	// | run | rounds | final accuracy | best accuracy | to 90% | to 99% | upload | download |
	// |---|--:|--:|--:|--:|--:|--:|--:|
	// | stcm | 3 | 95.10% | 95.10% (round 3) | 3 rounds, 1.00 MB | not reached | 1.00 MB | 0 B |
	//
	// Accuracy is test accuracy; "to X" is the first evaluated round at or above X and the bytes uploaded up to it. Bytes are decimal (1 MB = 10⁶ bytes).
}
