package dataset

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/fedzip/fedzip/nn"
)

// writeFile writes content to dir/name and returns the path.
func writeFile(t testing.TB, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func mustSource(t testing.TB, s string) Source {
	t.Helper()
	src, err := ParseSource(s)
	if err != nil {
		t.Fatal(err)
	}
	return src
}

// TestReadCSV reads files with and without a header, numeric and named
// labels, a client column, and checks every float, label and client.
func TestReadCSV(t *testing.T) {
	for _, c := range []struct {
		name, src, data string
		x               []float32
		y               []uint8
		classes         []string
		clients         []uint32
		clientNames     []string
		shape           nn.Shape
	}{
		{name: "header, label and client by name", src: "csv:f,label=digit,client=user",
			data:    "user,a,digit,b\n10,1.5,2,-3\n2,0.25,0,4e2\n10,  7 ,1,0\n",
			x:       []float32{1.5, -3, 0.25, 400, 7, 0},
			y:       []uint8{2, 0, 1},
			classes: []string{"0", "1", "2"}, clients: []uint32{1, 0, 1}, clientNames: []string{"2", "10"}, shape: nn.Flat(2)},
		{name: "no header, label first", src: "csv:f",
			data: "3,0,1\n1,2,3\n", x: []float32{0, 1, 2, 3}, y: []uint8{3, 1}, classes: []string{"0", "1", "2", "3"}, shape: nn.Flat(2)},
		{name: "no header, named labels last", src: "csv:f,label=last",
			data: "5.1,3.5,setosa\n6.3,2.5,virginica\n5.5,2.4,versicolor\n", x: []float32{5.1, 3.5, 6.3, 2.5, 5.5, 2.4},
			y: []uint8{0, 2, 1}, classes: []string{"setosa", "versicolor", "virginica"}, shape: nn.Flat(2)},
		{name: "header auto-detected, float labels, scale, shape", src: "csv:f,scale=255,shape=1x2x2,classes=5",
			data: "label,p0,p1,p2,p3\n1.0,0,255,51,102\n", x: []float32{0, 1, 0.2, 0.4}, y: []uint8{1},
			classes: []string{"0", "1", "2", "3", "4"}, shape: nn.Shape{C: 1, H: 2, W: 2}},
		{name: "header=no with words", src: "csv:f,header=no,label=1",
			data: "7,cat\n8,dog\n", x: []float32{7, 8}, y: []uint8{0, 1}, classes: []string{"cat", "dog"}, shape: nn.Flat(1)},
		{name: "quoted fields, CRLF", src: "csv:f,client=0,label=1",
			data: "\"a,b\",\"x\",1\r\n\"c\",\"y\",2\r\n", x: []float32{1, 2}, y: []uint8{0, 1}, classes: []string{"x", "y"},
			clients: []uint32{0, 1}, clientNames: []string{"a,b", "c"}, shape: nn.Flat(1)},
	} {
		t.Run(c.name, func(t *testing.T) {
			fd, err := ReadCSV(strings.NewReader(c.data), "f", mustSource(t, c.src))
			if err != nil {
				t.Fatal(err)
			}
			d := fd.Train
			if err := d.Validate(); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(d.X, c.x) || !slices.Equal(d.Y, c.y) || !slices.Equal(d.ClassNames, c.classes) || d.Classes != len(c.classes) || d.Shape != c.shape {
				t.Fatalf("got X=%v Y=%v classes=%v (%d) shape %v\nwant X=%v Y=%v classes=%v shape %v", d.X, d.Y, d.ClassNames, d.Classes, d.Shape, c.x, c.y, c.classes, c.shape)
			}
			if !slices.Equal(fd.Clients, c.clients) || !slices.Equal(fd.ClientNames, c.clientNames) {
				t.Fatalf("clients %v %v, want %v %v", fd.Clients, fd.ClientNames, c.clients, c.clientNames)
			}
		})
	}
}

// TestReadCSVErrors: each bad input gives its sentinel, names the file and
// never panics.
func TestReadCSVErrors(t *testing.T) {
	wide := strings.Repeat("1,", MaxCSVColumns) + "1\n"
	long := "1," + strings.Repeat("1", MaxCSVLineBytes) + "\n"
	var many strings.Builder
	for i := range MaxClasses + 1 {
		fmt.Fprintf(&many, "c%d,1\n", i)
	}
	for _, c := range []struct {
		name, src, data string
		want            error
	}{
		{"empty", "csv:f", "", ErrFormat},
		{"header only", "csv:f", "label,a\n", ErrFormat},
		{"ragged", "csv:f", "1,2,3\n1,2\n", ErrFormat},
		{"not a number", "csv:f,header=no", "1,2\n1,x\n", ErrFormat},
		{"NaN", "csv:f", "1,NaN\n", ErrFormat},
		{"Inf", "csv:f", "1,2\n1,+Inf\n", ErrFormat},
		{"float32 overflow", "csv:f", "1,1e39\n", ErrFormat},
		{"bare quote", "csv:f", "1,\"2\n3\"x,4\n", ErrFormat},
		{"label out of range", "csv:f,classes=2", "0,1\n2,1\n", ErrMismatch},
		{"label column missing", "csv:f,label=y", "x,a\n1,2\n", ErrMismatch},
		{"label column index too big", "csv:f,label=5", "1,2\n", ErrMismatch},
		{"label by name without header", "csv:f,header=no,label=y", "1,2\n", ErrBadArgument},
		{"shape mismatch", "csv:f,shape=1x2x2", "1,2,3\n", ErrMismatch},
		{"only a label", "csv:f", "1\n2\n", ErrMismatch},
		{"too many classes", "csv:f,label=0", many.String(), ErrTooLarge},
		{"too many columns", "csv:f", wide, ErrTooLarge},
		{"line too long", "csv:f", long, ErrTooLarge},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := ReadCSV(strings.NewReader(c.data), "file.csv", mustSource(t, c.src))
			if !errors.Is(err, c.want) || !strings.Contains(err.Error(), "file.csv") {
				t.Fatalf("err = %v, want %v naming file.csv", err, c.want)
			}
		})
	}
}

