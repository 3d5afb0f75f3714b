package dataset

import (
	"bytes"
	"cmp"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/fedzip/fedzip/nn"
)

// csvGuard passes bytes through while counting them: more than maxTotal
// bytes in all, more than maxLine bytes without a newline, or more than
// maxSeps commas on one line, is an error wrapping ErrTooLarge. It bounds
// what encoding/csv allocates for a record: about 40 bytes per field, so
// a line of commas would otherwise cost 150 times its length before the
// column bound could refuse it.
type csvGuard struct {
	r                 io.Reader
	name              string
	total, line, seps int64
	maxTotal, maxLine int64
	maxSeps           int64
	// err is the bound exceeded, returned by every later Read and checked
	// by readCSVTable after every record (encoding/csv may drop it).
	err error
}

func (g *csvGuard) Read(p []byte) (int, error) {
	if g.err != nil {
		return 0, g.err
	}
	n, err := g.r.Read(p)
	g.total += int64(n)
	if g.total > g.maxTotal {
		g.err = fmt.Errorf("dataset: %s: %w: more than %d bytes", g.name, ErrTooLarge, g.maxTotal)
		return 0, g.err
	}
	b := p[:n]
	for {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			g.line += int64(len(b))
			g.seps += int64(bytes.Count(b, []byte{','}))
			break
		}
		g.seps += int64(bytes.Count(b[:i], []byte{','}))
		if g.line+int64(i) > g.maxLine || g.seps > g.maxSeps {
			g.line += int64(i)
			break
		}
		g.line, g.seps, b = 0, 0, b[i+1:]
	}
	if g.line > g.maxLine {
		g.err = fmt.Errorf("dataset: %s: %w: a line of more than %d bytes", g.name, ErrTooLarge, g.maxLine)
		return 0, g.err
	}
	if g.seps > g.maxSeps {
		g.err = fmt.Errorf("dataset: %s: %w: a line of more than %d commas (at most %d columns)", g.name, ErrTooLarge, g.maxSeps, MaxCSVColumns)
		return 0, g.err
	}
	return n, err
}

// csvTable is one CSV file as read, before labels are numbered: features
// row-major, each row's label and client as an index into the distinct
// strings in the order first seen.
type csvTable struct {
	name      string
	x         []float32
	n, dim    int
	shape     nn.Shape
	labelOf   []uint8 // per row, into labels
	labels    []string
	clientOf  []uint32 // per row, into clients; nil without a client column
	clients   []string
	labelCol  int
	clientCol int // -1 for none
}

// csvRead says what readCSVTable keeps.
type csvRead struct {
	src        Source
	labelsOnly bool  // skip the features (Describe)
	headerOnly bool  // stop after the first data row (Describe)
	size       int64 // the input's length if known, for preallocation
	lines      int64 // the input's newlines if known (0: unknown)
	wantDim    int   // the features a test file must have (0: any)
}

