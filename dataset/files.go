package dataset

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/fedzip/fedzip/nn"
)

// Bounds of the data read from files. Each is checked before the memory it
// guards is allocated; exceeding one is an error wrapping ErrTooLarge.
const (
	// MaxSourceLen bounds a source string (Spec.Dataset).
	MaxSourceLen = 4096
	// MaxFloats bounds the features of one data set, N·Dim floats (1 GiB).
	MaxFloats = 1 << 28
	// MaxClasses bounds the classes of a data set: labels are bytes.
	MaxClasses = 256
	// MaxNaturalClients bounds the clients a natural split names, as
	// 'fedzip simulate' bounds --clients.
	MaxNaturalClients = 1_000_000
	// MaxCSVBytes bounds a CSV file.
	MaxCSVBytes = 4 << 30
	// MaxCSVLineBytes bounds one line of a CSV file.
	MaxCSVLineBytes = 4 << 20
	// MaxCSVRows bounds the rows of a CSV file.
	MaxCSVRows = 1 << 24
	// MaxCSVColumns bounds the columns of a CSV file.
	MaxCSVColumns = 1 << 16
	// MaxImageFileBytes bounds one image file.
	MaxImageFileBytes = 32 << 20
	// MaxImagePixels bounds the width·height of one image as its header
	// states it, before it is decoded.
	MaxImagePixels = 1 << 24
	// MaxImages bounds the images of one folder tree.
	MaxImages = 1 << 22
	// MaxFileIDXBytes bounds the payload of an IDX file of an idx: source
	// (LoadMNIST keeps DefaultIDXLimit).
	MaxFileIDXBytes = 1 << 30
)

// File source kinds: the prefix of Spec.Dataset before the colon.
const (
	SourceCSV    = "csv"
	SourceImages = "images"
	SourceIDX    = "idx"
)

// Image folder layouts (Source.Layout).
const (
	// LayoutClass is root/CLASS/image: one subfolder per class.
	LayoutClass = "class"
	// LayoutClientClass is root/CLIENT/CLASS/image: one subfolder per
	// client, each with one subfolder per class; it names the clients of
	// the natural partition.
	LayoutClientClass = "client/class"
)

// Source is a data set read from files, as Spec.Dataset names it (see
// ParseSource). The zero values of the options are the defaults.
type Source struct {
	// Kind is SourceCSV, SourceImages or SourceIDX.
	Kind string
	// Paths are the training data: a CSV file, an image folder, or an IDX
	// images file and an IDX labels file.
	Paths []string
	// Test are the test data, as Paths, or nil for none.
	Test []string

	// Label is the CSV label column: a 0-based index, "last", or a header
	// name ("" is column 0).
	Label string
	// Header says whether a CSV file's first row is a header: "yes", "no"
	// or "auto" ("" is "auto"; see ReadCSV).
	Header string
	// Client is the CSV column that names each row's client, for the
	// natural partition ("" for none).
	Client string
	// Standardize maps each CSV feature to (x − mean)/std with the
	// training file's mean and standard deviation.
	Standardize bool
	// Scale divides every CSV feature (0 is 1), e.g. 255 for raw pixels.
	Scale float64
	// Shape is the shape a CSV row's features are read as (zero: 1×1×F).
	Shape nn.Shape
	// Classes is the number of classes of numeric labels (0: the largest
	// training label + 1).
	Classes int

	// Height and Width are the size images are resized to (0: the first
	// image's size, and images of another size are refused).
	Height, Width int
	// Channels is 1 (grey) or 3 (RGB) (0: the first image's).
	Channels int
	// Layout is LayoutClass or LayoutClientClass ("" is LayoutClass).
	Layout string
}

// IsFileSource reports whether name names a file source (csv:, images: or
// idx:) rather than a built-in data set.
func IsFileSource(name string) bool {
	kind, _, ok := strings.Cut(name, ":")
	return ok && (kind == SourceCSV || kind == SourceImages || kind == SourceIDX)
}

// sourceKeys are the options each kind accepts.
var sourceKeys = map[string][]string{
	SourceCSV:    {"test", "label", "header", "client", "standardize", "scale", "shape", "classes"},
	SourceImages: {"test", "size", "channels", "layout"},
	SourceIDX:    {"test-images", "test-labels", "classes"},
}