// TestCSVSourceTest: the test file uses the training file's label
// numbering, scale and standardisation; a test label the training file
// lacks is refused.
func TestCSVSourceTest(t *testing.T) {
	dir := t.TempDir()
	train := writeFile(t, dir, "train.csv", "y,a,b\ncat,1,10\ndog,3,10\ncat,5,10\n")
	test := writeFile(t, dir, "test.csv", "y,a,b\ndog,3,12\n")
	fd, err := mustSource(t, "csv:"+train+",test="+test+",standardize=true,label=y").Load()
	if err != nil {
		t.Fatal(err)
	}
	// a: mean 3, std sqrt(8/3); b: constant 10, only centred.
	s := math.Sqrt(8.0 / 3)
	want := []float32{float32(-2 / s), 0, 0, 0, float32(2 / s), 0}
	if !slices.Equal(fd.Train.X, want) || !slices.Equal(fd.Train.Y, []uint8{0, 1, 0}) {
		t.Fatalf("train X=%v Y=%v, want X=%v", fd.Train.X, fd.Train.Y, want)
	}
	if !slices.Equal(fd.Test.X, []float32{0, 2}) || !slices.Equal(fd.Test.Y, []uint8{1}) || fd.Test.Classes != 2 {
		t.Fatalf("test X=%v Y=%v classes %d", fd.Test.X, fd.Test.Y, fd.Test.Classes)
	}
	writeFile(t, dir, "bad.csv", "y,a,b\nbird,1,2\n")
	if _, err := mustSource(t, "csv:"+train+",label=y,test="+filepath.Join(dir, "bad.csv")).Load(); !errors.Is(err, ErrMismatch) {
		t.Fatalf("unknown test label: %v", err)
	}
	writeFile(t, dir, "narrow.csv", "y,a\ncat,1\n")
	if _, err := mustSource(t, "csv:"+train+",label=y,test="+filepath.Join(dir, "narrow.csv")).Load(); !errors.Is(err, ErrMismatch) {
		t.Fatalf("test file with fewer features: %v", err)
	}
	if _, err := mustSource(t, "csv:"+filepath.Join(dir, "missing.csv")).Load(); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing file: %v", err)
	}
}

// mnistCSV writes d as a CSV of raw pixels (label first, no header) as
// Kaggle and pjreddie export MNIST.
func mnistCSV(t testing.TB, d *Dataset, path string) {
	t.Helper()
	var b bytes.Buffer
	for i := range d.N {
		fmt.Fprint(&b, d.Y[i])
		for _, v := range d.Row(i) {
			fmt.Fprintf(&b, ",%d", int(math.Round(float64(v)*255)))
		}
		b.WriteByte('\n')
	}
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestCSVMatchesMNIST: MNIST exported to CSV and read back with scale=255
// and shape=1x28x28 gives MNIST's floats bit for bit.
func TestCSVMatchesMNIST(t *testing.T) {
	test, err := LoadMNISTTest(mnistDir(t))
	if err != nil {
		t.Fatal(err)
	}
	part := test.Subset([]int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19})
	path := filepath.Join(t.TempDir(), "mnist.csv")
	mnistCSV(t, part, path)
	spec := "csv:" + path + ",scale=255,shape=1x28x28"
	fd, err := mustSource(t, spec).Load()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(fd.Train.X, part.X) || !slices.Equal(fd.Train.Y, part.Y) || fd.Train.Shape != MNISTShape {
		t.Fatalf("CSV of MNIST differs from MNIST")
	}
	sh, classes, err := Describe(Spec{Dataset: spec})
	if err != nil || sh != MNISTShape || classes != fd.Train.Classes {
		t.Fatalf("Describe = %v, %d, %v; loaded %v, %d", sh, classes, err, fd.Train.Shape, fd.Train.Classes)
	}
}