// readCSVTable parses a CSV file. See ReadCSV for the rules.
func readCSVTable(r io.Reader, name string, o csvRead) (*csvTable, error) {
	src := o.src
	// Commas inside quoted fields count too: leave room for them.
	g := &csvGuard{r: r, name: name, maxTotal: MaxCSVBytes, maxLine: MaxCSVLineBytes, maxSeps: 4 * MaxCSVColumns}
	cr := csv.NewReader(g)
	cr.ReuseRecord, cr.FieldsPerRecord, cr.TrimLeadingSpace = true, -1, true
	wrap := func(err error) error {
		var pe *csv.ParseError
		if errors.As(err, &pe) && !errors.Is(err, ErrTooLarge) {
			return fmt.Errorf("dataset: %s: %w: %w", name, ErrFormat, err)
		}
		if errors.Is(err, ErrTooLarge) {
			return err
		}
		return fmt.Errorf("dataset: %s: %w", name, err)
	}
	first, err := cr.Read()
	if g.err != nil {
		return nil, g.err
	}
	if err == io.EOF {
		return nil, fmt.Errorf("dataset: %s: %w: no rows", name, ErrFormat)
	}
	if err != nil {
		return nil, wrap(err)
	}
	cols := len(first)
	if cols > MaxCSVColumns {
		return nil, fmt.Errorf("dataset: %s: %w: %d columns, at most %d", name, ErrTooLarge, cols, MaxCSVColumns)
	}
	t := &csvTable{name: name, clientCol: -1}
	header, err := csvHeader(first, src)
	if err != nil {
		return nil, fmt.Errorf("dataset: %s: %w", name, err)
	}
	var names []string
	if header {
		names = slices.Clone(first)
		for i := range names {
			names[i] = strings.TrimSpace(names[i])
		}
	}
	if t.labelCol, err = csvColumn(cmp.Or(src.Label, "0"), names, cols); err != nil {
		return nil, fmt.Errorf("dataset: %s: label column: %w", name, err)
	}
	if src.Client != "" {
		if t.clientCol, err = csvColumn(src.Client, names, cols); err != nil {
			return nil, fmt.Errorf("dataset: %s: client column: %w", name, err)
		}
		if t.clientCol == t.labelCol {
			return nil, fmt.Errorf("dataset: %s: %w: the label and client columns are both column %d", name, ErrBadArgument, t.labelCol)
		}
	}
	t.dim = cols - 1
	if t.clientCol >= 0 {
		t.dim--
		t.clientOf = []uint32{}
	}
	if t.dim < 1 {
		return nil, fmt.Errorf("dataset: %s: %w: %d columns leave no feature", name, ErrMismatch, cols)
	}
	t.shape = nn.Flat(t.dim)
	if src.Shape != (nn.Shape{}) {
		if src.Shape.Dim() != t.dim {
			return nil, fmt.Errorf("dataset: %s: %w: shape=%v holds %d features, rows have %d", name, ErrMismatch, src.Shape, src.Shape.Dim(), t.dim)
		}
		t.shape = src.Shape
	}
	if o.wantDim > 0 && t.dim != o.wantDim {
		return nil, fmt.Errorf("dataset: %s: %w: %d features, the training file has %d", name, ErrMismatch, t.dim, o.wantDim)
	}
	scale := cmp.Or(src.Scale, 1)
	labelIdx := map[string]uint8{}
	clientIdx := map[string]uint32{}
	row := first
	if header {
		row, err = cr.Read()
	}
	for ; err == nil; row, err = cr.Read() {
		if g.err != nil {
			return nil, g.err
		}
		line, _ := cr.FieldPos(0)
		if len(row) != cols {
			return nil, fmt.Errorf("dataset: %s: %w: line %d has %d fields, the first row %d", name, ErrFormat, line, len(row), cols)
		}
		if t.n >= MaxCSVRows {
			return nil, fmt.Errorf("dataset: %s: %w: more than %d rows", name, ErrTooLarge, MaxCSVRows)
		}
		if !o.labelsOnly {
			if int64(t.n+1)*int64(t.dim) > MaxFloats {
				return nil, fmt.Errorf("dataset: %s: %w: more than %d features in all", name, ErrTooLarge, MaxFloats)
			}
			if t.x == nil {
				t.x = make([]float32, 0, csvRowsHint(o.size, o.lines, cols)*t.dim)
			}
			for j, f := range row {
				if j == t.labelCol || j == t.clientCol {
					continue
				}
				v, err := parseFeature(strings.TrimSpace(f), scale)
				if err != nil {
					return nil, fmt.Errorf("dataset: %s: %w: line %d column %d: %v", name, ErrFormat, line, j, err)
				}
				t.x = append(t.x, v)
			}
		}
		lab := strings.TrimSpace(row[t.labelCol])
		li, ok := labelIdx[lab]
		if !ok {
			if len(t.labels) == MaxClasses {
				return nil, fmt.Errorf("dataset: %s: %w: more than %d distinct labels (line %d: %q)", name, ErrTooLarge, MaxClasses, line, clip(lab))
			}
			li = uint8(len(t.labels))
			lab = strings.Clone(lab)
			labelIdx[lab] = li
			t.labels = append(t.labels, lab)
		}
		t.labelOf = append(t.labelOf, li)
		if t.clientCol >= 0 {
			c := strings.TrimSpace(row[t.clientCol])
			ci, ok := clientIdx[c]
			if !ok {
				if len(t.clients) == MaxNaturalClients {
					return nil, fmt.Errorf("dataset: %s: %w: more than %d clients", name, ErrTooLarge, MaxNaturalClients)
				}
				ci = uint32(len(t.clients))
				c = strings.Clone(c)
				clientIdx[c] = ci
				t.clients = append(t.clients, c)
			}
			t.clientOf = append(t.clientOf, ci)
		}
		t.n++
		if o.headerOnly {
			return t, nil
		}
	}
	if g.err != nil {
		return nil, g.err
	}
	if err != io.EOF {
		return nil, wrap(err)
	}
	if t.n == 0 {
		return nil, fmt.Errorf("dataset: %s: %w: a header and no rows", name, ErrFormat)
	}
	return t, nil
}

