package dataset

import (
	"fmt"
	"slices"

	"github.com/fedzip/fedzip/nn"
)

// Dataset is an in-memory labelled dataset: N examples of Dim float32
// features each, stored row-major in X, with one label per example in Y.
// Every label is in [0, Classes).
type Dataset struct {
	Name    string
	X       []float32 // N rows of Dim features, row-major
	Y       []uint8   // N labels in [0, Classes)
	N       int
	Dim     int
	Classes int
	// Shape is the shape of one example (C×H×W, an image in NCHW order),
	// Dim floats in all. The zero Shape means a flat vector, 1×1×Dim; see
	// InputShape.
	Shape nn.Shape
	// ClassNames names the classes, Classes of them, when the data came
	// with names (class folders, CSV label names; "0".."9" for numeric
	// labels of files); nil otherwise. Subsets share it: do not modify it.
	ClassNames []string
}

// InputShape returns the shape of one example: Shape, or 1×1×Dim when
// Shape is zero.
func (d *Dataset) InputShape() nn.Shape {
	if d.Shape == (nn.Shape{}) {
		return nn.Flat(d.Dim)
	}
	return d.Shape
}

// Row returns example i's features, d.X[i*Dim:(i+1)*Dim]. The slice aliases
// d.X; it panics if i is out of range.
func (d *Dataset) Row(i int) []float32 {
	return d.X[i*d.Dim : (i+1)*d.Dim : (i+1)*d.Dim]
}

// Validate reports whether d's fields are consistent: len(X) == N*Dim,
// len(Y) == N and every label is below Classes.
func (d *Dataset) Validate() error {
	switch {
	case d.N < 0 || d.Dim < 1 || d.Classes < 1 || d.Classes > 256:
		return fmt.Errorf("dataset %q: %w: N=%d Dim=%d Classes=%d", d.Name, ErrMismatch, d.N, d.Dim, d.Classes)
	case d.Shape != (nn.Shape{}) && d.Shape.Dim() != d.Dim:
		return fmt.Errorf("dataset %q: %w: shape %v holds %d floats, Dim=%d", d.Name, ErrMismatch, d.Shape, d.Shape.Dim(), d.Dim)
	case len(d.X) != d.N*d.Dim:
		return fmt.Errorf("dataset %q: %w: len(X)=%d, want N*Dim=%d", d.Name, ErrMismatch, len(d.X), d.N*d.Dim)
	case len(d.Y) != d.N:
		return fmt.Errorf("dataset %q: %w: len(Y)=%d, want N=%d", d.Name, ErrMismatch, len(d.Y), d.N)
	}
	for i, y := range d.Y {
		if int(y) >= d.Classes {
			return fmt.Errorf("dataset %q: %w: label %d at index %d is not in [0,%d)", d.Name, ErrMismatch, y, i, d.Classes)
		}
	}
	return nil
}

// Subset returns a new Dataset holding copies of the examples idx, in that
// order. It panics if an index is out of range.
func (d *Dataset) Subset(idx []int) *Dataset {
	s := &Dataset{
		Name:    d.Name,
		X:       make([]float32, 0, len(idx)*d.Dim),
		Y:       make([]uint8, 0, len(idx)),
		N:       len(idx),
		Dim:     d.Dim,
		Classes: d.Classes,
		Shape:   d.Shape,

		ClassNames: d.ClassNames,
	}
	for _, i := range idx {
		s.X = append(s.X, d.Row(i)...)
		s.Y = append(s.Y, d.Y[i])
	}
	return s
}

// ClassCounts returns how many of the examples idx have each label; with
// idx == nil it counts all of them. It panics if an index is out of range.
func (d *Dataset) ClassCounts(idx []int) []int {
	return LabelCounts(d.Y, d.Classes, idx)
}

// LabelCounts returns a histogram of labels[i] for i in idx (all of labels
// when idx is nil), with classes bins. Labels >= classes are not counted.
func LabelCounts(labels []uint8, classes int, idx []int) []int {
	c := make([]int, classes)
	add := func(y uint8) {
		if int(y) < classes {
			c[y]++
		}
	}
	if idx == nil {
		for _, y := range labels {
			add(y)
		}
		return c
	}
	for _, i := range idx {
		add(labels[i])
	}
	return c
}

// Partition assigns example indices (into one Dataset) to clients: p[k] is
// client k's indices. The partitioners in this package return each client's
// indices in ascending order and never give an index to two clients.
type Partition [][]int

// Sizes returns the number of examples of each client.
func (p Partition) Sizes() []int {
	s := make([]int, len(p))
	for k, idx := range p {
		s[k] = len(idx)
	}
	return s
}

// Total returns the number of indices over all clients.
func (p Partition) Total() int {
	t := 0
	for _, idx := range p {
		t += len(idx)
	}
	return t
}

// Validate checks that every index is in [0, n) and that no index appears
// twice, in one client or across clients. It does not require every index
// to be assigned (Shards drops a remainder).
func (p Partition) Validate(n int) error {
	seen := make([]bool, n)
	for k, idx := range p {
		for _, i := range idx {
			if i < 0 || i >= n {
				return fmt.Errorf("dataset: partition: %w: client %d has index %d outside [0,%d)", ErrMismatch, k, i, n)
			}
			if seen[i] {
				return fmt.Errorf("dataset: partition: %w: index %d assigned twice (again to client %d)", ErrMismatch, i, k)
			}
			seen[i] = true
		}
	}
	return nil
}

// Clone returns a deep copy of p.
func (p Partition) Clone() Partition {
	q := make(Partition, len(p))
	for k, idx := range p {
		q[k] = slices.Clone(idx)
	}
	return q
}
