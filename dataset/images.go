package dataset

import (
	"bytes"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/fedzip/fedzip/nn"
)

// Magic numbers of the image formats an image folder may hold.
var (
	pngMagic  = []byte("\x89PNG\r\n\x1a\n")
	jpegMagic = []byte{0xff, 0xd8}
)

// ImageFormat is what DecodeImageConfig reads from an image file's header.
type ImageFormat struct {
	Format        string // "png" or "jpeg"
	Width, Height int
	Grey          bool // a grey colour model (one channel)
}

// DecodeImageConfig reads the header of a PNG or JPEG file held in b. It
// returns an error wrapping ErrFormat for anything else, and ErrTooLarge
// for an image of more than MaxImagePixels.
func DecodeImageConfig(b []byte, name string) (ImageFormat, error) {
	var cfg image.Config
	var f ImageFormat
	var err error
	switch {
	case bytes.HasPrefix(b, pngMagic):
		f.Format = "png"
		cfg, err = png.DecodeConfig(bytes.NewReader(b))
	case bytes.HasPrefix(b, jpegMagic):
		f.Format = "jpeg"
		cfg, err = jpeg.DecodeConfig(bytes.NewReader(b))
	default:
		return f, fmt.Errorf("dataset: %s: %w: not a PNG or JPEG image", name, ErrFormat)
	}
	if err != nil {
		return f, fmt.Errorf("dataset: %s: %w: %s: %v", name, ErrFormat, f.Format, err)
	}
	if cfg.Width < 1 || cfg.Height < 1 {
		return f, fmt.Errorf("dataset: %s: %w: an image of %dx%d", name, ErrFormat, cfg.Width, cfg.Height)
	}
	if int64(cfg.Width)*int64(cfg.Height) > MaxImagePixels {
		return f, fmt.Errorf("dataset: %s: %w: an image of %dx%d, at most %d pixels", name, ErrTooLarge, cfg.Width, cfg.Height, MaxImagePixels)
	}
	f.Width, f.Height = cfg.Width, cfg.Height
	f.Grey = cfg.ColorModel == color.GrayModel || cfg.ColorModel == color.Gray16Model
	return f, nil
}

// DecodeImage decodes a PNG or JPEG file held in b into dst, which must
// hold sh.Dim() floats: sh.C channels (1 grey, 3 RGB) of sh.H×sh.W pixels,
// channel-major (CHW). Each channel value is taken to 8 bits (the high byte
// of a 16-bit value; alpha-premultiplied, i.e. composited over black) and
// divided by 255, as MNIST's pixels are. A grey image gives its value to
// all three channels of an RGB shape; an RGB image gives a grey shape its
// luma, (19595·R + 38470·G + 7471·B + 2^15) >> 24 on 16-bit values, as
// image/color's GrayModel. An image of another size than sh.H×sh.W is
// resized with bilinear interpolation (pixel centres aligned, no
// antialiasing) in integer arithmetic if resize, and refused with
// ErrMismatch if not. Errors wrap ErrFormat, ErrTooLarge or ErrMismatch
// and name the file; DecodeImage never panics.
func DecodeImage(dst []float32, b []byte, name string, sh nn.Shape, resize bool) error {
	f, err := DecodeImageConfig(b, name)
	if err != nil {
		return err
	}
	if (f.Width != sh.W || f.Height != sh.H) && !resize {
		return fmt.Errorf("dataset: %s: %w: an image of %dx%d (HxW), the others are %dx%d; pass size=%dx%d to resize them all",
			name, ErrMismatch, f.Height, f.Width, sh.H, sh.W, sh.H, sh.W)
	}
	var img image.Image
	if f.Format == "png" {
		img, err = png.Decode(bytes.NewReader(b))
	} else {
		img, err = jpeg.Decode(bytes.NewReader(b))
	}
	if err != nil {
		return fmt.Errorf("dataset: %s: %w: %s: %v", name, ErrFormat, f.Format, err)
	}
	r := img.Bounds()
	w, h := r.Dx(), r.Dy()
	if w != f.Width || h != f.Height {
		return fmt.Errorf("dataset: %s: %w: decoded %dx%d, header says %dx%d", name, ErrFormat, w, h, f.Width, f.Height)
	}
	// planes holds the source as 8-bit values, channel-major.
	planes := make([]uint8, sh.C*w*h)
	gray, isGray := img.(*image.Gray)
	for y := range h {
		for x := range w {
			var v [3]uint8
			if isGray {
				g := gray.Pix[y*gray.Stride+x]
				v = [3]uint8{g, g, g}
			} else {
				cr, cg, cb, _ := img.At(r.Min.X+x, r.Min.Y+y).RGBA()
				if sh.C == 1 {
					l := uint8((19595*cr + 38470*cg + 7471*cb + 1<<15) >> 24)
					v = [3]uint8{l, l, l}
				} else {
					v = [3]uint8{uint8(cr >> 8), uint8(cg >> 8), uint8(cb >> 8)}
				}
			}
			for c := range sh.C {
				planes[c*w*h+y*w+x] = v[c]
			}
		}
	}
	if w == sh.W && h == sh.H {
		for i, p := range planes {
			dst[i] = pixelScale[p]
		}
		return nil
	}
	bilinear(dst, planes, sh, w, h)
	return nil
}