// csvRowsHint bounds the rows a file of size bytes and lines newlines can
// hold: each row takes a line, and each row of cols fields at least 2·cols
// bytes (a digit and a separator each), so a hint never allocates more
// than twice the file's size in floats.
func csvRowsHint(size, lines int64, cols int) int {
	if size <= 0 {
		return 1
	}
	rows := size/int64(2*cols) + 1
	if lines > 0 {
		rows = min(rows, lines+1)
	}
	return int(min(rows, MaxCSVRows, MaxFloats/int64(cols)))
}

// countLines counts the newlines of r.
func countLines(r io.Reader) (int64, error) {
	buf := make([]byte, 1<<20)
	var n int64
	for {
		m, err := r.Read(buf)
		n += int64(bytes.Count(buf[:m], []byte{'\n'}))
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

// parseFeature reads one feature: a decimal number rounded to float32 (with
// scale 1), or the float64 number divided by scale and rounded to float32.
// It must be finite.
func parseFeature(s string, scale float64) (float32, error) {
	if n, ok := smallUint(s); ok {
		// Exact in float32 and float64: the same value ParseFloat gives.
		if scale == 1 {
			return float32(n), nil
		}
		return float32(float64(n) / scale), nil
	}
	var v float32
	if scale == 1 {
		f, err := strconv.ParseFloat(s, 32)
		if err != nil {
			return 0, fmt.Errorf("%q is not a float32", clip(s))
		}
		v = float32(f)
	} else {
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return 0, fmt.Errorf("%q is not a number", clip(s))
		}
		v = float32(f / scale)
	}
	if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
		return 0, fmt.Errorf("%q is not finite as a float32", clip(s))
	}
	return v, nil
}

// smallUint reads a field of 1 to 7 decimal digits, the common case of
// pixel and count data, faster than strconv.
func smallUint(s string) (int, bool) {
	if len(s) == 0 || len(s) > 7 {
		return 0, false
	}
	n := 0
	for i := 0; i < len(s); i++ {
		c := s[i] - '0'
		if c > 9 {
			return 0, false
		}
		n = n*10 + int(c)
	}
	return n, true
}

// csvHeader decides whether the first record is a header: header=yes or
// no as given; with auto, yes if a label or client column is named, or if
// a field of another column is not a number.
func csvHeader(first []string, src Source) (bool, error) {
	switch src.Header {
	case "yes":
		return true, nil
	case "no":
		return false, nil
	}
	isCol := func(c string) bool { _, err := strconv.Atoi(c); return err == nil || c == "last" }
	label := cmp.Or(src.Label, "0")
	if !isCol(label) || (src.Client != "" && !isCol(src.Client)) {
		return true, nil
	}
	skip := func(c string, j int) bool {
		if c == "last" {
			return j == len(first)-1
		}
		i, err := strconv.Atoi(c)
		return err == nil && i == j
	}
	for j, f := range first {
		if skip(label, j) || (src.Client != "" && skip(src.Client, j)) {
			continue
		}
		if _, err := strconv.ParseFloat(strings.TrimSpace(f), 64); err != nil {
			return true, nil
		}
	}
	return false, nil
}

// csvColumn finds a column: a 0-based index, "last", or a header name.
func csvColumn(c string, header []string, cols int) (int, error) {
	if c == "last" {
		return cols - 1, nil
	}
	if i, err := strconv.Atoi(c); err == nil {
		if i < 0 || i >= cols {
			return 0, fmt.Errorf("%w: column %d, rows have %d (0..%d)", ErrMismatch, i, cols, cols-1)
		}
		return i, nil
	}
	if header == nil {
		return 0, fmt.Errorf("%w: column %q by name needs a header (header=yes)", ErrBadArgument, clip(c))
	}
	i := slices.Index(header, c)
	if i < 0 {
		return 0, fmt.Errorf("%w: no column %q in the header", ErrMismatch, clip(c))
	}
	return i, nil
}

// labelMap numbers a training file's labels: numeric if every label is an
// integer in 0..255 (written as such, "3" or "3.0"), the label being the
// class; else names, numbered in naturalOrder.
type labelMap struct {
	numeric bool
	classes int
	names   []string
	byName  map[string]uint8
}

