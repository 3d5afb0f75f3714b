package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fedzip/fedzip/checkpoint"
	"github.com/fedzip/fedzip/dataset"
	"github.com/fedzip/fedzip/deliver/predict"
	"github.com/fedzip/fedzip/nn"
)

type cmdFunc func(ctx context.Context, args []string, stdout, stderr io.Writer) int

func call(f cmdFunc, args ...string) (code int, stdout, stderr string) {
	var o, e bytes.Buffer
	code = f(context.Background(), args, &o, &e)
	return code, o.String(), e.String()
}

func TestDeliverFlagErrorsExitTwo(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "k.pem")
	if code, _, stderr := call(runCompress, "--gen-key", key); code != exitOK {
		t.Fatal(stderr)
	}
	for _, tc := range []struct {
		name string
		f    cmdFunc
		args []string
	}{
		{"compress", runCompress, nil},
		{"compress", runCompress, []string{"--model", "m", "--out", "o"}},
		{"compress", runCompress, []string{"--model", "m", "--out", "o", "--recipe", "prune=0.9"}},
		{"compress", runCompress, []string{"--model", "m", "--out", "o", "--key", key, "--recipe", "prune=2"}},
		{"compress", runCompress, []string{"--model", "m", "--out", "o", "--key", key, "--recipe", "squash=1"}},
		{"compress", runCompress, []string{"--model", "m", "--out", "o", "--key", key, "--recipe", "prune=0.9", "-o", "xml"}},
		{"compress", runCompress, []string{"--no-such-flag"}},
		{"compress", runCompress, []string{"extra"}},
		{"predict", runPredict, nil},
		{"predict", runPredict, []string{"--model", "m.fzm", "--input", "x"}},
		{"predict", runPredict, []string{"--model", "m.fzm", "--pubkey", "p", "--input", "x", "--limit", "-1"}},
		{"predict", runPredict, []string{"--model", "m.fzm", "--pubkey", "p", "--input", "mnist:test", "--labels", "l"}},
		{"export", runExport, []string{"--model", "m", "--out", "o"}},
		{"export", runExport, []string{"--model", "m", "--out", "o", "--format", "tflite"}},
		{"export", runExport, []string{"--format", "onnx"}},
	} {
		code, _, stderr := call(tc.f, tc.args...)
		if code != exitUsage {
			t.Errorf("%s %v: exit %d, want %d (%s)", tc.name, tc.args, code, exitUsage, stderr)
		}
		if n := strings.Count(strings.TrimRight(stderr, "\n"), "\n"); n != 0 || stderr == "" {
			t.Errorf("%s %v: want one line on stderr, got %q", tc.name, tc.args, stderr)
		}
	}
	for _, f := range []cmdFunc{runCompress, runPredict, runExport} {
		if code, stdout, _ := call(f, "-h"); code != exitOK || !strings.Contains(stdout, "Usage: fedzip") {
			t.Errorf("-h: exit %d, %q", code, stdout)
		}
	}
}

