package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"image"
	"image/png"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fedzip/fedzip/report"
)

// writeBlobsCSV writes n rows "client,label,f0..f3" (with a header) where
// the label is the feature that is largest: client c holds mostly labels c
// and c+1, so the natural split is non-IID.
func writeBlobsCSV(t *testing.T, path string, n int, seed uint64) {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, 1))
	var b strings.Builder
	b.WriteString("client,label,f0,f1,f2,f3\n")
	for i := range n {
		c := i % 4
		y := (c + r.IntN(2)) % 4
		fmt.Fprintf(&b, "user%d,%d", c, y)
		for j := range 4 {
			v := r.NormFloat64() * 0.3
			if j == y {
				v += 2
			}
			fmt.Fprintf(&b, ",%.4f", v)
		}
		b.WriteByte('\n')
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestSimulateCSVNatural trains on a CSV split by its client column and
// evaluates on a test CSV; a --clients other than the data's names the
// right number.
func TestSimulateCSVNatural(t *testing.T) {
	dir := t.TempDir()
	train, test := filepath.Join(dir, "train.csv"), filepath.Join(dir, "test.csv")
	writeBlobsCSV(t, train, 400, 1)
	writeBlobsCSV(t, test, 200, 2)
	src := "csv:" + train + ",client=client,label=label,test=" + test
	code, stdout, stderr := runCmd("simulate", "--dataset", src, "--partition", "natural", "--clients", "4", "--fraction", "0.5",
		"--model", "mlp:8", "--rounds", "5", "-o", "json", "--quiet", "--deliver", "",
		// Dense updates: a top-k fraction of a 76-parameter model is a
		// coordinate or two, and this test is about the data.
		"--upload-codec", "none", "--download-codec", "none", "--strategy", "fedavg")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var s report.Simulation
	if err := json.Unmarshal([]byte(stdout), &s); err != nil {
		t.Fatal(err)
	}
	if s.Clients != 4 || s.Partition != "natural" || s.Params != 4*8+8+8*4+4 || !(s.FinalAccuracy > 0.8) {
		t.Fatalf("clients %d partition %q params %d accuracy %v", s.Clients, s.Partition, s.Params, s.FinalAccuracy)
	}
	code, _, stderr = runCmd("simulate", "--dataset", src, "--partition", "natural", "--clients", "3", "--rounds", "1", "--quiet", "--deliver", "")
	if code == exitOK || !strings.Contains(stderr, "--clients 4") {
		t.Fatalf("wrong --clients: exit %d: %s", code, stderr)
	}
}

// TestSimulateImageFolder trains on PNGs in client/class folders, split
// naturally, and evaluates on a class-layout test folder: the model's
// input is the images' 1×4×4.
func TestSimulateImageFolder(t *testing.T) {
	dir := t.TempDir()
	write := func(path string, v uint8) {
		img := image.NewGray(image.Rect(0, 0, 4, 4))
		for i := range img.Pix {
			img.Pix[i] = v
			if i%4 < 2 { // class "dark" is dark on the left, "light" everywhere
				img.Pix[i] /= 4
			}
		}
		var b bytes.Buffer
		if err := png.Encode(&b, img); err != nil {
			t.Fatal(err)
		}
		os.MkdirAll(filepath.Dir(path), 0o755)
		if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for c := range 3 {
		for i := range 6 {
			write(filepath.Join(dir, "train", fmt.Sprint("site", c), "dark", fmt.Sprint(i, ".png")), uint8(200+i))
			write(filepath.Join(dir, "train", fmt.Sprint("site", c), "light", fmt.Sprint(i, ".png")), 255)
		}
	}
	write(filepath.Join(dir, "test", "dark", "a.png"), 210)
	write(filepath.Join(dir, "test", "light", "a.png"), 255)
	src := "images:" + filepath.Join(dir, "train") + ",layout=client/class,test=" + filepath.Join(dir, "test")
	code, stdout, stderr := runCmd("simulate", "--dataset", src, "--partition", "natural", "--clients", "3", "--fraction", "1",
		"--model", "mlp:4", "--rounds", "2", "-o", "json", "--quiet", "--deliver", "")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var s report.Simulation
	if err := json.Unmarshal([]byte(stdout), &s); err != nil {
		t.Fatal(err)
	}
	if s.Clients != 3 || s.Params != 16*4+4+4*2+2 {
		t.Fatalf("clients %d params %d, want 3 and a 16-4-2 MLP", s.Clients, s.Params)
	}
}
