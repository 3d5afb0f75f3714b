package dataset

import (
	"fmt"

	"github.com/fedzip/fedzip/nn"
)

// idxShape returns the shape of one item of an IDX file with dimensions
// dims (dims[0] counts the items): [N] 1×1×1, [N F] 1×1×F, [N H W] 1×H×W,
// [N C H W] C×H×W; more dimensions are refused with ErrMismatch.
func idxShape(path string, dims []int) (nn.Shape, error) {
	switch len(dims) {
	case 1:
		return nn.Flat(1), nil
	case 2:
		return nn.Flat(dims[1]), nil
	case 3:
		return nn.Shape{C: 1, H: dims[1], W: dims[2]}, nil
	case 4:
		return nn.Shape{C: dims[1], H: dims[2], W: dims[3]}, nil
	}
	return nn.Shape{}, fmt.Errorf("dataset: %s: %w: %d dimensions, want 2 to 4 (N items of F, H×W or C×H×W)", path, ErrMismatch, len(dims))
}

// idxLimit bounds an idx: source's payload: MaxFileIDXBytes, and MaxFloats
// elements.
func idxLimit(typ byte) int64 {
	return min(MaxFileIDXBytes, MaxFloats*int64(max(IDXElemSize(typ), 1)))
}

// readIDXLabels reads an IDX labels file: one dimension of n integers
// (any integer type) in 0..255.
func readIDXLabels(path string, n int) ([]uint8, error) {
	x, err := ReadIDXFile(path)
	if err != nil {
		return nil, err
	}
	if len(x.Dims) != 1 || x.Type == IDXFloat32 || x.Type == IDXFloat64 {
		return nil, fmt.Errorf("dataset: %s: %w: element type 0x%02X with %d dimensions, labels need an integer type with 1",
			path, ErrMismatch, x.Type, len(x.Dims))
	}
	if x.Dims[0] != n {
		return nil, fmt.Errorf("dataset: %s: %w: %d labels for %d items", path, ErrMismatch, x.Dims[0], n)
	}
	es := IDXElemSize(x.Type)
	y := make([]uint8, n)
	for i := range y {
		v := 0
		if x.Type == IDXUint8 {
			v = int(x.Data[i])
		} else {
			v = int(idxElem(x.Type, x.Data[i*es:]))
		}
		if v < 0 || v >= MaxClasses {
			return nil, fmt.Errorf("dataset: %s: %w: label %d at index %d is not in 0..%d", path, ErrMismatch, v, i, MaxClasses-1)
		}
		y[i] = uint8(v)
	}
	return y, nil
}

// readIDXPair reads an images file and its labels file.
func readIDXPair(images, labels string, want nn.Shape) (*Dataset, error) {
	var sh nn.Shape
	x, h, err := readIDXFloats(images, MaxFileIDXBytes, func(h *idxHeader) error {
		if h.size > idxLimit(h.typ) {
			return fmt.Errorf("dataset: %s: %w: %d payload bytes, at most %d", images, ErrTooLarge, h.size, idxLimit(h.typ))
		}
		var err error
		if sh, err = idxShape(images, h.dims); err != nil {
			return err
		}
		if want != (nn.Shape{}) && sh != want {
			return fmt.Errorf("dataset: %s: %w: items of %v, the training items are %v", images, ErrMismatch, sh, want)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	y, err := readIDXLabels(labels, h.dims[0])
	if err != nil {
		return nil, err
	}
	return &Dataset{Name: images, X: x, Y: y, N: h.dims[0], Dim: sh.Dim(), Shape: sh}, nil
}

// loadIDXSource reads an idx: source. Classes are classes= or the largest
// training label + 1; test labels must be below it.
func loadIDXSource(src Source) (*FileData, error) {
	train, err := readIDXPair(src.Paths[0], src.Paths[1], nn.Shape{})
	if err != nil {
		return nil, err
	}
	if train.Classes, err = classesOf(train.Y, src.Classes, src.Paths[1]); err != nil {
		return nil, err
	}
	train.ClassNames = numberNames(train.Classes)
	fd := &FileData{Train: train}
	if len(src.Test) == 2 {
		test, err := readIDXPair(src.Test[0], src.Test[1], train.Shape)
		if err != nil {
			return nil, err
		}
		if test.Classes, err = classesOf(test.Y, train.Classes, src.Test[1]); err != nil {
			return nil, err
		}
		test.ClassNames = train.ClassNames
		fd.Test = test
	}
	return fd, nil
}

// describeIDX reads an idx: source's images header and, unless classes=
// is given, its labels.
func describeIDX(src Source) (nn.Shape, int, error) {
	f, r, _, err := openIDXFile(src.Paths[0])
	if err != nil {
		return nn.Shape{}, 0, err
	}
	defer f.Close()
	h, err := readIDXHeader(r, src.Paths[0], MaxFileIDXBytes)
	if err != nil {
		return nn.Shape{}, 0, err
	}
	sh, err := idxShape(src.Paths[0], h.dims)
	if err != nil || src.Classes != 0 {
		return sh, src.Classes, err
	}
	y, err := readIDXLabels(src.Paths[1], h.dims[0])
	if err != nil {
		return nn.Shape{}, 0, err
	}
	classes, err := classesOf(y, 0, src.Paths[1])
	return sh, classes, err
}
