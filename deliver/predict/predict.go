// Package predict runs a device model (deliver.Net) over a batch of inputs
// read from files: an IDX images file such as MNIST's (optionally
// gzipped; pixels scaled by 1/255), text lines of comma- or space-separated
// floats, or MNIST's test set found as the simulator finds it (the input
// "mnist:test": --data-dir, $FEDZIP_DATA_DIR, then the GoMNIST module).
// It is what 'fedzip predict' runs; the device runtime itself stays in
// package deliver, which imports none of this.
package predict

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"

	"github.com/fedzip/fedzip/dataset"
	"github.com/fedzip/fedzip/deliver"
	"github.com/fedzip/fedzip/internal/boundedfile"
)

// MNISTTest is the input that names MNIST's test set.
const MNISTTest = "mnist:test"

// MaxInputBytes bounds an input file.
const MaxInputBytes = 1 << 30

// Inputs are n rows of Dim features, and their labels if known.
type Inputs struct {
	X      []float32
	N, Dim int
	// Y holds a label per row, or is nil.
	Y []uint8
}

// Read reads the inputs of a model that takes dim features: MNISTTest
// (with its labels; dataDir as dataset.MNISTDir takes it), or a file (see
// ReadFile). labels, if not empty, names an IDX file of one ubyte label
// per input.
func Read(input, labels, dataDir string, dim int) (*Inputs, error) {
	var in *Inputs
	if input == MNISTTest {
		if labels != "" {
			return nil, errors.New("--labels: mnist:test brings its own labels")
		}
		if dim != dataset.MNISTDim {
			return nil, fmt.Errorf("the model takes %d inputs, MNIST images have %d", dim, dataset.MNISTDim)
		}
		dir, err := dataset.MNISTDir(dataDir)
		if err != nil {
			return nil, fmt.Errorf("%w (set --data-dir)", err)
		}
		test, err := dataset.LoadMNISTTest(dir)
		if err != nil {
			return nil, err
		}
		return &Inputs{X: test.X, N: test.N, Dim: test.Dim, Y: test.Y}, nil
	}
	x, n, err := ReadFile(input, dim)
	if err != nil {
		return nil, err
	}
	in = &Inputs{X: x, N: n, Dim: dim}
	if labels != "" {
		idx, err := dataset.ReadIDXFile(labels)
		if err != nil {
			return nil, err
		}
		if idx.Type != dataset.IDXUint8 || len(idx.Dims) != 1 || idx.Dims[0] != n {
			return nil, fmt.Errorf("%s: want %d ubyte labels", labels, n)
		}
		in.Y = idx.Data
	}
	return in, nil
}

// ReadFile reads an IDX images file (told by its magic, or gzipped) or
// lines of dim floats (blank lines and lines starting with # skipped),
// returning the rows and their count. Errors name the file and the line.
func ReadFile(path string, dim int) ([]float32, int, error) {
	// The first bytes tell the kind: an IDX file is read once, by the
	// IDX reader and its bounds, not first whole into memory.
	head, err := readHead(path, 4)
	if err != nil {
		return nil, 0, err
	}
	isGzip := len(head) >= 2 && head[0] == 0x1f && head[1] == 0x8b
	isIDX := len(head) >= 4 && head[0] == 0 && head[1] == 0 && head[2] == dataset.IDXUint8
	if isGzip || isIDX {
		idx, err := dataset.ReadIDXFile(path)
		if err != nil {
			return nil, 0, err
		}
		if idx.Type != dataset.IDXUint8 || len(idx.Dims) < 2 {
			return nil, 0, fmt.Errorf("%s: want ubyte images", path)
		}
		n := idx.Dims[0]
		if len(idx.Data) != n*dim {
			return nil, 0, fmt.Errorf("%s: images of %d pixels, the model takes %d", path, len(idx.Data)/max(n, 1), dim)
		}
		x := make([]float32, len(idx.Data))
		for i, b := range idx.Data {
			x[i] = float32(b) / 255
		}
		return x, n, nil
	}
	text, err := boundedfile.Read(path, MaxInputBytes)
	if err != nil {
		return nil, 0, err
	}
	return parseText(path, text, dim)
}