// newLabelMap numbers t's labels; classes, if not 0, is classes=.
func newLabelMap(t *csvTable, classes int) (*labelMap, error) {
	m := &labelMap{numeric: true}
	top := 0
	for _, l := range t.labels {
		v, ok := numericLabel(l)
		if !ok {
			m.numeric = false
			break
		}
		top = max(top, v)
	}
	if m.numeric {
		m.classes = cmp.Or(classes, top+1)
		m.names = numberNames(m.classes)
		return m, nil
	}
	m.names = slices.Clone(t.labels)
	naturalOrder(m.names)
	if classes != 0 && classes < len(m.names) {
		return nil, fmt.Errorf("dataset: %s: %w: %d label names, classes=%d", t.name, ErrMismatch, len(m.names), classes)
	}
	m.classes = max(classes, len(m.names))
	m.byName = make(map[string]uint8, len(m.names))
	for i, n := range m.names {
		m.byName[n] = uint8(i)
	}
	return m, nil
}

// numericLabel reads a label that is an integer in 0..255.
func numericLabel(s string) (int, bool) {
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f != math.Trunc(f) || f < 0 || f >= MaxClasses {
		return 0, false
	}
	return int(f), true
}

// apply returns t's labels as classes.
func (m *labelMap) apply(t *csvTable) ([]uint8, error) {
	class := make([]uint8, len(t.labels))
	for i, l := range t.labels {
		var c int
		var ok bool
		if m.numeric {
			c, ok = numericLabel(l)
		} else {
			var b uint8
			b, ok = m.byName[l]
			c = int(b)
		}
		if !ok || c >= m.classes {
			row := slices.Index(t.labelOf, uint8(i))
			return nil, fmt.Errorf("dataset: %s: %w: label %q of row %d is not one of the %d classes (%s)",
				t.name, ErrMismatch, clip(l), row, m.classes, clip(strings.Join(m.names, " ")))
		}
		class[i] = uint8(c)
	}
	y := make([]uint8, t.n)
	for i, li := range t.labelOf {
		y[i] = class[li]
	}
	return y, nil
}

// dataset returns t as a Dataset with labels y.
func (t *csvTable) dataset(y []uint8, m *labelMap) *Dataset {
	return &Dataset{Name: t.name, X: t.x, Y: y, N: t.n, Dim: t.dim, Classes: m.classes, Shape: t.shape, ClassNames: m.names}
}

// groups numbers t's clients in naturalOrder and returns each row's.
func (t *csvTable) groups() ([]uint32, []string) {
	names := slices.Clone(t.clients)
	naturalOrder(names)
	rank := make(map[string]uint32, len(names))
	for i, n := range names {
		rank[n] = uint32(i)
	}
	byFirst := make([]uint32, len(t.clients))
	for i, c := range t.clients {
		byFirst[i] = rank[c]
	}
	g := make([]uint32, t.n)
	for i, c := range t.clientOf {
		g[i] = byFirst[c]
	}
	return g, names
}

// ReadCSV reads one CSV file (RFC 4180, as encoding/csv reads it) whose
// rows are a label, features and, with src.Client, a client column; it
// uses src's CSV options (label, header, client, scale, shape, classes,
// standardize). name is used in error messages.
//
// The first row is a header with header=yes, data with header=no, and with
// header=auto (the default) a header if a column is chosen by name or a
// field outside the label and client columns is not a number. Every row
// must have as many fields as the first. Features are decimal numbers,
// rounded to float32 (or, with scale=S, divided by S in float64 and then
// rounded), and must be finite; with standardize=true each feature is then
// mapped to (x − mean)/std over the file (see Standardize). Labels are
// numeric if every one is an integer 0..255 (classes: classes= or the
// largest + 1), else names numbered in sorted order (numerically if all
// are integers). Clients are numbered the same way.
//
// The input is bounded by MaxCSVBytes, MaxCSVLineBytes, MaxCSVRows,
// MaxCSVColumns, MaxFloats, MaxClasses and MaxNaturalClients before it is
// allocated. Errors wrap ErrFormat, ErrTooLarge, ErrMismatch or
// ErrBadArgument and name the file; ReadCSV never panics.
func ReadCSV(r io.Reader, name string, src Source) (*FileData, error) {
	t, err := readCSVTable(r, name, csvRead{src: src})
	if err != nil {
		return nil, err
	}
	fd, _, err := trainOf(t, src.Classes)
	if err != nil {
		return nil, err
	}
	if src.Standardize {
		Standardize(fd.Train, nil)
	}
	return fd, nil
}