func FuzzReadCSV(f *testing.F) {
	f.Add([]byte("label,a,b\n1,2,3\n0,4,5\n"), "csv:f")
	f.Add([]byte("1,2\n1,x\n"), "csv:f,header=no")
	f.Add([]byte("u,y,a\n1,cat,3\n2,dog,4\n"), "csv:f,client=u,label=y,standardize=true")
	f.Add([]byte("\"a\"\"b\",1\r\n"), "csv:f,label=last")
	f.Add([]byte("1,NaN\n"), "csv:f,scale=255")
	f.Add([]byte("3,1,2,3,4\n"), "csv:f,shape=1x2x2,classes=4")
	f.Fuzz(func(t *testing.T, data []byte, spec string) {
		src, err := ParseSource(spec)
		if err != nil || src.Kind != SourceCSV {
			return
		}
		fd, err := ReadCSV(bytes.NewReader(data), "fuzz.csv", src)
		if err != nil {
			if !strings.Contains(err.Error(), "fuzz.csv") {
				t.Fatalf("error %q does not name the file", err)
			}
			for _, s := range []error{ErrFormat, ErrTooLarge, ErrMismatch, ErrBadArgument} {
				if errors.Is(err, s) {
					return
				}
			}
			t.Fatalf("error %v wraps no sentinel", err)
		}
		if err := fd.Train.Validate(); err != nil {
			t.Fatal(err)
		}
		for _, v := range fd.Train.X {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				t.Fatalf("non-finite feature %v", v)
			}
		}
		if fd.Clients != nil {
			if _, err := Natural(fd.Clients, len(fd.ClientNames)); err != nil {
				t.Fatal(err)
			}
		}
	})
}

// TestExportMNISTCSV writes MNIST as CSV files of raw pixels (label first,
// no header), mnist_train.csv and mnist_test.csv, into the folder
// $FEDZIP_EXPORT_CSV; it is skipped without it. docs/data.md runs it.
func TestExportMNISTCSV(t *testing.T) {
	dir := os.Getenv("FEDZIP_EXPORT_CSV")
	if dir == "" {
		t.Skip("set FEDZIP_EXPORT_CSV=DIR to write MNIST as CSV into DIR")
	}
	train, test, err := LoadMNIST(mnistDir(t))
	if err != nil {
		t.Fatal(err)
	}
	mnistCSV(t, train, filepath.Join(dir, "mnist_train.csv"))
	mnistCSV(t, test, filepath.Join(dir, "mnist_test.csv"))
}

// BenchmarkLoadCSV loads MNIST's 60,000×784 training set from a CSV of raw
// pixels with scale=255: the time and the memory allocated per load, and
// the resident heap of the loaded data set.
func BenchmarkLoadCSV(b *testing.B) {
	train, _, err := LoadMNIST(mnistDir(b))
	if err != nil {
		b.Fatal(err)
	}
	path := filepath.Join(b.TempDir(), "mnist_train.csv")
	mnistCSV(b, train, path)
	fi, _ := os.Stat(path)
	train = nil
	src := mustSource(b, "csv:"+path+",scale=255,shape=1x28x28")
	b.ReportAllocs()
	b.ResetTimer()
	var fd *FileData
	for b.Loop() {
		if fd, err = src.Load(); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(fi.Size())/1e6, "file-MB")
	b.ReportMetric(float64(len(fd.Train.X)*4+len(fd.Train.Y))/1e6, "data-MB")
}

// TestParseFeatureFastPath: fields the fast integer path reads give the
// same float32 as strconv, with and without a scale.
func TestParseFeatureFastPath(t *testing.T) {
	for _, s := range []string{"0", "7", "007", "255", "16777215", "9999999", "1234567", "16777217"} {
		for _, scale := range []float64{1, 255, 3.7} {
			got, err := parseFeature(s, scale)
			f64, _ := strconv.ParseFloat(s, 64)
			want := float32(f64 / scale)
			if scale == 1 {
				f32, _ := strconv.ParseFloat(s, 32)
				want = float32(f32)
			}
			if err != nil || got != want {
				t.Errorf("parseFeature(%q, %v) = %v, %v; want %v", s, scale, got, err, want)
			}
		}
	}
}
