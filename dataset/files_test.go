package dataset

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/fedzip/fedzip/nn"
)

// TestParseSource reads every option of each kind and refuses malformed
// sources with ErrBadArgument.
func TestParseSource(t *testing.T) {
	for s, want := range map[string]Source{
		"csv:a.csv": {Kind: SourceCSV, Paths: []string{"a.csv"}},
		"csv:d/a.csv,test=t.csv,label=y,header=yes,client=user,standardize=true,scale=255,shape=1x2x3,classes=10": {
			Kind: SourceCSV, Paths: []string{"d/a.csv"}, Test: []string{"t.csv"}, Label: "y", Header: "yes", Client: "user",
			Standardize: true, Scale: 255, Shape: nn.Shape{C: 1, H: 2, W: 3}, Classes: 10},
		"images:dir,size=32x24,channels=3,layout=client/class,test=t": {
			Kind: SourceImages, Paths: []string{"dir"}, Test: []string{"t"}, Height: 32, Width: 24, Channels: 3, Layout: LayoutClientClass},
		"idx:i.gz,l.gz,test-images=ti,test-labels=tl,classes=3": {
			Kind: SourceIDX, Paths: []string{"i.gz", "l.gz"}, Test: []string{"ti", "tl"}, Classes: 3},
		"csv:x=1.csv": {Kind: SourceCSV, Paths: []string{"x=1.csv"}},
	} {
		got, err := ParseSource(s)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("ParseSource(%q) = %+v, %v; want %+v", s, got, err, want)
		}
	}
	for _, s := range []string{
		"", "csv", "parquet:a", "csv:", "csv:a,b", "csv:a,,label=1", "csv:a,label=", "csv:a,label=1,label=2",
		"csv:a,header=maybe", "csv:a,scale=0", "csv:a,scale=NaN", "csv:a,scale=-1", "csv:a,shape=0x1x1", "csv:a,classes=257",
		"csv:a,classes=0", "csv:a,standardize=yes please", "csv:a,client=0", "csv:a,label=3,client=3",
		"images:d,size=28", "images:d,size=0x5", "images:d,size=5000x5000", "images:d,channels=2", "images:d,layout=flat",
		"images:d,label=1", "idx:a", "idx:a,b,c", "idx:a,b,test-images=x", "csv:" + strings.Repeat("a", MaxSourceLen),
	} {
		if _, err := ParseSource(s); !errors.Is(err, ErrBadArgument) {
			t.Errorf("ParseSource(%q): %v, want ErrBadArgument", s, err)
		}
	}
	if !IsFileSource("csv:x") || IsFileSource("mnist") || IsFileSource("cifar:x") {
		t.Error("IsFileSource")
	}
}

// writeIDX writes an IDX file, gzipped if the name ends in .gz.
func writeIDX(t testing.TB, path string, typ byte, dims []int, data []byte) {
	t.Helper()
	var b bytes.Buffer
	if err := WriteIDX(&b, &IDX{Type: typ, Dims: dims, Data: data}); err != nil {
		t.Fatal(err)
	}
	out := b.Bytes()
	if strings.HasSuffix(path, ".gz") {
		var z bytes.Buffer
		zw := gzip.NewWriter(&z)
		zw.Write(out)
		zw.Close()
		out = z.Bytes()
	}
	writeBytes(t, path, out)
}