// trainOf numbers t's labels (newLabelMap) and returns the training set
// they make, with its clients when t has a client column, and the label
// numbering a test file must follow.
func trainOf(t *csvTable, classes int) (*FileData, *labelMap, error) {
	m, err := newLabelMap(t, classes)
	if err != nil {
		return nil, nil, err
	}
	y, err := m.apply(t)
	if err != nil {
		return nil, nil, err
	}
	fd := &FileData{Train: t.dataset(y, m)}
	if t.clientOf != nil {
		fd.Clients, fd.ClientNames = t.groups()
	}
	return fd, m, nil
}

// openCSV opens path, checks its size and returns it with its size.
func openCSV(path string) (*os.File, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, 0, fmt.Errorf("dataset: %s: %w: %w", path, ErrNotFound, err)
		}
		return nil, 0, fmt.Errorf("dataset: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("dataset: %w", err)
	}
	if fi.Size() > MaxCSVBytes {
		f.Close()
		return nil, 0, fmt.Errorf("dataset: %s: %w: %d bytes, at most %d", path, ErrTooLarge, fi.Size(), int64(MaxCSVBytes))
	}
	return f, fi.Size(), nil
}

// readCSVFile reads the CSV file at path.
func readCSVFile(path string, o csvRead) (*csvTable, error) {
	f, size, err := openCSV(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	o.size = size
	if !o.labelsOnly {
		// Count the lines first, to allocate the features once and exactly.
		if o.lines, err = countLines(f); err != nil {
			return nil, fmt.Errorf("dataset: %s: %w", path, err)
		}
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return nil, fmt.Errorf("dataset: %s: %w", path, err)
		}
	}
	return readCSVTable(f, path, o)
}

// loadCSVSource reads a csv: source: the training file, then the test file
// with the training file's columns, label numbering and statistics.
func loadCSVSource(src Source) (*FileData, error) {
	t, err := readCSVFile(src.Paths[0], csvRead{src: src})
	if err != nil {
		return nil, err
	}
	fd, m, err := trainOf(t, src.Classes)
	if err != nil {
		return nil, err
	}
	if len(src.Test) == 1 {
		tt, err := readCSVFile(src.Test[0], csvRead{src: src, wantDim: t.dim})
		if err != nil {
			return nil, err
		}
		ty, err := m.apply(tt)
		if err != nil {
			return nil, err
		}
		fd.Test = tt.dataset(ty, m)
	}
	if src.Standardize {
		Standardize(fd.Train, fd.Test)
	}
	return fd, nil
}

// describeCSV reads the header and first row of a csv: source, and its
// label column unless classes= is given.
func describeCSV(src Source) (nn.Shape, int, error) {
	t, err := readCSVFile(src.Paths[0], csvRead{src: src, labelsOnly: true, headerOnly: src.Classes != 0})
	if err != nil {
		return nn.Shape{}, 0, err
	}
	m, err := newLabelMap(t, src.Classes)
	if err != nil {
		return nn.Shape{}, 0, err
	}
	if _, err := m.apply(t); err != nil {
		return nn.Shape{}, 0, err
	}
	return t.shape, m.classes, nil
}

// Standardize maps every feature j of train, and of test if not nil, to
// (x − mean_j)/std_j, with the mean and the population standard deviation
// of feature j over train, computed in float64 in row order (the same
// floats on every machine). A feature constant over train (std 0) is only
// centred.
func Standardize(train, test *Dataset) {
	d := train.Dim
	mean := make([]float64, d)
	std := make([]float64, d)
	for i := range train.N {
		for j, v := range train.Row(i) {
			mean[j] += float64(v)
		}
	}
	for j := range mean {
		mean[j] /= float64(max(train.N, 1))
	}
	for i := range train.N {
		for j, v := range train.Row(i) {
			e := float64(v) - mean[j]
			std[j] += float64(e * e) // the conversion forbids a fused multiply-add
		}
	}
	for j := range std {
		std[j] = math.Sqrt(std[j] / float64(max(train.N, 1)))
		if std[j] == 0 {
			std[j] = 1
		}
	}
	for _, ds := range []*Dataset{train, test} {
		if ds == nil {
			continue
		}
		for i := range ds.N {
			row := ds.Row(i)
			for j, v := range row {
				row[j] = float32((float64(v) - mean[j]) / std[j])
			}
		}
	}
}