// bilinear resamples sh.C planes of w×h bytes into sh.H×sh.W floats in
// [0,1]: destination pixel (y, x) samples the source at
// ((y+½)·h/H − ½, (x+½)·w/W − ½), clamped to the image, with weights in
// 1/256ths; the float is the exact integer sum divided by 255·65536.
func bilinear(dst []float32, planes []uint8, sh nn.Shape, w, h int) {
	type tap struct{ i0, i1, f int }
	taps := func(dstN, srcN int) []tap {
		t := make([]tap, dstN)
		for i := range t {
			p := ((2*i+1)*srcN*256)/(2*dstN) - 128 // source position in 1/256ths
			p = max(p, 0)
			i0 := min(p>>8, srcN-1)
			t[i] = tap{i0, min(i0+1, srcN-1), p & 255}
			if p>>8 >= srcN-1 {
				t[i].f = 0
			}
		}
		return t
	}
	ty, tx := taps(sh.H, h), taps(sh.W, w)
	for c := range sh.C {
		src := planes[c*w*h : (c+1)*w*h]
		out := dst[c*sh.H*sh.W : (c+1)*sh.H*sh.W]
		for y, a := range ty {
			for x, b := range tx {
				p00, p01 := int(src[a.i0*w+b.i0]), int(src[a.i0*w+b.i1])
				p10, p11 := int(src[a.i1*w+b.i0]), int(src[a.i1*w+b.i1])
				num := p00*(256-b.f)*(256-a.f) + p01*b.f*(256-a.f) + p10*(256-b.f)*a.f + p11*b.f*a.f
				out[y*sh.W+x] = float32(float64(num) / (255 * 65536))
			}
		}
	}
}

// imageFile is one image of a folder tree: its path, class and client.
type imageFile struct {
	path          string
	class, client int
}

// imageTree is the listing of an image folder: the files in order, the
// class names and the client names (nil for LayoutClass).
type imageTree struct {
	files   []imageFile
	classes []string
	clients []string
}

// listDir returns the entries of dir in naturalOrder, without hidden ones
// (names starting with "."), split into folders and files. It reads the
// folder in chunks and stops with ErrTooLarge past limit entries (hidden
// ones not counted), so that a folder of millions of entries costs a
// chunk, not a listing.
func listDir(dir string, limit int) (dirs, files []string, err error) {
	f, err := os.Open(dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil, fmt.Errorf("dataset: %s: %w: %w", dir, ErrNotFound, err)
		}
		return nil, nil, fmt.Errorf("dataset: %w", err)
	}
	defer f.Close()
	for {
		ents, err := f.ReadDir(1024)
		for _, e := range ents {
			switch {
			case strings.HasPrefix(e.Name(), "."):
			case e.IsDir():
				dirs = append(dirs, e.Name())
			default:
				files = append(files, e.Name())
			}
		}
		if len(dirs)+len(files) > limit {
			return nil, nil, fmt.Errorf("dataset: %s: %w: more than %d entries", dir, ErrTooLarge, limit)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, nil, fmt.Errorf("dataset: %w", err)
		}
	}
	naturalOrder(dirs)
	naturalOrder(files)
	return dirs, files, nil
}