// ParseSource reads a file source:
//
//	csv:FILE[,test=FILE][,label=COL][,header=auto|yes|no][,client=COL]
//	    [,standardize=true][,scale=F][,shape=CxHxW][,classes=N]
//	images:DIR[,test=DIR][,size=HxW][,channels=1|3][,layout=class|client/class]
//	idx:IMAGES,LABELS[,test-images=FILE,test-labels=FILE][,classes=N]
//
// Elements are separated by commas; an element KEY=VALUE whose KEY is an
// option of the kind is that option, any other element a path (so paths
// cannot hold commas). Errors wrap ErrBadArgument.
func ParseSource(s string) (Source, error) {
	bad := func(format string, a ...any) (Source, error) {
		return Source{}, fmt.Errorf("dataset: source %q: %w: "+format, append([]any{clip(s), ErrBadArgument}, a...)...)
	}
	if len(s) > MaxSourceLen {
		return bad("%d bytes, at most %d", len(s), MaxSourceLen)
	}
	kind, rest, ok := strings.Cut(s, ":")
	keys, known := sourceKeys[kind]
	if !ok || !known {
		return bad("want csv:FILE, images:DIR or idx:IMAGES,LABELS")
	}
	src := Source{Kind: kind}
	seen := map[string]bool{}
	var testImages, testLabels string
	for _, el := range strings.Split(rest, ",") {
		key, val, isOpt := strings.Cut(el, "=")
		if !isOpt || !slices.Contains(keys, key) {
			if el == "" {
				return bad("an empty element")
			}
			src.Paths = append(src.Paths, el)
			continue
		}
		if seen[key] {
			return bad("%s given twice", key)
		}
		seen[key] = true
		if val == "" {
			return bad("%s has no value", key)
		}
		var err error
		switch key {
		case "test":
			src.Test = []string{val}
		case "test-images":
			testImages = val
		case "test-labels":
			testLabels = val
		case "label":
			src.Label = val
		case "header":
			if val != "auto" && val != "yes" && val != "no" {
				return bad("header=%s: want auto, yes or no", val)
			}
			src.Header = val
		case "client":
			src.Client = val
		case "standardize":
			if src.Standardize, err = strconv.ParseBool(val); err != nil {
				return bad("standardize=%s: want true or false", val)
			}
		case "scale":
			src.Scale, err = strconv.ParseFloat(val, 64)
			if err != nil || !(src.Scale > 0) || math.IsInf(src.Scale, 0) {
				return bad("scale=%s: want a finite number > 0", val)
			}
		case "shape":
			if src.Shape, err = nn.ParseShape(val); err != nil {
				return bad("shape=%s: %v", val, err)
			}
		case "classes":
			src.Classes, err = strconv.Atoi(val)
			if err != nil || src.Classes < 1 || src.Classes > MaxClasses {
				return bad("classes=%s: want 1..%d", val, MaxClasses)
			}
		case "size":
			h, w, ok := strings.Cut(strings.ReplaceAll(val, "×", "x"), "x")
			src.Height, err = strconv.Atoi(h)
			var err2 error
			src.Width, err2 = strconv.Atoi(w)
			if !ok || err != nil || err2 != nil || src.Height < 1 || src.Width < 1 || src.Height*src.Width > MaxImagePixels {
				return bad("size=%s: want HxW, such as 28x28, of at most %d pixels", val, MaxImagePixels)
			}
		case "channels":
			if val != "1" && val != "3" {
				return bad("channels=%s: want 1 (grey) or 3 (RGB)", val)
			}
			src.Channels = int(val[0] - '0')
		case "layout":
			if val != LayoutClass && val != LayoutClientClass {
				return bad("layout=%s: want %s or %s", val, LayoutClass, LayoutClientClass)
			}
			src.Layout = val
		}
	}
	wantPaths := 1
	if kind == SourceIDX {
		wantPaths = 2
		switch {
		case (testImages == "") != (testLabels == ""):
			return bad("test-images and test-labels go together")
		case testImages != "":
			src.Test = []string{testImages, testLabels}
		}
	}
	if len(src.Paths) != wantPaths {
		return bad("%d paths (%s), want %d (options are %s)", len(src.Paths), strings.Join(src.Paths, ", "), wantPaths, strings.Join(keys, ", "))
	}
	if src.Client != "" && src.Client == cmp.Or(src.Label, "0") {
		return bad("the label and client columns are the same")
	}
	return src, nil
}

// clip shortens s for an error message.
func clip(s string) string {
	if len(s) > 120 {
		return s[:120] + "..."
	}
	return s
}

// Natural reports whether the source names each example's client: a CSV
// client column or the client/class folder layout.
func (s Source) Natural() bool { return s.Client != "" || s.Layout == LayoutClientClass }