// TestCompressPredictExport runs the three commands on a small MNIST model:
// compress to a signed file, predict from IDX and CSV inputs, refuse the
// file with another key, and export both formats.
func TestCompressPredictExport(t *testing.T) {
	if testing.Short() {
		t.Skip("loads MNIST")
	}
	mnist, err := dataset.MNISTDir("")
	if err != nil {
		t.Skip("MNIST not available:", err)
	}
	dir := t.TempDir()
	mlp, _ := nn.NewMLP(784, 16, 10)
	params := make([]float32, mlp.NumParams())
	mlp.Init(params, 1)
	in := filepath.Join(dir, "m.fzmodel")
	if err := checkpoint.WriteFile(in, checkpoint.New(mlp, params)); err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(dir, "key.pem")
	pub := filepath.Join(dir, "key.pub.pem")
	other := filepath.Join(dir, "other.pem")
	call(runCompress, "--gen-key", key)
	call(runCompress, "--gen-key", other)
	out := filepath.Join(dir, "m.fzm")
	code, stdout, stderr := call(runCompress, "--model", in, "--out", out, "--key", key, "--data-dir", mnist,
		"--recipe", "prune=0.5;cluster=bits:4;encode=huffman,bias:f16", "-o", "json")
	if code != exitOK {
		t.Fatalf("compress: exit %d: %s", code, stderr)
	}
	var res struct {
		DenseBytes int `json:"dense_bytes"`
		Rows       []struct {
			Stage    string  `json:"stage"`
			Bytes    int     `json:"bytes"`
			Ratio    float64 `json:"ratio"`
			Accuracy float64 `json:"test_accuracy"`
		} `json:"rows"`
	}
	if err := json.Unmarshal([]byte(stdout), &res); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, stdout)
	}
	st, err := os.Stat(out)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Rows) != 4 || res.Rows[3].Bytes != int(st.Size()) || res.DenseBytes != 4*len(params) || res.Rows[3].Ratio < 5 {
		t.Fatalf("result %+v, file of %d bytes", res, st.Size())
	}

	images := filepath.Join(mnist, dataset.MNISTTestImages+".gz")
	if _, err := os.Stat(images); err != nil {
		images = filepath.Join(mnist, dataset.MNISTTestImages)
	}
	labels := filepath.Join(mnist, dataset.MNISTTestLabels+".gz")
	if _, err := os.Stat(labels); err != nil {
		labels = filepath.Join(mnist, dataset.MNISTTestLabels)
	}
	var preds []predict.Prediction
	code, stdout, stderr = call(runPredict, "--model", out, "--pubkey", pub, "--input", images, "--labels", labels, "--limit", "3")
	if code != exitOK || strings.Count(stdout, "class ") != 3 || !strings.Contains(stdout, "accuracy") {
		t.Fatalf("predict IDX: exit %d: %s%s", code, stdout, stderr)
	}
	// MNIST's test set by name, found through --data-dir or
	// $FEDZIP_DATA_DIR as simulate finds it: no files to prepare.
	code, stdout, stderr = call(runPredict, "--model", out, "--pubkey", pub, "--input", "mnist:test", "--data-dir", mnist, "--limit", "20")
	if code != exitOK || strings.Count(stdout, "class ") != 20 || strings.Count(stdout, "label ") != 20 || !strings.Contains(stdout, "of 20)") {
		t.Fatalf("predict mnist:test: exit %d: %s%s", code, stdout, stderr)
	}
	t.Setenv(dataset.DataDirEnv, mnist)
	code, stdout, stderr = call(runPredict, "--model", out, "--pubkey", pub, "--input", "mnist:test", "--limit", "2", "-o", "json")
	if code != exitOK || json.Unmarshal([]byte(stdout), &preds) != nil || len(preds) != 2 || preds[0].Label == nil {
		t.Fatalf("predict mnist:test from $%s: exit %d: %s%s", dataset.DataDirEnv, code, stdout, stderr)
	}
	t.Setenv(dataset.DataDirEnv, dir)
	code, _, stderr = call(runPredict, "--model", out, "--pubkey", pub, "--input", "mnist:test")
	if code != exitError || !strings.Contains(stderr, dir) || !strings.Contains(stderr, "--data-dir") {
		t.Fatalf("predict mnist:test without MNIST: exit %d: %s", code, stderr)
	}
	csv := filepath.Join(dir, "x.csv")
	os.WriteFile(csv, []byte(strings.Repeat("0.5,", 783)+"0.5\n"), 0o644)
	code, stdout, stderr = call(runPredict, "--model", out, "--pubkey", pub, "--input", csv, "-o", "json")
	if code != exitOK || json.Unmarshal([]byte(stdout), &preds) != nil || len(preds) != 1 || len(preds[0].Probs) != 10 {
		t.Fatalf("predict CSV: exit %d: %s%s", code, stdout, stderr)
	}
	// Signed by another key: refused.
	code, _, stderr = call(runPredict, "--model", out, "--pubkey", filepath.Join(dir, "other.pub.pem"), "--input", csv)
	if code != exitError || !strings.Contains(stderr, "signature") {
		t.Fatalf("wrong key: exit %d: %s", code, stderr)
	}

	st1 := filepath.Join(dir, "m.safetensors")
	if code, _, stderr := call(runExport, "--model", in, "--format", "safetensors", "--out", st1); code != exitOK {
		t.Fatal(stderr)
	}
	b, _ := os.ReadFile(st1)
	n := binary.LittleEndian.Uint64(b)
	var hdr map[string]any
	if err := json.Unmarshal(b[8:8+n], &hdr); err != nil || hdr["fc1.weight"] == nil {
		t.Fatalf("safetensors header: %v", err)
	}
	if code, _, stderr := call(runExport, "--model", out, "--pubkey", pub, "--format", "onnx", "--out", filepath.Join(dir, "m.onnx")); code != exitOK {
		t.Fatal(stderr)
	}
	if code, _, _ := call(runExport, "--model", out, "--format", "onnx", "--out", filepath.Join(dir, "x.onnx")); code != exitUsage {
		t.Fatalf("fzm without --pubkey: exit %d", code)
	}
}

