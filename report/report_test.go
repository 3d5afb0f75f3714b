package report

import (
	"bytes"
	"errors"
	"flag"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/vg"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

func TestReadRefusesMalformedLines(t *testing.T) {
	good := `{"round":1,"test_accuracy":0.5,"upload_bytes":10}`
	for _, tc := range []struct {
		name, in string
		line     int
	}{
		{"not JSON", good + "\n{round: 2}", 2},
		{"truncated", good + "\n" + `{"round":2,"upload_bytes":1`, 2},
		{"trailing data", `{"round":1,"upload_bytes":1} {}`, 1},
		{"array", "[1,2]", 1},
		{"null", "null", 1},
		{"no round", `{"test_accuracy":0.5,"upload_bytes":1}`, 1},
		{"round zero", `{"round":0,"upload_bytes":1}`, 1},
		{"round not an integer", `{"round":1.5,"upload_bytes":1}`, 1},
		{"round as a string", `{"round":"1","upload_bytes":1}`, 1},
		{"no upload_bytes", `{"round":1,"test_accuracy":0.5}`, 1},
		{"accuracy above 1", `{"round":1,"test_accuracy":1.5,"upload_bytes":1}`, 1},
		{"accuracy negative", `{"round":1,"test_accuracy":-0.1,"upload_bytes":1}`, 1},
		{"negative upload", `{"round":1,"upload_bytes":-1}`, 1},
		{"negative download", `{"round":1,"upload_bytes":1,"download_bytes":-5}`, 1},
		{"negative dense download", `{"round":1,"upload_bytes":1,"dense_download_bytes":-5}`, 1},
		{"negative loss", `{"round":1,"upload_bytes":1,"test_loss":-1}`, 1},
		{"negative clients", `{"round":1,"upload_bytes":1,"clients":-1}`, 1},
		{"upload overflows int64", `{"round":1,"upload_bytes":99999999999999999999}`, 1},
		{"total bytes overflow", `{"round":1,"upload_bytes":1,"download_bytes":9223372036854775807}`, 1},
		{"dense bytes overflow", `{"round":1,"upload_bytes":1,"dense_upload_bytes":9223372036854775807,"dense_download_bytes":1}`, 1},
		{"total upload overflows", `{"round":1,"upload_bytes":9223372036854775807}` + "\n" + `{"round":2,"upload_bytes":1}`, 2},
		{"round repeated", good + "\n\n" + good, 3},
		{"rounds out of order", `{"round":2,"upload_bytes":1}` + "\n" + good, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Read(strings.NewReader(tc.in), "x")
			var le *LineError
			if !errors.As(err, &le) {
				t.Fatalf("got %v, want a *LineError", err)
			}
			if le.Line != tc.line || !errors.Is(err, ErrMalformed) {
				t.Fatalf("got %v, want ErrMalformed at line %d", err, tc.line)
			}
			if !strings.HasPrefix(err.Error(), "line ") {
				t.Fatalf("error %q does not start with its line", err)
			}
		})
	}
}

func TestReadBoundsLines(t *testing.T) {
	good := `{"round":1,"upload_bytes":10}`
	// A line of exactly MaxLineBytes is read: pad it with spaces inside the object.
	exact := `{"round":2,"upload_bytes":10` + strings.Repeat(" ", MaxLineBytes-len(`{"round":2,"upload_bytes":10}`)) + "}"
	if len(exact) != MaxLineBytes {
		t.Fatal(len(exact))
	}
	for _, eol := range []string{"\n", "\r\n"} {
		run, err := Read(strings.NewReader(good+eol+exact+eol), "x")
		if err != nil || len(run.Rounds) != 2 {
			t.Fatalf("line of MaxLineBytes with %q: %v", eol, err)
		}
	}
	for _, tc := range []struct {
		name, in string
	}{
		{"one byte over, last line", good + "\n" + exact + " "},
		{"one byte over", good + "\n" + exact + " \n" + good},
		{"far over", good + "\n" + strings.Repeat("x", 3*MaxLineBytes) + "\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Read(strings.NewReader(tc.in), "x")
			var le *LineError
			if !errors.Is(err, ErrLineTooLong) || !errors.As(err, &le) || le.Line != 2 {
				t.Fatalf("got %v, want ErrLineTooLong at line 2", err)
			}
		})
	}
}

