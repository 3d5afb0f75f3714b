package main

import (
	"bufio"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"strconv"
)

// Your data never leaves your machine: this file reads it. The format is
// the simplest there is, one example per line, the label first and the
// features after it:
//
//	label,f1,f2,...,fD
//	2,0.12,0.80,...,0.33
//
// A first line whose label is not a number is a header and is skipped.
// Labels are 0..classes-1.

// Bounds on what readCSV accepts, checked before it allocates, so that a
// broken or hostile file fails with an error instead of exhausting memory.
const (
	maxRows     = 1 << 20
	maxFeatures = 1 << 16
	maxValues   = 1 << 26 // rows × features: 256 MiB of float32
	maxClasses  = 256
	maxBytes    = 1 << 30
	// maxLine bounds one line (65,536 features of up to 31 characters),
	// checked as bytes arrive: encoding/csv would otherwise hold a whole
	// line, and a field header per comma, before the column count is seen.
	maxLine = 2 << 20
)

// errData is wrapped by every error readCSV returns about the file's
// contents.
var errData = errors.New("custom-trainer: bad data file")

// data is a labelled data set in memory: N rows of Dim features in X,
// row-major, and one label per row in Y.
type data struct {
	X       []float32
	Y       []uint8
	N, Dim  int
	Classes int // 1 + the largest label
}

// row returns example i's features.
func (d *data) row(i int) []float32 { return d.X[i*d.Dim : (i+1)*d.Dim] }

// readCSV reads a label column and Dim feature columns. Every line must
// have the same number of columns, every feature must be a finite number
// and every label an integer in 0..255.
func readCSV(r io.Reader) (*data, error) {
	lr := &io.LimitedReader{R: r, N: maxBytes + 1}
	cr := csv.NewReader(bufio.NewReader(&lineGuard{r: lr}))
	cr.ReuseRecord = true
	d := &data{}
	for line := 1; ; line++ {
		rec, err := cr.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %w", errData, err)
		}
		if d.N == 0 && d.Dim == 0 {
			if len(rec) < 2 || len(rec)-1 > maxFeatures {
				return nil, fmt.Errorf("%w: line %d: %d columns, want a label and 1..%d features", errData, line, len(rec), maxFeatures)
			}
			if _, err := strconv.Atoi(rec[0]); err != nil && line == 1 {
				continue // a header
			}
			d.Dim = len(rec) - 1
		}
		if d.N >= maxRows || (d.N+1)*d.Dim > maxValues {
			return nil, fmt.Errorf("%w: more than %d rows or %d values", errData, maxRows, maxValues)
		}
		label, err := strconv.Atoi(rec[0])
		if err != nil || label < 0 || label >= maxClasses {
			return nil, fmt.Errorf("%w: line %d: label %q is not an integer in 0..%d", errData, line, rec[0], maxClasses-1)
		}
		d.Y = append(d.Y, uint8(label))
		d.Classes = max(d.Classes, label+1)
		for j, s := range rec[1:] {
			v, err := strconv.ParseFloat(s, 32)
			if err != nil || math.IsInf(v, 0) || math.IsNaN(v) {
				return nil, fmt.Errorf("%w: line %d, column %d: %q is not a finite number", errData, line, j+2, s)
			}
			d.X = append(d.X, float32(v))
		}
		d.N++
	}
	if lr.N == 0 {
		return nil, fmt.Errorf("%w: larger than %d bytes", errData, maxBytes)
	}
	if d.N == 0 {
		return nil, fmt.Errorf("%w: no examples", errData)
	}
	return d, nil
}

// generate writes rows examples of a made-up image task to w, as readCSV
// reads them: side×side grey images in [0, 1], each class a fixed random
// pattern of two blobs (drawn from patternSeed, so that every client's file has the
// same classes) plus noise (drawn from seed). A linear model separates
// the classes well; a small conv net does too.
func generate(w io.Writer, rows, side, classes int, noise float64, patternSeed, seed uint64) error {
	if rows < 1 || side < 1 || side*side > maxFeatures || classes < 2 || classes > maxClasses || !(noise >= 0 && noise <= 100) {
		return fmt.Errorf("generate: %d rows of %d×%d pixels in %d classes: out of range", rows, side, side, classes)
	}
	d := side * side
	// Each class's pattern is two soft blobs at random places, in [0, 1].
	pr := rand.New(rand.NewPCG(patternSeed, 1))
	patterns := make([]float64, classes*d)
	sigma := max(float64(side)/5, 1)
	for c := range classes {
		for range 2 {
			cy, cx := pr.Float64()*float64(side), pr.Float64()*float64(side)
			for i := range side {
				for j := range side {
					dy, dx := float64(i)-cy, float64(j)-cx
					p := &patterns[c*d+i*side+j]
					*p = max(*p, math.Exp(-(dy*dy+dx*dx)/(2*sigma*sigma)))
				}
			}
		}
	}
	r := rand.New(rand.NewPCG(seed, 2))
	bw := bufio.NewWriter(w)
	fmt.Fprint(bw, "label")
	for j := range d {
		fmt.Fprintf(bw, ",p%d", j)
	}
	fmt.Fprintln(bw)
	buf := make([]byte, 0, 16)
	for range rows {
		c := r.IntN(classes)
		fmt.Fprint(bw, c)
		for _, p := range patterns[c*d : (c+1)*d] {
			v := min(max(p+noise*r.NormFloat64(), 0), 1)
			buf = strconv.AppendFloat(append(buf[:0], ','), v, 'f', 3, 64)
			bw.Write(buf)
		}
		fmt.Fprintln(bw)
	}
	return bw.Flush()
}

// lineGuard fails a read once a line grows past maxLine bytes.
type lineGuard struct {
	r   io.Reader
	run int // bytes since the last newline
}

func (g *lineGuard) Read(p []byte) (int, error) {
	n, err := g.r.Read(p)
	for _, b := range p[:n] {
		if b == '\n' {
			g.run = 0
			continue
		}
		if g.run++; g.run > maxLine {
			return 0, fmt.Errorf("a line longer than %d bytes", maxLine)
		}
	}
	return n, err
}