// TestIDXSource reads an IDX pair (gzipped and not) with its test pair:
// shape from the dimensions, bytes /255, other types as stored, classes
// from the labels; bad pairs give their sentinels.
func TestIDXSource(t *testing.T) {
	dir := t.TempDir()
	p := func(n string) string { return filepath.Join(dir, n) }
	writeIDX(t, p("img.gz"), IDXUint8, []int{3, 2, 2}, []byte{0, 255, 51, 0, 1, 2, 3, 4, 5, 6, 7, 8})
	writeIDX(t, p("lab"), IDXUint8, []int{3}, []byte{2, 0, 4})
	writeIDX(t, p("timg"), IDXUint8, []int{1, 2, 2}, []byte{9, 9, 9, 9})
	writeIDX(t, p("tlab.gz"), IDXUint8, []int{1}, []byte{1})
	spec := "idx:" + p("img.gz") + "," + p("lab") + ",test-images=" + p("timg") + ",test-labels=" + p("tlab.gz")
	fed, err := Spec{Dataset: spec, Clients: 3, Partition: "iid", Seed: 1}.Load()
	if err != nil {
		t.Fatal(err)
	}
	d := fed.Train
	if d.Shape != (nn.Shape{C: 1, H: 2, W: 2}) || d.Classes != 5 || !slices.Equal(d.Y, []uint8{2, 0, 4}) || d.X[1] != 1 || d.X[2] != pixelScale[51] {
		t.Fatalf("train shape %v classes %d Y %v X %v", d.Shape, d.Classes, d.Y, d.X)
	}
	if fed.Test.N != 1 || fed.Test.Classes != 5 || len(fed.TrainParts) != 3 {
		t.Fatalf("test %+v parts %v", fed.Test, fed.TrainParts)
	}
	if sh, classes, err := Describe(Spec{Dataset: spec}); err != nil || sh != d.Shape || classes != 5 {
		t.Fatalf("Describe = %v %d %v", sh, classes, err)
	}

	// Float32 features of 2 dimensions are flat and kept as stored.
	f := make([]byte, 8)
	binary.BigEndian.PutUint32(f, math.Float32bits(-1.5))
	binary.BigEndian.PutUint32(f[4:], math.Float32bits(300))
	writeIDX(t, p("f32"), IDXFloat32, []int{1, 2}, f)
	writeIDX(t, p("l1"), IDXUint8, []int{1}, []byte{0})
	fd, err := mustSource(t, "idx:"+p("f32")+","+p("l1")+",classes=2").Load()
	if err != nil || !slices.Equal(fd.Train.X, []float32{-1.5, 300}) || fd.Train.Shape != nn.Flat(2) || fd.Train.Classes != 2 {
		t.Fatalf("float32 IDX: %+v, %v", fd, err)
	}

	binary.BigEndian.PutUint32(f[4:], math.Float32bits(float32(math.NaN())))
	writeIDX(t, p("nan"), IDXFloat32, []int{1, 2}, f)
	writeIDX(t, p("lab2"), IDXUint8, []int{2}, []byte{0, 1})
	writeIDX(t, p("big"), IDXUint8, []int{3}, []byte{0, 1, 9})
	writeIDX(t, p("5d"), IDXUint8, []int{1, 1, 1, 1, 1}, []byte{0})
	writeBytes(t, p("huge"), idxBytes(IDXUint8, []uint32{1 << 20, 1 << 12}, nil))
	for name, c := range map[string]struct {
		spec string
		want error
	}{
		"NaN":                  {"idx:" + p("nan") + "," + p("l1"), ErrFormat},
		"label count":          {"idx:" + p("img.gz") + "," + p("lab2"), ErrMismatch},
		"test label too big":   {"idx:" + p("img.gz") + "," + p("lab") + ",test-images=" + p("img.gz") + ",test-labels=" + p("big"), ErrMismatch},
		"classes= too small":   {"idx:" + p("img.gz") + "," + p("lab") + ",classes=3", ErrMismatch},
		"test shape":           {"idx:" + p("img.gz") + "," + p("lab") + ",test-images=" + p("f32") + ",test-labels=" + p("l1"), ErrMismatch},
		"5 dimensions":         {"idx:" + p("5d") + "," + p("l1"), ErrMismatch},
		"huge header claim":    {"idx:" + p("huge") + "," + p("l1"), ErrTooLarge},
		"labels not labels":    {"idx:" + p("img.gz") + "," + p("img.gz"), ErrMismatch},
		"missing labels file":  {"idx:" + p("img.gz") + "," + p("nope"), ErrNotFound},
		"not an IDX (a label)": {"idx:" + p("img.gz") + "," + writeFile(t, dir, "x.csv", "1,2\n"), ErrBadMagic},
	} {
		if _, err := mustSource(t, c.spec).Load(); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", name, err, c.want)
		}
	}
}