// listImages lists root in layout: root/CLASS/file or root/CLIENT/CLASS/
// file. Every folder is listed in naturalOrder; classes are the union of
// the class folders' names. known, if not nil, are the classes a test
// folder must use. A file where a folder belongs, or a folder where a file
// belongs, is an error wrapping ErrFormat.
func listImages(root, layout string, known []string) (*imageTree, error) {
	t := &imageTree{}
	clientDirs := []string{""}
	if layout == LayoutClientClass {
		dirs, files, err := listDir(root, MaxNaturalClients)
		if err != nil {
			return nil, err
		}
		if len(files) > 0 {
			return nil, fmt.Errorf("dataset: %s: %w: file %s where layout %s wants only client folders", root, ErrFormat, files[0], layout)
		}
		if len(dirs) > MaxNaturalClients {
			return nil, fmt.Errorf("dataset: %s: %w: %d client folders, at most %d", root, ErrTooLarge, len(dirs), MaxNaturalClients)
		}
		clientDirs, t.clients = dirs, dirs
	}
	type classDir struct {
		client int
		name   string
		files  []string
	}
	var found []classDir
	names := map[string]bool{}
	for k, cd := range clientDirs {
		dir := filepath.Join(root, cd)
		dirs, files, err := listDir(dir, MaxClasses)
		if err != nil {
			return nil, err
		}
		if len(files) > 0 {
			return nil, fmt.Errorf("dataset: %s: %w: file %s where only class folders belong", dir, ErrFormat, files[0])
		}
		for _, c := range dirs {
			sub, files, err := listDir(filepath.Join(dir, c), MaxImages)
			if err != nil {
				return nil, err
			}
			if len(sub) > 0 {
				return nil, fmt.Errorf("dataset: %s: %w: folder %s where only image files belong (layout=%s?)",
					filepath.Join(dir, c), ErrFormat, sub[0], LayoutClientClass)
			}
			if !names[c] {
				if len(names) == MaxClasses {
					return nil, fmt.Errorf("dataset: %s: %w: more than %d class folders", root, ErrTooLarge, MaxClasses)
				}
				names[c] = true
				t.classes = append(t.classes, c)
			}
			found = append(found, classDir{k, c, files})
		}
	}
	naturalOrder(t.classes)
	if known != nil {
		for _, c := range t.classes {
			if !slices.Contains(known, c) {
				return nil, fmt.Errorf("dataset: %s: %w: class folder %q is not a training class (%s)", root, ErrMismatch, clip(c), clip(strings.Join(known, " ")))
			}
		}
		t.classes = known
	}
	index := map[string]int{}
	for i, c := range t.classes {
		index[c] = i
	}
	perClient := make([]int, len(clientDirs))
	for _, cd := range found {
		if len(t.files)+len(cd.files) > MaxImages {
			return nil, fmt.Errorf("dataset: %s: %w: more than %d images", root, ErrTooLarge, MaxImages)
		}
		for _, f := range cd.files {
			t.files = append(t.files, imageFile{filepath.Join(root, clientDirs[cd.client], cd.name, f), index[cd.name], cd.client})
		}
		perClient[cd.client] += len(cd.files)
	}
	if len(t.files) == 0 {
		return nil, fmt.Errorf("dataset: %s: %w: no images (want %s)", root, ErrFormat, layoutPattern(layout))
	}
	for k, n := range perClient {
		if n == 0 && t.clients != nil {
			return nil, fmt.Errorf("dataset: %s: %w: client folder %s holds no images", root, ErrMismatch, clientDirs[k])
		}
	}
	return t, nil
}

func layoutPattern(layout string) string {
	if layout == LayoutClientClass {
		return "ROOT/CLIENT/CLASS/IMAGE.png"
	}
	return "ROOT/CLASS/IMAGE.png"
}