func TestReadEmpty(t *testing.T) {
	for _, in := range []string{"", "\n\n", "  \n"} {
		if _, err := Read(strings.NewReader(in), "x"); !errors.Is(err, ErrEmpty) {
			t.Fatalf("Read(%q) = %v, want ErrEmpty", in, err)
		}
	}
}

func TestReadFile(t *testing.T) {
	run, err := ReadFile("testdata/dense.jsonl", "")
	if err != nil {
		t.Fatal(err)
	}
	if run.Label != "dense" || len(run.Rounds) != 5 {
		t.Fatalf("label %q, %d rounds", run.Label, len(run.Rounds))
	}
	r2 := run.Rounds[1]
	if r2.Evaluated || r2.TestAccuracy != 0 || r2.TrainLoss != 1.2 || r2.UploadBytes != 1e6 {
		t.Fatalf("round 2: %+v", r2)
	}
	if r4 := run.Rounds[3]; !r4.Evaluated || r4.TestAccuracy != 0.96 || r4.Clients != 2 {
		t.Fatalf("round 4: %+v", r4)
	}

	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.jsonl")
	os.WriteFile(bad, []byte(`{"round":1,"upload_bytes":1}`+"\n"+`{"round":2,"upload_bytes":1,"test_accuracy":7}`+"\n"), 0o644)
	_, err = ReadFile(bad, "")
	if err == nil || !strings.Contains(err.Error(), "bad.jsonl: line 2: ") || !strings.Contains(err.Error(), "test_accuracy 7 out of [0, 1]") {
		t.Fatalf("got %v", err)
	}
}

func TestSummarize(t *testing.T) {
	run, err := ReadFile("testdata/dense.jsonl", "")
	if err != nil {
		t.Fatal(err)
	}
	s := Summarize(run, []float64{0.9, 0.95, 0.97})
	want := Summary{
		Label: "dense", Rounds: 5, Evaluated: true,
		FinalAccuracy: 0.955, FinalRound: 5, BestAccuracy: 0.96, BestRound: 4,
		Reached: []Reached{{Target: 0.9, Round: 3, UploadBytes: 3e6, DownloadBytes: 3e6, TotalBytes: 6e6, DenseTotalBytes: 6e6},
			{Target: 0.95, Round: 4, UploadBytes: 4e6, DownloadBytes: 4e6, TotalBytes: 8e6, DenseTotalBytes: 8e6}, {Target: 0.97}},
		// Round 2 was not evaluated, but its bytes count.
		UploadBytes: 5e6, DownloadBytes: 5e6, TotalBytes: 10e6, DenseTotalBytes: 10e6,
	}
	if !reflect.DeepEqual(s, want) {
		t.Fatalf("got\n%+v\nwant\n%+v", s, want)
	}
	none := Summarize(Run{Label: "x", Rounds: []Round{{Round: 1, UploadBytes: 3}}}, DefaultTargets)
	if none.Evaluated || none.BestRound != 0 || none.Reached[0].Round != 0 || none.UploadBytes != 3 {
		t.Fatalf("unevaluated run: %+v", none)
	}
}

