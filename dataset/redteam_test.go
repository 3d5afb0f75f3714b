package dataset

import (
	"bytes"
	"compress/gzip"
	"compress/zlib"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"testing"
	"time"
)

// TestRedteamImageFolderSymlinks: a symbolic link to an image file is
// followed wherever it points (as torchvision's ImageFolder does, so that
// splits can be made of links); a link to a device or to a folder where an
// image belongs is refused.
func TestRedteamImageFolderSymlinks(t *testing.T) {
	outside := t.TempDir()
	writeBytes(t, filepath.Join(outside, "x.png"), greyPNG(t, 2, 2, 9, 9, 9, 9))
	root := t.TempDir()
	writeBytes(t, filepath.Join(root, "0", "a.png"), greyPNG(t, 2, 2, 1, 2, 3, 4))
	if err := os.Symlink(filepath.Join(outside, "x.png"), filepath.Join(root, "0", "link.png")); err != nil {
		t.Skipf("symlink: %v", err)
	}
	src, _ := ParseSource("images:" + root)
	fd, err := src.Load()
	if err != nil {
		t.Fatalf("a link to an image: %v", err)
	}
	if fd.Train.N != 2 {
		t.Fatalf("%d images, want 2", fd.Train.N)
	}
	for _, target := range []string{"/dev/zero", outside} {
		if _, err := os.Stat(target); err != nil {
			continue
		}
		bad := filepath.Join(root, "0", "bad.png")
		os.Remove(bad)
		if err := os.Symlink(target, bad); err != nil {
			t.Fatal(err)
		}
		var m runtimeMem
		m.read()
		before := m.total
		_, err := src.Load()
		m.read()
		if !errors.Is(err, ErrFormat) {
			t.Errorf("a link to %s: Load = %v, want ErrFormat", target, err)
		}
		if m.total-before > 1<<20 {
			t.Errorf("a link to %s: read %d bytes before refusing it", target, m.total-before)
		}
	}
}

// bombPNG returns a PNG of w×h 16-bit RGBA pixels, all zero: a few
// hundred kilobytes that decode to 8·w·h bytes.
func bombPNG(t testing.TB, w, h int) []byte {
	chunk := func(b []byte, typ string, data []byte) []byte {
		b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
		start := len(b)
		b = append(b, typ...)
		b = append(b, data...)
		return binary.BigEndian.AppendUint32(b, crc32.ChecksumIEEE(b[start:]))
	}
	ihdr := binary.BigEndian.AppendUint32(nil, uint32(w))
	ihdr = binary.BigEndian.AppendUint32(ihdr, uint32(h))
	ihdr = append(ihdr, 16, 6, 0, 0, 0) // 16 bits, RGBA
	var z bytes.Buffer
	zw, _ := zlib.NewWriterLevel(&z, zlib.BestCompression)
	row := make([]byte, 1+8*w)
	for range h {
		zw.Write(row)
	}
	zw.Close()
	b := append([]byte(nil), pngMagic...)
	b = chunk(b, "IHDR", ihdr)
	b = chunk(b, "IDAT", z.Bytes())
	return chunk(b, "IEND", nil)
}

// TestRedteamImageBomb: an image of MaxImagePixels pixels at 16 bits per
// RGBA channel compresses to a few hundred kilobytes. Decoding it costs
// what the bound allows, once per file, and resizing it to 28×28 keeps the
// data set small. Slow under -race: FEDZIP_LONG=1.
func TestRedteamImageBomb(t *testing.T) {
	if os.Getenv("FEDZIP_LONG") == "" {
		t.Skip("FEDZIP_LONG=1 to decode a 4096×4096 image")
	}
	b := bombPNG(t, 4096, 4096)
	dst := make([]float32, 28*28)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	start := time.Now()
	if err := DecodeImage(dst, b, "bomb.png", MNISTShape, true); err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	t.Logf("a %d-byte PNG of 4096×4096 decoded in %v, allocating %d MB", len(b), time.Since(start), (after.TotalAlloc-before.TotalAlloc)>>20)
	if over := pngWithSize(t, 4097, 4096); !errors.Is(DecodeImage(dst, over, "over.png", MNISTShape, true), ErrTooLarge) {
		t.Error("an image over MaxImagePixels was not refused")
	}
}