// TestCompressConvNet compresses a small conv net's model file, predicts
// with the signed file and exports it to ONNX: the commands take conv nets
// as they take MLPs.
func TestCompressConvNet(t *testing.T) {
	if testing.Short() {
		t.Skip("loads MNIST")
	}
	mnist, err := dataset.MNISTDir("")
	if err != nil {
		t.Skip("MNIST not available:", err)
	}
	dir := t.TempDir()
	// The first 2,000 training and 500 test images: what is asserted (a
	// conv net compresses, predicts, exports) does not need all of MNIST,
	// and every stage's accuracy on 10,000 images cost a minute with -race.
	mnist = smallMNIST(t, mnist, filepath.Join(dir, "mnist"), 2000, 500)
	model, err := nn.ParseModel("conv:4x5:valid,pool:4,fc:10", nn.Shape{C: 1, H: 28, W: 28}, 10)
	if err != nil {
		t.Fatal(err)
	}
	params := make([]float32, model.NumParams())
	model.Init(params, 1)
	in := filepath.Join(dir, "c.fzmodel")
	if err := checkpoint.WriteFile(in, checkpoint.New(model, params)); err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(dir, "key.pem")
	call(runCompress, "--gen-key", key)
	out := filepath.Join(dir, "c.fzm")
	code, stdout, stderr := call(runCompress, "--model", in, "--out", out, "--key", key, "--data-dir", mnist,
		"--recipe", "prune=0.5,conv1:0.2;cluster=bits:4;encode=huffman,bias:f16", "--quiet")
	if code != exitOK || !strings.Contains(stdout, "conv:4x5:valid,pool:4,fc:10") {
		t.Fatalf("compress: exit %d: %s%s", code, stdout, stderr)
	}
	pub := filepath.Join(dir, "key.pub.pem")
	code, stdout, stderr = call(runPredict, "--model", out, "--pubkey", pub, "--input", "mnist:test", "--data-dir", mnist, "--limit", "5")
	if code != exitOK || strings.Count(stdout, "class ") != 5 {
		t.Fatalf("predict: exit %d: %s%s", code, stdout, stderr)
	}
	if code, _, stderr := call(runExport, "--model", out, "--pubkey", pub, "--format", "onnx", "--out", filepath.Join(dir, "c.onnx")); code != exitOK {
		t.Fatal(stderr)
	}
}

// smallMNIST writes the first train and test examples of the MNIST in src
// (IDX files, gzipped or not) to dst as MNIST's
// four IDX files and returns dst. It copies bytes: no pixel is converted.
func smallMNIST(t *testing.T, src, dst string, train, test int) string {
	t.Helper()
	if err := os.MkdirAll(dst, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, f := range []struct {
		name string
		n    int
	}{{dataset.MNISTTrainImages, train}, {dataset.MNISTTrainLabels, train}, {dataset.MNISTTestImages, test}, {dataset.MNISTTestLabels, test}} {
		path := filepath.Join(src, f.name+".gz")
		if _, err := os.Stat(path); err != nil {
			path = filepath.Join(src, f.name) // $FEDZIP_DATA_DIR may hold them unzipped
		}
		x, err := dataset.ReadIDXFile(path)
		if err != nil {
			t.Fatal(err)
		}
		per := len(x.Data) / x.Dims[0]
		x.Dims[0], x.Data = f.n, x.Data[:f.n*per]
		out, err := os.Create(filepath.Join(dst, f.name))
		if err != nil {
			t.Fatal(err)
		}
		if err := dataset.WriteIDX(out, x); err != nil {
			t.Fatal(err)
		}
		if err := out.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}