// TestMarkdownGolden checks the summary of two tiny runs against
// testdata/summary.golden.md; go test -update rewrites it.
func TestMarkdownGolden(t *testing.T) {
	dense, err := ReadFile("testdata/dense.jsonl", "dense | float32")
	if err != nil {
		t.Fatal(err)
	}
	dp, err := ReadFile("testdata/dp.jsonl", "")
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	sums := []Summary{Summarize(dense, DefaultTargets), Summarize(dp, DefaultTargets)}
	if err := WriteMarkdown(&b, "Tiny runs", sums); err != nil {
		t.Fatal(err)
	}
	golden := "testdata/summary.golden.md"
	if *update {
		if err := os.WriteFile(golden, b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if b.String() != string(want) {
		t.Fatalf("summary differs from %s (go test -update rewrites it):\n%s", golden, b.String())
	}
}

func TestWrite(t *testing.T) {
	dense, err := ReadFile("testdata/dense.jsonl", "")
	if err != nil {
		t.Fatal(err)
	}
	dp, err := ReadFile("testdata/dp.jsonl", "")
	if err != nil {
		t.Fatal(err)
	}
	runs := []Run{dense, dp}
	dir := filepath.Join(t.TempDir(), "new", "dir")
	files, err := Write(dir, runs, Options{Title: "tiny"})
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 4 {
		t.Fatalf("wrote %v", files)
	}
	for _, name := range []string{AccuracyFile, AccuracyVsTotalFile, AccuracyVsBytesFile} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		img, err := png.Decode(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		want := int(math.Round(float64(PlotWidth/vg.Inch) * PlotDPI))
		if w := img.Bounds().Dx(); w != want {
			t.Fatalf("%s: %d pixels wide, want %d", name, w, want)
		}
	}
	md, err := os.ReadFile(filepath.Join(dir, SummaryFile))
	if err != nil || !strings.HasPrefix(string(md), "# tiny\n") || !strings.Contains(string(md), "| dp |") {
		t.Fatalf("summary.md: %v\n%s", err, md)
	}

	// The same runs give the same bytes.
	again := t.TempDir()
	if _, err := Write(again, runs, Options{Title: "tiny"}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{AccuracyFile, AccuracyVsTotalFile, AccuracyVsBytesFile, SummaryFile} {
		a, _ := os.ReadFile(filepath.Join(dir, name))
		b, _ := os.ReadFile(filepath.Join(again, name))
		if !bytes.Equal(a, b) {
			t.Fatalf("%s differs between two writes of the same runs", name)
		}
	}
}

func TestPlotsDiffer(t *testing.T) {
	// A plot that ignored its input would pass TestWrite; this one would not.
	dense, _ := ReadFile("testdata/dense.jsonl", "")
	dp, _ := ReadFile("testdata/dp.jsonl", "")
	var a, b bytes.Buffer
	if err := WriteAccuracyVsBytesPNG(&a, []Run{dense}, ""); err != nil {
		t.Fatal(err)
	}
	if err := WriteAccuracyVsBytesPNG(&b, []Run{dense, dp}, ""); err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Fatal("adding a run did not change the plot")
	}
}

func TestNothingToPlot(t *testing.T) {
	runs := []Run{{Label: "x", Rounds: []Round{{Round: 1, UploadBytes: 10}}}}
	var b bytes.Buffer
	if err := WriteAccuracyPNG(&b, runs, ""); !errors.Is(err, ErrNothingToPlot) {
		t.Fatalf("got %v", err)
	}
	if _, err := Write(t.TempDir(), runs, Options{}); !errors.Is(err, ErrNothingToPlot) {
		t.Fatalf("got %v", err)
	}
	// Evaluated, but nothing uploaded: no point on a log axis.
	runs[0].Rounds[0] = Round{Round: 1, Evaluated: true, TestAccuracy: 0.5}
	if err := WriteAccuracyVsBytesPNG(&b, runs, ""); !errors.Is(err, ErrNothingToPlot) {
		t.Fatalf("got %v", err)
	}
}

func TestBytes(t *testing.T) {
	for _, tc := range []struct {
		n    int64
		want string
	}{
		{0, "0 B"}, {999, "999 B"}, {1000, "1.00 kB"}, {1234, "1.23 kB"}, {12345, "12.3 kB"},
		{123456, "123 kB"}, {999499, "999 kB"}, {999500, "1.00 MB"}, {238_000_000, "238 MB"},
		{1_180_000, "1.18 MB"}, {math.MaxInt64, "9.22 EB"},
	} {
		if got := Bytes(tc.n); got != tc.want {
			t.Errorf("Bytes(%d) = %q, want %q", tc.n, got, tc.want)
		}
	}
}

func TestTicks(t *testing.T) {
	for _, tc := range []struct{ x, want float64 }{
		{0, 1}, {0.3, 0.5}, {1, 1}, {1.1, 2}, {3.75, 5}, {6, 10}, {40, 50}, {5, 5},
	} {
		if got := niceStep(tc.x); math.Abs(got-tc.want) > 1e-12 {
			t.Errorf("niceStep(%g) = %g, want %g", tc.x, got, tc.want)
		}
	}
	var labels []string
	for _, tk := range (byteTicks{}).Ticks(1e5, 1e9) {
		if tk.Label != "" {
			labels = append(labels, tk.Label)
		}
	}
	if got := strings.Join(labels, ","); got != "100 kB,1 MB,10 MB,100 MB,1 GB" {
		t.Fatalf("byte ticks %s", got)
	}
	labels = labels[:0]
	for _, tk := range (byteTicks{}).Ticks(150, 900) {
		if tk.Label != "" {
			labels = append(labels, tk.Label)
		}
	}
	if got := strings.Join(labels, ","); got != "200 B,500 B" {
		t.Fatalf("byte ticks within a decade %s", got)
	}
	labels = labels[:0]
	for _, tk := range (linearTicks{5}).Ticks(60, 100) {
		if tk.Label != "" {
			labels = append(labels, tk.Label)
		}
	}
	if got := strings.Join(labels, ","); got != "60,65,70,75,80,85,90,95,100" {
		t.Fatalf("linear ticks %s", got)
	}
}

// TestReadDenseBytes: the dense byte counts of fedzip simulate are read
// when present and zero in older files.
func TestReadDenseBytes(t *testing.T) {
	run, err := Read(strings.NewReader(`{"round":1,"upload_bytes":10,"download_bytes":900,"dense_upload_bytes":400,"dense_download_bytes":400}
{"round":2,"upload_bytes":10,"download_bytes":40}`), "x")
	if err != nil {
		t.Fatal(err)
	}
	r1, r2 := run.Rounds[0], run.Rounds[1]
	if r1.DenseUploadBytes != 400 || r1.DenseDownloadBytes != 400 || r1.DownloadBytes != 900 || r2.DenseDownloadBytes != 0 || r2.DownloadBytes != 40 {
		t.Fatalf("rounds %+v %+v", r1, r2)
	}
}

// TestTotalPlot: the total-bytes plot puts a run's points at its
// cumulative upload + download, not its upload: for a run that downloads
// far more than it uploads, it differs from the upload plot, and a run
// that uploads and downloads the same moves one point right, by 2×.
func TestTotalPlot(t *testing.T) {
	dp, _ := ReadFile("testdata/dp.jsonl", "")
	var up, total bytes.Buffer
	if err := WriteAccuracyVsBytesPNG(&up, []Run{dp}, ""); err != nil {
		t.Fatal(err)
	}
	if err := WriteAccuracyVsTotalPNG(&total, []Run{dp}, ""); err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(up.Bytes(), total.Bytes()) {
		t.Fatal("the total-bytes plot is the upload plot")
	}
	var xs [][2]int64
	addLines(plot.New(), []Run{dp}, func(r Round, u, tot int64) (float64, bool) {
		xs = append(xs, [2]int64{u, tot})
		return float64(tot), true
	})
	if want := [][2]int64{{2500, 1002500}, {5000, 2005000}}; !reflect.DeepEqual(xs, want) {
		t.Fatalf("cumulative (upload, total) at the evaluated rounds: %v, want %v", xs, want)
	}
}