// FileData is a data set read from files: the training set, the test set
// (nil if the source has none) and, for a source that names clients, each
// training example's client.
type FileData struct {
	Train, Test *Dataset
	// Clients[i] is training example i's client, an index into
	// ClientNames; nil unless the source names clients.
	Clients     []uint32
	ClientNames []string
}

// Load reads the source's files. The same files give the same floats,
// labels and clients on every machine.
func (s Source) Load() (*FileData, error) {
	switch s.Kind {
	case SourceCSV:
		return loadCSVSource(s)
	case SourceImages:
		return loadImageSource(s)
	case SourceIDX:
		return loadIDXSource(s)
	}
	return nil, fmt.Errorf("dataset: %w: unknown source kind %q", ErrBadArgument, s.Kind)
}

// Describe returns the shape of one example and the number of classes of
// the data set spec names, reading as little as it can: nothing for mnist
// and synthetic, the header and the first row (and the label column, unless
// classes= is given) of a CSV file, the folder names and the first image's
// header of an image folder, the images header and the labels of an IDX
// pair. Drivers call it to size a model without loading the data.
func Describe(spec Spec) (nn.Shape, int, error) {
	switch spec.Dataset {
	case "mnist":
		return MNISTShape, MNISTClasses, nil
	case "synthetic":
		return nn.Flat(SyntheticDim), SyntheticClasses, nil
	}
	if !IsFileSource(spec.Dataset) {
		return nn.Shape{}, 0, fmt.Errorf("dataset: %w: unknown dataset %q (want mnist, synthetic, csv:FILE, images:DIR or idx:IMAGES,LABELS)", ErrBadArgument, clip(spec.Dataset))
	}
	src, err := ParseSource(spec.Dataset)
	if err != nil {
		return nn.Shape{}, 0, err
	}
	switch src.Kind {
	case SourceCSV:
		return describeCSV(src)
	case SourceImages:
		return describeImages(src)
	}
	return describeIDX(src)
}

// naturalOrder sorts names for class and client indices: numerically if
// every name is a decimal integer, else bytewise. It never depends on map
// order, so every machine numbers them the same.
func naturalOrder(names []string) {
	numeric := true
	for _, n := range names {
		if _, err := strconv.ParseInt(n, 10, 64); err != nil {
			numeric = false
			break
		}
	}
	if !numeric {
		slices.Sort(names)
		return
	}
	slices.SortFunc(names, func(a, b string) int {
		x, _ := strconv.ParseInt(a, 10, 64)
		y, _ := strconv.ParseInt(b, 10, 64)
		return cmp.Or(cmp.Compare(x, y), strings.Compare(a, b))
	})
}

// Natural returns the partition that gives client k the examples whose
// group is k: groups[i] is example i's group, in [0, clients). Each
// client's indices are ascending. It returns an error wrapping
// ErrBadArgument if a group is out of range or a client gets no example.
func Natural(groups []uint32, clients int) (Partition, error) {
	if clients < 1 {
		return nil, fmt.Errorf("dataset: Natural: %w: %d clients", ErrBadArgument, clients)
	}
	sizes := make([]int, clients)
	for i, g := range groups {
		if int64(g) >= int64(clients) {
			return nil, fmt.Errorf("dataset: Natural: %w: example %d is in group %d of %d", ErrBadArgument, i, g, clients)
		}
		sizes[g]++
	}
	all := make([]int, len(groups))
	p := make(Partition, clients)
	off := 0
	for k, n := range sizes {
		if n == 0 {
			return nil, fmt.Errorf("dataset: Natural: %w: client %d has no examples", ErrBadArgument, k)
		}
		p[k] = all[off : off : off+n]
		off += n
	}
	for i, g := range groups {
		p[g] = append(p[g], i)
	}
	return p, nil
}

// classesOf returns the number of classes of numeric labels: want if set,
// else the largest label + 1; a label >= want is an error wrapping
// ErrMismatch that names the file.
func classesOf(labels []uint8, want int, name string) (int, error) {
	if len(labels) == 0 {
		return 0, fmt.Errorf("dataset: %s: %w: no examples", name, ErrMismatch)
	}
	top := int(slices.Max(labels))
	if want == 0 {
		return top + 1, nil
	}
	if top >= want {
		i := slices.Index(labels, uint8(top))
		return 0, fmt.Errorf("dataset: %s: %w: label %d at example %d is not in [0,%d) (classes=%d)", name, ErrMismatch, top, i, want, want)
	}
	return want, nil
}

// numberNames returns "0", "1", ..., the class names of numeric labels.
func numberNames(classes int) []string {
	names := make([]string, classes)
	for i := range names {
		names[i] = strconv.Itoa(i)
	}
	return names
}