// parseText parses lines of dim floats.
func parseText(path string, text []byte, dim int) ([]float32, int, error) {
	var x []float32
	n := 0
	sc := bufio.NewScanner(bytes.NewReader(text))
	sc.Buffer(make([]byte, 1<<16), 1<<24)
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		fields := strings.FieldsFunc(text, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' })
		if len(fields) != dim {
			return nil, 0, fmt.Errorf("%s:%d: %d values, the model takes %d", path, line, len(fields), dim)
		}
		for _, f := range fields {
			v, err := strconv.ParseFloat(f, 32)
			if err != nil {
				return nil, 0, fmt.Errorf("%s:%d: %v", path, line, err)
			}
			if math.IsNaN(v) || math.IsInf(v, 0) {
				return nil, 0, fmt.Errorf("%s:%d: %s is not a finite number", path, line, f)
			}
			x = append(x, float32(v))
		}
		n++
	}
	if err := sc.Err(); err != nil {
		return nil, 0, fmt.Errorf("%s: %w", path, err)
	}
	if n == 0 {
		return nil, 0, fmt.Errorf("%s: no inputs", path)
	}
	return x, n, nil
}

// readHead returns the first n bytes of a file (fewer if it is shorter).
func readHead(path string, n int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, n))
}

// Prediction is one input's result.
type Prediction struct {
	Index int       `json:"index"`
	Class int       `json:"class"`
	Probs []float32 `json:"probabilities"`
	Label *int      `json:"label,omitempty"`
}

// Result is the predictions of a batch, and how many matched their labels.
type Result struct {
	Predictions []Prediction
	// Labelled says the inputs had labels; Correct counts the matches.
	Labelled bool
	Correct  int
}

// Run predicts the class of the first limit inputs (all if limit is 0 or
// more than there are) with net, one at a time as a device would.
func Run(net *deliver.Net, in *Inputs, limit int) *Result {
	n := in.N
	if limit > 0 {
		n = min(n, limit)
	}
	res := &Result{Predictions: make([]Prediction, 0, n), Labelled: in.Y != nil}
	s := net.NewScratch()
	dim := net.InputDim()
	for i := range n {
		probs := make([]float32, net.Classes())
		c := net.Predict(probs, in.X[i*dim:(i+1)*dim], s)
		p := Prediction{Index: i, Class: c, Probs: probs}
		if in.Y != nil {
			l := int(in.Y[i])
			p.Label = &l
			if l == c {
				res.Correct++
			}
		}
		res.Predictions = append(res.Predictions, p)
	}
	return res
}

// Accuracy is the fraction of labelled predictions that are right.
func (r *Result) Accuracy() float64 {
	return float64(r.Correct) / float64(max(len(r.Predictions), 1))
}

// WriteTable writes a line per prediction (index, class, probabilities,
// label) and, with labels, the accuracy as the last line.
func (r *Result) WriteTable(w io.Writer) error {
	bw := bufio.NewWriter(w)
	for _, p := range r.Predictions {
		fmt.Fprintf(bw, "%d\tclass %d\t", p.Index, p.Class)
		for j, q := range p.Probs {
			if j > 0 {
				bw.WriteByte(' ')
			}
			fmt.Fprintf(bw, "%.4f", q)
		}
		if p.Label != nil {
			fmt.Fprintf(bw, "\tlabel %d", *p.Label)
		}
		bw.WriteByte('\n')
	}
	if r.Labelled && len(r.Predictions) > 0 {
		fmt.Fprintf(bw, "accuracy %.2f%% (%d of %d)\n", 100*r.Accuracy(), r.Correct, len(r.Predictions))
	}
	return bw.Flush()
}