// TestRedteamCSVWideLine: one line of MaxCSVLineBytes commas is four
// million empty fields; the column bound refuses it, after encoding/csv
// has split the line.
func TestRedteamCSVWideLine(t *testing.T) {
	line := bytes.Repeat([]byte{','}, MaxCSVLineBytes-1)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	_, err := ReadCSV(bytes.NewReader(append(line, '\n')), "wide.csv", Source{Kind: SourceCSV})
	runtime.ReadMemStats(&after)
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("ReadCSV = %v, want ErrTooLarge", err)
	}
	a := after.TotalAlloc - before.TotalAlloc
	t.Logf("%d-byte line: %d MB allocated before the refusal", len(line)+1, a>>20)
	if a > 64<<20 { // 603 MB before the guard counted commas
		t.Errorf("%d MB allocated for a %d-byte line", a>>20, len(line)+1)
	}
	// A line of MaxCSVColumns fields is still read.
	row := append(bytes.Repeat([]byte("0,"), MaxCSVColumns-1), '1', '\n')
	if _, err := ReadCSV(bytes.NewReader(row), "widest.csv", Source{Kind: SourceCSV, Header: "no"}); err != nil {
		t.Errorf("a row of %d columns: %v", MaxCSVColumns, err)
	}
}

// TestRedteamGzipIDXForgedSize: a gzipped IDX file's trailer states the
// length of its contents (ISIZE), which the reader takes as a hint to
// allocate the payload at once. A 60-byte file whose header claims 2²⁸
// pixels and whose trailer claims 4 GiB must not get them: deflate cannot
// expand more than 1032 times, so the hint is bounded by the file's size.
func TestRedteamGzipIDXForgedSize(t *testing.T) {
	var z bytes.Buffer
	zw := gzip.NewWriter(&z)
	zw.Write([]byte{0, 0, 0x08, 1, 0x10, 0, 0, 0}) // uint8, one dimension of 2^28
	zw.Close()
	b := z.Bytes()
	binary.LittleEndian.PutUint32(b[len(b)-4:], 0xFFFFFFFF)
	dir := t.TempDir()
	images := filepath.Join(dir, "images.gz")
	writeBytes(t, images, b)
	writeBytes(t, filepath.Join(dir, "labels"), []byte{0, 0, 8, 1, 0, 0, 0, 1, 0})
	src, err := ParseSource("idx:" + images + "," + filepath.Join(dir, "labels"))
	if err != nil {
		t.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	_, err = src.Load()
	runtime.ReadMemStats(&after)
	if err == nil {
		t.Fatal("a truncated payload loaded")
	}
	if a := after.TotalAlloc - before.TotalAlloc; a > 64<<20 {
		t.Errorf("a %d-byte file made the reader allocate %d MB before refusing it (%v)", len(b), a>>20, err)
	}
}

// TestRedteamListDirBound: a folder is listed in chunks and refused past
// its bound (MaxImages files in a class folder, MaxClasses class folders,
// MaxNaturalClients client folders) while it is read, instead of after a
// listing that holds every name; hidden entries do not count.
func TestRedteamListDirBound(t *testing.T) {
	dir := t.TempDir()
	for i := range 3000 {
		writeBytes(t, filepath.Join(dir, "f"+strconv.Itoa(i)), nil)
		writeBytes(t, filepath.Join(dir, ".h"+strconv.Itoa(i)), nil)
	}
	if _, _, err := listDir(dir, 2999); !errors.Is(err, ErrTooLarge) {
		t.Errorf("3000 files, bound 2999: %v, want ErrTooLarge", err)
	}
	_, files, err := listDir(dir, 3000)
	if err != nil || len(files) != 3000 {
		t.Errorf("3000 files and 3000 hidden ones, bound 3000: %d files, %v", len(files), err)
	}
}
