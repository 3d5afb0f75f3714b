package predict

import (
	"bytes"
	"compress/gzip"
	"crypto/ed25519"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fedzip/fedzip/dataset"
	"github.com/fedzip/fedzip/deliver"
)

func write(t *testing.T, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// idx returns an IDX file of n ubyte items of the given shape.
func idx(n int, shape []int, fill func(i int) byte) []byte {
	b := []byte{0, 0, dataset.IDXUint8, byte(1 + len(shape))}
	size := n
	for _, d := range append([]int{n}, shape...) {
		b = append(b, byte(d>>24), byte(d>>16), byte(d>>8), byte(d))
	}
	for _, d := range shape {
		size *= d
	}
	for i := range size {
		b = append(b, fill(i))
	}
	return b
}

func TestReadFile(t *testing.T) {
	images := idx(3, []int{2, 2}, func(i int) byte { return byte(i * 20) })
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(images)
	zw.Close()
	for name, data := range map[string][]byte{"plain": images, "gzip": gz.Bytes()} {
		x, n, err := ReadFile(write(t, name, data), 4)
		if err != nil || n != 3 || len(x) != 12 || x[1] != 20.0/255 {
			t.Fatalf("%s: %d rows, %v, %v", name, n, x, err)
		}
	}
	x, n, err := ReadFile(write(t, "x.csv", []byte("# two rows\n0.5, 1,2 3\n\n4\t5,6,7\n")), 4)
	if err != nil || n != 2 || x[0] != 0.5 || x[7] != 7 {
		t.Fatalf("csv: %d rows, %v, %v", n, x, err)
	}
	for _, tc := range []struct {
		body string
		dim  int
		want string
	}{
		{"1,2,3\n", 4, "x.csv:1: 3 values, the model takes 4"},
		{"1,2,3,4\n1,2,x,4\n", 4, "x.csv:2:"},
		{"# nothing\n", 4, "no inputs"},
		// Not finite: a device would predict from NaN.
		{"1,NaN,3,4\n", 4, "x.csv:1: NaN is not a finite number"},
		{"1,2,3,4\n1,2,-Inf,4\n", 4, "x.csv:2: -Inf is not a finite number"},
	} {
		if _, _, err := ReadFile(write(t, "x.csv", []byte(tc.body)), tc.dim); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want %q", tc.body, err, tc.want)
		}
	}
	if _, _, err := ReadFile(write(t, "img", images), 5); err == nil || !strings.Contains(err.Error(), "the model takes 5") {
		t.Errorf("images of another size: %v", err)
	}
}

// TestRunAndLabels runs a one-layer device model over labelled inputs.
func TestRunAndLabels(t *testing.T) {
	pub, key, err := deliver.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	// Class 0 if the first input is larger, else class 1.
	f := &deliver.File{Input: 2, Tensors: []deliver.Tensor{
		{Name: "w", Shape: []int{2, 2}, Encoding: deliver.Float32, Values: []float32{1, 0, 0, 1}},
		{Name: "b", Shape: []int{2}, Encoding: deliver.Float32, Values: []float32{0, 0}},
	}, Layers: []deliver.Layer{{Weights: []int{0}, Bias: 1}}}
	net := load(t, f, key, pub)
	images := write(t, "img", idx(3, []int{2}, func(i int) byte { return []byte{200, 10, 10, 200, 90, 80}[i] }))
	labels := write(t, "lbl", idx(3, nil, func(i int) byte { return []byte{0, 1, 1}[i] }))
	in, err := Read(images, labels, "", 2)
	if err != nil {
		t.Fatal(err)
	}
	res := Run(net, in, 0)
	if len(res.Predictions) != 3 || res.Correct != 2 || res.Predictions[1].Class != 1 || *res.Predictions[2].Label != 1 {
		t.Fatalf("%+v", res)
	}
	var b strings.Builder
	res.WriteTable(&b)
	if !strings.HasSuffix(b.String(), "accuracy 66.67% (2 of 3)\n") || strings.Count(b.String(), "class ") != 3 {
		t.Fatalf("table:\n%s", b.String())
	}
	if res := Run(net, in, 1); len(res.Predictions) != 1 || res.Correct != 1 {
		t.Fatalf("limit 1: %+v", res)
	}
	if _, err := Read(images, write(t, "few", idx(2, nil, func(int) byte { return 0 })), "", 2); err == nil {
		t.Fatal("2 labels for 3 images accepted")
	}
	if _, err := Read(MNISTTest, "", "", 2); err == nil || !strings.Contains(err.Error(), "784") {
		t.Fatalf("mnist:test for a model of 2 inputs: %v", err)
	}
}

func load(t *testing.T, f *deliver.File, key ed25519.PrivateKey, pub ed25519.PublicKey) *deliver.Net {
	t.Helper()
	e, err := deliver.Encode(f, key)
	if err != nil {
		t.Fatal(err)
	}
	net, err := deliver.Load(e.Data, pub)
	if err != nil {
		t.Fatal(err)
	}
	return net
}

// FuzzParseText: text inputs give rows of dim values or an error, never a
// panic.
func FuzzParseText(f *testing.F) {
	for _, s := range []string{"1,2,3\n", "# c\n1 2 3\n4\t5\t6\n", "1,2\n", "x,y,z\n", "1e40,2,3\n", ""} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		x, n, err := parseText("f", b, 3)
		if err == nil && (n == 0 || len(x) != 3*n) {
			t.Fatalf("%d rows, %d values", n, len(x))
		}
		for _, v := range x {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				t.Fatalf("accepted %v", v)
			}
		}
	})
}
