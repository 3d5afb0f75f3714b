package dataset

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/fedzip/fedzip/nn"
)

// greyPNG encodes a w×h grey image whose pixel i is pix[i%len(pix)].
func greyPNG(t testing.TB, w, h int, pix ...uint8) []byte {
	t.Helper()
	img := image.NewGray(image.Rect(0, 0, w, h))
	for i := range img.Pix {
		img.Pix[i] = pix[i%len(pix)]
	}
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// rgbPNG encodes a w×h opaque image of one colour.
func rgbPNG(t testing.TB, w, h int, c color.NRGBA) []byte {
	t.Helper()
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			img.SetNRGBA(x, y, c)
		}
	}
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// greyJPEG encodes a w×h grey JPEG of one value.
func greyJPEG(t testing.TB, w, h int, v uint8) []byte {
	t.Helper()
	img := image.NewGray(image.Rect(0, 0, w, h))
	for i := range img.Pix {
		img.Pix[i] = v
	}
	var b bytes.Buffer
	if err := jpeg.Encode(&b, img, &jpeg.Options{Quality: 100}); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func writeBytes(t testing.TB, path string, b []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestImageFolder reads grey and RGB PNGs and a JPEG from class folders:
// classes in folder order, values x/255, RGB to grey by luma, a hidden
// file skipped; Describe agrees without decoding.
func TestImageFolder(t *testing.T) {
	root := t.TempDir()
	writeBytes(t, filepath.Join(root, "cat", "a.png"), greyPNG(t, 3, 2, 0, 51, 255))
	writeBytes(t, filepath.Join(root, "cat", ".DS_Store"), []byte("junk"))
	writeBytes(t, filepath.Join(root, "dog", "b.png"), rgbPNG(t, 3, 2, color.NRGBA{255, 0, 0, 255}))
	writeBytes(t, filepath.Join(root, "dog", "c.jpg"), greyJPEG(t, 3, 2, 128))
	spec := "images:" + root
	fd, err := mustSource(t, spec).Load()
	if err != nil {
		t.Fatal(err)
	}
	d := fd.Train
	if err := d.Validate(); err != nil {
		t.Fatal(err)
	}
	if d.N != 3 || d.Shape != (nn.Shape{C: 1, H: 2, W: 3}) || !slices.Equal(d.ClassNames, []string{"cat", "dog"}) || !slices.Equal(d.Y, []uint8{0, 1, 1}) {
		t.Fatalf("N=%d shape %v classes %v Y %v", d.N, d.Shape, d.ClassNames, d.Y)
	}
	if want := []float32{0, pixelScale[51], 1, 0, pixelScale[51], 1}; !slices.Equal(d.Row(0), want) {
		t.Fatalf("grey PNG: %v, want %v", d.Row(0), want)
	}
	red := pixelScale[(19595*0xffff+1<<15)>>24]
	if d.Row(1)[0] != red || d.Row(1)[5] != red {
		t.Fatalf("red PNG as grey: %v, want %v", d.Row(1), red)
	}
	for _, v := range d.Row(2) {
		if v < pixelScale[126] || v > pixelScale[130] {
			t.Fatalf("JPEG of 128: %v", d.Row(2))
		}
	}
	sh, classes, err := Describe(Spec{Dataset: spec})
	if err != nil || sh != d.Shape || classes != 2 {
		t.Fatalf("Describe = %v, %d, %v", sh, classes, err)
	}

	// channels=3: grey replicated, red stays red.
	fd, err = mustSource(t, spec+",channels=3").Load()
	if err != nil {
		t.Fatal(err)
	}
	if d := fd.Train; d.Shape != (nn.Shape{C: 3, H: 2, W: 3}) || d.Row(0)[1] != d.Row(0)[7] || !slices.Equal(d.Row(1)[:6], []float32{1, 1, 1, 1, 1, 1}) || d.Row(1)[6] != 0 {
		t.Fatalf("channels=3: shape %v rows %v %v", d.Shape, d.Row(0), d.Row(1))
	}
}

// TestImageResize: size= resizes; a constant image stays exactly x/255,
// and every value stays within its neighbours' range.
func TestImageResize(t *testing.T) {
	root := t.TempDir()
	writeBytes(t, filepath.Join(root, "0", "a.png"), greyPNG(t, 5, 7, 200))
	writeBytes(t, filepath.Join(root, "1", "b.png"), greyPNG(t, 2, 2, 0, 255))
	fd, err := mustSource(t, "images:"+root+",size=4x4").Load()
	if err != nil {
		t.Fatal(err)
	}
	d := fd.Train
	if d.Shape != (nn.Shape{C: 1, H: 4, W: 4}) {
		t.Fatalf("shape %v", d.Shape)
	}
	for _, v := range d.Row(0) {
		if v != pixelScale[200] {
			t.Fatalf("constant 200 resized: %v", d.Row(0))
		}
	}
	r := d.Row(1)
	if r[0] != 0 || r[3] != 1 || !(r[1] > 0 && r[1] < r[2] && r[2] < 1) {
		t.Fatalf("0|255 upsampled: %v", r)
	}
}

// TestImageClients reads root/CLIENT/CLASS/img: the natural partition's
// clients, and classes as the union over clients.
func TestImageClients(t *testing.T) {
	root := t.TempDir()
	writeBytes(t, filepath.Join(root, "10", "b", "x.png"), greyPNG(t, 2, 2, 1))
	writeBytes(t, filepath.Join(root, "2", "a", "x.png"), greyPNG(t, 2, 2, 2))
	writeBytes(t, filepath.Join(root, "2", "a", "y.png"), greyPNG(t, 2, 2, 3))
	writeBytes(t, filepath.Join(root, "10", "c", "z.png"), greyPNG(t, 2, 2, 4))
	test := t.TempDir()
	writeBytes(t, filepath.Join(test, "c", "t.png"), greyPNG(t, 2, 2, 5))
	spec := "images:" + root + ",layout=client/class,test=" + test
	fed, err := Spec{Dataset: spec, Clients: 2, Partition: "natural"}.Load()
	if err != nil {
		t.Fatal(err)
	}
	d := fed.Train
	if !slices.Equal(fed.ClientNames, []string{"2", "10"}) || !slices.Equal(d.ClassNames, []string{"a", "b", "c"}) {
		t.Fatalf("clients %v classes %v", fed.ClientNames, d.ClassNames)
	}
	// Files in order: 2/a/x, 2/a/y, 10/b/x, 10/c/z.
	if !slices.Equal(d.Y, []uint8{0, 0, 1, 2}) || !slices.Equal(fed.TrainParts[0], []int{0, 1}) || !slices.Equal(fed.TrainParts[1], []int{2, 3}) {
		t.Fatalf("Y %v parts %v", d.Y, fed.TrainParts)
	}
	if fed.Test.N != 1 || fed.Test.Y[0] != 2 || fed.Test.Classes != 3 {
		t.Fatalf("test N=%d Y=%v classes %d", fed.Test.N, fed.Test.Y, fed.Test.Classes)
	}
	if _, err := (Spec{Dataset: spec, Clients: 3, Partition: "natural"}).Load(); !errors.Is(err, ErrBadArgument) || !strings.Contains(err.Error(), "--clients 2") {
		t.Fatalf("wrong --clients: %v", err)
	}
	if p, err := (Spec{Dataset: spec, Clients: 4, Partition: "iid", Seed: 1}).Load(); err != nil || len(p.TrainParts) != 4 {
		t.Fatalf("iid over a client layout: %v", err)
	}
}

// pngWithSize returns a valid PNG whose header claims w×h.
func pngWithSize(t testing.TB, w, h uint32) []byte {
	b := greyPNG(t, 1, 1, 0)
	// IHDR: length(4) "IHDR" width(4) height(4) ... crc(4), after the 8-byte magic.
	binary.BigEndian.PutUint32(b[16:], w)
	binary.BigEndian.PutUint32(b[20:], h)
	binary.BigEndian.PutUint32(b[29:], crc32.ChecksumIEEE(b[12:29]))
	return b
}

// TestImageFolderErrors: each bad folder gives its sentinel.
func TestImageFolderErrors(t *testing.T) {
	for _, c := range []struct {
		name  string
		build func(root string)
		opts  string
		want  error
	}{
		{"non-image file", func(r string) {
			writeBytes(t, filepath.Join(r, "a", "x.png"), greyPNG(t, 2, 2, 1))
			writeBytes(t, filepath.Join(r, "a", "notes.txt"), []byte("hello"))
		}, "", ErrFormat},
		{"truncated PNG", func(r string) {
			writeBytes(t, filepath.Join(r, "a", "x.png"), greyPNG(t, 2, 2, 1)[:40])
		}, "", ErrFormat},
		{"mixed sizes", func(r string) {
			writeBytes(t, filepath.Join(r, "a", "x.png"), greyPNG(t, 2, 2, 1))
			writeBytes(t, filepath.Join(r, "b", "y.png"), greyPNG(t, 3, 2, 1))
		}, "", ErrMismatch},
		{"huge header claim", func(r string) {
			writeBytes(t, filepath.Join(r, "a", "x.png"), pngWithSize(t, 1<<15, 1<<15))
		}, "", ErrTooLarge},
		{"huge claim after the first", func(r string) {
			writeBytes(t, filepath.Join(r, "a", "x.png"), greyPNG(t, 2, 2, 1))
			writeBytes(t, filepath.Join(r, "a", "y.png"), pngWithSize(t, 1<<15, 1<<15))
		}, ",size=2x2", ErrTooLarge},
		{"too many classes", func(r string) {
			one := greyPNG(t, 1, 1, 1)
			for i := range MaxClasses + 1 {
				writeBytes(t, filepath.Join(r, fmt.Sprintf("c%03d", i), "x.png"), one)
			}
		}, "", ErrTooLarge},
		{"file among class folders", func(r string) {
			writeBytes(t, filepath.Join(r, "a", "x.png"), greyPNG(t, 2, 2, 1))
			writeBytes(t, filepath.Join(r, "stray.png"), greyPNG(t, 2, 2, 1))
		}, "", ErrFormat},
		{"client layout without clients", func(r string) {
			writeBytes(t, filepath.Join(r, "a", "x.png"), greyPNG(t, 2, 2, 1))
		}, ",layout=client/class", ErrFormat},
		{"no images", func(r string) { os.MkdirAll(filepath.Join(r, "a"), 0o755) }, "", ErrFormat},
		{"missing folder", func(r string) { os.Remove(r) }, "", ErrNotFound},
	} {
		t.Run(c.name, func(t *testing.T) {
			root := filepath.Join(t.TempDir(), "root")
			os.Mkdir(root, 0o755)
			c.build(root)
			_, err := mustSource(t, "images:"+root+c.opts).Load()
			if !errors.Is(err, c.want) {
				t.Fatalf("err = %v, want %v", err, c.want)
			}
		})
	}
	// A test folder with a class the training folder lacks.
	root, test := t.TempDir(), t.TempDir()
	writeBytes(t, filepath.Join(root, "a", "x.png"), greyPNG(t, 2, 2, 1))
	writeBytes(t, filepath.Join(test, "b", "x.png"), greyPNG(t, 2, 2, 1))
	if _, err := mustSource(t, "images:"+root+",test="+test).Load(); !errors.Is(err, ErrMismatch) {
		t.Fatalf("unknown test class: %v", err)
	}
}

func FuzzDecodeImage(f *testing.F) {
	f.Add(greyPNG(f, 2, 2, 0, 255))
	f.Add(rgbPNG(f, 3, 1, color.NRGBA{1, 2, 3, 128}))
	f.Add(greyJPEG(f, 4, 4, 9))
	f.Add(pngWithSize(f, 1<<15, 1<<15))
	f.Add([]byte("\x89PNG\r\n\x1a\n"))
	f.Add([]byte{0xff, 0xd8, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, sh := range []nn.Shape{{C: 1, H: 2, W: 2}, {C: 3, H: 3, W: 1}} {
			dst := make([]float32, sh.Dim())
			err := DecodeImage(dst, b, "fuzz.png", sh, true)
			if err != nil {
				if !errors.Is(err, ErrFormat) && !errors.Is(err, ErrTooLarge) {
					t.Fatalf("error %v wraps no sentinel", err)
				}
				continue
			}
			for _, v := range dst {
				if !(v >= 0 && v <= 1) {
					t.Fatalf("value %v outside [0,1]", v)
				}
			}
		}
	})
}
