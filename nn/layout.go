package nn

import (
	"fmt"
	"slices"
	"strings"
)

// Tensor names one tensor inside a flat parameter vector: the elements
// params[Offset : Offset+Size()] in row-major order of Shape.
type Tensor struct {
	Name   string
	Shape  []int
	Offset int
}

// Size returns the number of elements of t.
func (t Tensor) Size() int {
	n := 1
	for _, d := range t.Shape {
		n *= d
	}
	return n
}

// Layout describes a flat parameter vector as an ordered list of named
// tensors that tile it without gaps.
type Layout struct {
	Tensors []Tensor
	// Size is the total number of parameters.
	Size int
}

// Slice returns the elements of tensor i inside params.
func (l Layout) Slice(params []float32, i int) []float32 {
	t := l.Tensors[i]
	return params[t.Offset : t.Offset+t.Size()]
}

// Shapes returns the shapes of the tensors, in order (copies).
func (l Layout) Shapes() [][]int {
	out := make([][]int, len(l.Tensors))
	for i, t := range l.Tensors {
		out[i] = slices.Clone(t.Shape)
	}
	return out
}

// Find returns the index of the tensor called name, or -1.
func (l Layout) Find(name string) int {
	for i, t := range l.Tensors {
		if t.Name == name {
			return i
		}
	}
	return -1
}

// Validate checks that the tensors tile [0, Size) in order with positive
// shapes.
func (l Layout) Validate() error {
	off := 0
	for _, t := range l.Tensors {
		if t.Name == "" {
			return fmt.Errorf("nn: layout: tensor at offset %d has no name", t.Offset)
		}
		if len(t.Shape) == 0 {
			return fmt.Errorf("nn: layout: tensor %q has no shape", t.Name)
		}
		for _, d := range t.Shape {
			if d <= 0 {
				return fmt.Errorf("nn: layout: tensor %q has shape %v", t.Name, t.Shape)
			}
		}
		if t.Offset != off {
			return fmt.Errorf("nn: layout: tensor %q at offset %d, want %d", t.Name, t.Offset, off)
		}
		off += t.Size()
	}
	if off != l.Size {
		return fmt.Errorf("nn: layout: tensors cover %d parameters, size is %d", off, l.Size)
	}
	return nil
}

// Equal reports whether two layouts have the same tensors.
func (l Layout) Equal(o Layout) bool {
	if l.Size != o.Size || len(l.Tensors) != len(o.Tensors) {
		return false
	}
	for i, t := range l.Tensors {
		u := o.Tensors[i]
		if t.Name != u.Name || t.Offset != u.Offset || !slices.Equal(t.Shape, u.Shape) {
			return false
		}
	}
	return true
}

// String renders the layout as "name[d0×d1] ...".
func (l Layout) String() string {
	var b strings.Builder
	for i, t := range l.Tensors {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(t.Name)
		b.WriteByte('[')
		for j, d := range t.Shape {
			if j > 0 {
				b.WriteString("×")
			}
			fmt.Fprint(&b, d)
		}
		b.WriteByte(']')
	}
	return b.String()
}