// TestCSVNatural splits a CSV by its client column, the same way twice,
// and refuses natural where nothing names clients.
func TestCSVNatural(t *testing.T) {
	dir := t.TempDir()
	path := writeFile(t, dir, "d.csv", "who,y,a\nbob,1,1\nann,0,2\nbob,1,3\ncy,0,4\nann,1,5\n")
	s := Spec{Dataset: "csv:" + path + ",client=who,label=y", Clients: 3, Partition: "natural"}
	a, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := s.Load()
	want := Partition{{1, 4}, {0, 2}, {3}}
	if !reflect.DeepEqual(a.TrainParts, want) || !reflect.DeepEqual(b.TrainParts, want) || !slices.Equal(a.ClientNames, []string{"ann", "bob", "cy"}) {
		t.Fatalf("parts %v names %v", a.TrainParts, a.ClientNames)
	}
	if a.Test != nil {
		t.Fatal("a test set without test=")
	}
	for _, sp := range []string{"iid", "shards", "dirichlet"} {
		s.Partition, s.Clients, s.Alpha = sp, 2, 0.5
		if f, err := s.Load(); err != nil || f.TrainParts.Validate(5) != nil || len(f.TrainParts) != 2 {
			t.Errorf("%s: %v", sp, err)
		}
	}
	for name, bad := range map[string]Spec{
		"natural without a client column": {Dataset: "csv:" + path + ",label=y,header=yes", Clients: 1, Partition: "natural"},
		"natural on mnist":                {Dataset: "mnist", Clients: 1, Partition: "natural", DataDir: dir},
		"wrong clients":                   {Dataset: s.Dataset, Clients: 2, Partition: "natural"},
		"bad source":                      {Dataset: "csv:" + path + ",header=sometimes", Clients: 1, Partition: "iid"},
	} {
		if _, err := bad.Load(); !errors.Is(err, ErrBadArgument) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// TestNatural: indices ascending per group; a group without examples or
// out of range is refused.
func TestNatural(t *testing.T) {
	p, err := Natural([]uint32{2, 0, 2, 1, 0}, 3)
	if err != nil || !reflect.DeepEqual(p, Partition{{1, 4}, {3}, {0, 2}}) {
		t.Fatalf("%v %v", p, err)
	}
	if _, err := Natural([]uint32{0, 2}, 3); !errors.Is(err, ErrBadArgument) {
		t.Fatalf("empty group: %v", err)
	}
	if _, err := Natural([]uint32{0, 3}, 3); !errors.Is(err, ErrBadArgument) {
		t.Fatalf("out of range: %v", err)
	}
}

// TestDescribeBuiltin: mnist and synthetic need no files; an unknown name
// is refused.
func TestDescribeBuiltin(t *testing.T) {
	if sh, c, err := Describe(Spec{Dataset: "mnist"}); err != nil || sh != MNISTShape || c != 10 {
		t.Fatal(sh, c, err)
	}
	if sh, c, err := Describe(Spec{Dataset: "synthetic"}); err != nil || sh != nn.Flat(60) || c != 10 {
		t.Fatal(sh, c, err)
	}
	if _, _, err := Describe(Spec{Dataset: "cifar"}); !errors.Is(err, ErrBadArgument) {
		t.Fatal(err)
	}
	if _, _, err := Describe(Spec{Dataset: "csv:" + filepath.Join(t.TempDir(), "none.csv")}); !errors.Is(err, ErrNotFound) {
		t.Fatal(err)
	}
	// A CSV with classes= is described from its first row only: a bad row
	// further down is not read.
	path := writeFile(t, t.TempDir(), "a.csv", "1,2,3\n1,x\n")
	if sh, c, err := Describe(Spec{Dataset: "csv:" + path + ",classes=4"}); err != nil || sh != nn.Flat(2) || c != 4 {
		t.Fatal(sh, c, err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatal(err)
	}
}

func FuzzParseSource(f *testing.F) {
	for _, s := range []string{"csv:a.csv,label=y,client=u,test=t,scale=2,shape=1x2x2", "images:d,size=2x2,channels=1,layout=client/class",
		"idx:a,b,test-images=c,test-labels=d,classes=3", "csv:a,header=auto,standardize=1", "csv:,", "images:", "idx:a,b,classes=999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		src, err := ParseSource(s)
		if err != nil {
			if !errors.Is(err, ErrBadArgument) {
				t.Fatalf("%q: %v wraps no ErrBadArgument", s, err)
			}
			return
		}
		want := map[string]int{SourceCSV: 1, SourceImages: 1, SourceIDX: 2}[src.Kind]
		if len(src.Paths) != want || src.Classes < 0 || src.Classes > MaxClasses || src.Height*src.Width > MaxImagePixels || src.Scale < 0 {
			t.Fatalf("%q: accepted %+v", s, src)
		}
	})
}