// readImageFile reads one image file, bounded by MaxImageFileBytes. A
// symbolic link is followed; anything but a regular file (a named pipe,
// which would block the open, a device, a folder) is refused with
// ErrFormat before it is opened.
func readImageFile(path string) ([]byte, error) {
	if fi, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("dataset: %w", err)
	} else if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("dataset: %s: %w: not a regular file (%v)", path, ErrFormat, fi.Mode().Type())
	} else if fi.Size() > MaxImageFileBytes {
		return nil, fmt.Errorf("dataset: %s: %w: %d bytes, at most %d", path, ErrTooLarge, fi.Size(), MaxImageFileBytes)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("dataset: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxImageFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("dataset: %s: %w", path, err)
	}
	if len(b) > MaxImageFileBytes {
		return nil, fmt.Errorf("dataset: %s: %w: more than %d bytes", path, ErrTooLarge, MaxImageFileBytes)
	}
	return b, nil
}

// imageShape returns the shape every image of src is read as: size= and
// channels= if given, else the first image's.
func imageShape(src Source, first string) (nn.Shape, error) {
	sh := nn.Shape{C: src.Channels, H: src.Height, W: src.Width}
	if sh.C == 0 || sh.H == 0 {
		b, err := readImageFile(first)
		if err != nil {
			return sh, err
		}
		f, err := DecodeImageConfig(b, first)
		if err != nil {
			return sh, err
		}
		if sh.H == 0 {
			sh.H, sh.W = f.Height, f.Width
		}
		if sh.C == 0 {
			sh.C = 3
			if f.Grey {
				sh.C = 1
			}
		}
	}
	if sh.Dim() > nn.MaxNetActivation {
		return sh, fmt.Errorf("dataset: %s: %w: images of %v are %d floats, at most %d", first, ErrTooLarge, sh, sh.Dim(), nn.MaxNetActivation)
	}
	return sh, nil
}

// readImages decodes the files of t into a Dataset of shape sh.
func readImages(t *imageTree, name string, sh nn.Shape, resize bool) (*Dataset, error) {
	n, dim := len(t.files), sh.Dim()
	if int64(n)*int64(dim) > MaxFloats {
		return nil, fmt.Errorf("dataset: %s: %w: %d images of %d floats, more than %d floats", name, ErrTooLarge, n, dim, MaxFloats)
	}
	d := &Dataset{Name: name, X: make([]float32, n*dim), Y: make([]uint8, n), N: n, Dim: dim,
		Classes: len(t.classes), Shape: sh, ClassNames: t.classes}
	for i, f := range t.files {
		b, err := readImageFile(f.path)
		if err != nil {
			return nil, err
		}
		if err := DecodeImage(d.Row(i), b, f.path, sh, resize); err != nil {
			return nil, err
		}
		d.Y[i] = uint8(f.class)
	}
	return d, nil
}

// loadImageSource reads an images: source.
func loadImageSource(src Source) (*FileData, error) {
	layout := src.Layout
	if layout == "" {
		layout = LayoutClass
	}
	t, err := listImages(src.Paths[0], layout, nil)
	if err != nil {
		return nil, err
	}
	sh, err := imageShape(src, t.files[0].path)
	if err != nil {
		return nil, err
	}
	resize := src.Height != 0
	fd := &FileData{}
	if fd.Train, err = readImages(t, src.Paths[0], sh, resize); err != nil {
		return nil, err
	}
	if t.clients != nil {
		fd.ClientNames = t.clients
		fd.Clients = make([]uint32, len(t.files))
		for i, f := range t.files {
			fd.Clients[i] = uint32(f.client)
		}
	}
	if len(src.Test) == 1 {
		tt, err := listImages(src.Test[0], LayoutClass, t.classes)
		if err != nil {
			return nil, err
		}
		if fd.Test, err = readImages(tt, src.Test[0], sh, resize); err != nil {
			return nil, err
		}
	}
	return fd, nil
}

// describeImages lists an images: source's folders and reads its first
// image's header.
func describeImages(src Source) (nn.Shape, int, error) {
	layout := src.Layout
	if layout == "" {
		layout = LayoutClass
	}
	t, err := listImages(src.Paths[0], layout, nil)
	if err != nil {
		return nn.Shape{}, 0, err
	}
	sh, err := imageShape(src, t.files[0].path)
	return sh, len(t.classes), err
}
