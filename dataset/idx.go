package dataset

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"

	"github.com/klauspost/compress/gzip"
)

// IDX element type codes, the third byte of an IDX magic number.
const (
	IDXUint8   byte = 0x08 // unsigned byte
	IDXInt8    byte = 0x09 // signed byte
	IDXInt16   byte = 0x0B // big-endian int16
	IDXInt32   byte = 0x0C // big-endian int32
	IDXFloat32 byte = 0x0D // big-endian IEEE 754 float32
	IDXFloat64 byte = 0x0E // big-endian IEEE 754 float64
)

// DefaultIDXLimit is the payload limit ReadIDX applies when called with
// limit <= 0, and the one ReadIDXFile always applies: 64 MiB, above MNIST's
// largest file (47,040,000 bytes).
const DefaultIDXLimit = 64 << 20

// MaxIDXDims is the largest number of dimensions ReadIDX accepts.
const MaxIDXDims = 8

// IDX is one decoded IDX file (the MNIST format). Data holds the payload
// exactly as stored: product(Dims) elements of IDXElemSize(Type) bytes each,
// multi-byte elements big-endian.
type IDX struct {
	Type byte
	Dims []int
	Data []byte
}

// IDXElemSize returns the size in bytes of one element of IDX type t, or 0
// if t is not a known type code.
func IDXElemSize(t byte) int {
	switch t {
	case IDXUint8, IDXInt8:
		return 1
	case IDXInt16:
		return 2
	case IDXInt32, IDXFloat32:
		return 4
	case IDXFloat64:
		return 8
	}
	return 0
}

// Len returns the number of elements, the product of Dims.
func (x *IDX) Len() int {
	n := 1
	for _, d := range x.Dims {
		n *= d
	}
	return n
}

// payloadSize checks a header and returns its payload size in bytes. The
// first dimension may be 0 (an empty set of items); inner dimensions may not.
// Both the whole payload and one item (the product of the inner dimensions)
// must fit in limit bytes.
func payloadSize(typ byte, dims []int, limit int64) (int64, error) {
	es := int64(IDXElemSize(typ))
	if es == 0 {
		return 0, fmt.Errorf("%w: unknown element type 0x%02X", ErrBadMagic, typ)
	}
	if len(dims) == 0 || len(dims) > MaxIDXDims {
		return 0, fmt.Errorf("%w: %d dimensions, want 1..%d", ErrBadHeader, len(dims), MaxIDXDims)
	}
	item := es // bytes per item: elemsize * product(dims[1:])
	for i, d := range dims[1:] {
		if d <= 0 {
			return 0, fmt.Errorf("%w: dimension %d is %d", ErrBadHeader, i+1, d)
		}
		if int64(d) > limit/item {
			return 0, fmt.Errorf("%w: dimensions %v exceed the limit of %d bytes", ErrTooLarge, dims, limit)
		}
		item *= int64(d)
	}
	if dims[0] < 0 {
		return 0, fmt.Errorf("%w: dimension 0 is %d", ErrBadHeader, dims[0])
	}
	if int64(dims[0]) > limit/item {
		return 0, fmt.Errorf("%w: dimensions %v need %s bytes, limit is %d",
			ErrTooLarge, dims, mulString(int64(dims[0]), item), limit)
	}
	return int64(dims[0]) * item, nil
}

// mulString formats a*b without overflowing.
func mulString(a, b int64) string {
	if b != 0 && a > math.MaxInt64/b {
		return fmt.Sprintf("%d*%d", a, b)
	}
	return fmt.Sprint(a * b)
}

// ReadIDX decodes one IDX file from r. name is used only in error messages.
// limit bounds the payload in bytes (limit <= 0 means DefaultIDXLimit); the
// header is checked against it before anything is allocated, and memory
// grows only as payload bytes actually arrive, so a lying header costs
// little. The input must end right after the payload. Errors wrap
// ErrBadMagic, ErrBadHeader, ErrTooLarge, ErrTruncated or ErrTrailingData
// and name the file. ReadIDX never panics, whatever the bytes.
func ReadIDX(r io.Reader, name string, limit int64) (*IDX, error) {
	return readIDX(r, name, limit, 0)
}

// readIDX is ReadIDX with a hint of how many bytes r holds (0 if unknown):
// when the hint covers the payload, the payload is allocated at once.
func readIDX(r io.Reader, name string, limit, hint int64) (*IDX, error) {
	h, err := readIDXHeader(r, name, limit)
	if err != nil {
		return nil, err
	}
	data, err := readN(r, h.size, hint >= h.len())
	if err != nil {
		return nil, h.payloadErr(err, int64(len(data)))
	}
	if err := h.checkEnd(r); err != nil {
		return nil, err
	}
	return &IDX{Type: h.typ, Dims: h.dims, Data: data}, nil
}

// idxHeader is a decoded and checked IDX header.
type idxHeader struct {
	name string
	typ  byte
	dims []int
	size int64 // payload bytes
}

// len returns the length of the whole file: header and payload.
func (h *idxHeader) len() int64 { return 4 + 4*int64(len(h.dims)) + h.size }

// readIDXHeader reads and checks the magic number and dimensions.
func readIDXHeader(r io.Reader, name string, limit int64) (*idxHeader, error) {
	if limit <= 0 {
		limit = DefaultIDXLimit
	}
	var hdr [4]byte
	if n, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, readErr(name, err, fmt.Sprintf("%d of 4 magic bytes", n))
	}
	if hdr[0] != 0 || hdr[1] != 0 || IDXElemSize(hdr[2]) == 0 {
		return nil, fmt.Errorf("dataset: %s: %w: % X (want 00 00 type ndims, type 08, 09, 0B..0E)", name, ErrBadMagic, hdr)
	}
	ndims := int(hdr[3])
	if ndims == 0 || ndims > MaxIDXDims {
		return nil, fmt.Errorf("dataset: %s: %w: %d dimensions, want 1..%d", name, ErrBadHeader, ndims, MaxIDXDims)
	}
	var dbuf [4 * MaxIDXDims]byte
	if n, err := io.ReadFull(r, dbuf[:4*ndims]); err != nil {
		return nil, readErr(name, err, fmt.Sprintf("%d of %d dimension bytes", n, 4*ndims))
	}
	dims := make([]int, ndims)
	for i := range dims {
		dims[i] = int(binary.BigEndian.Uint32(dbuf[4*i:]))
	}
	size, err := payloadSize(hdr[2], dims, limit)
	if err != nil {
		return nil, fmt.Errorf("dataset: %s: %w", name, err)
	}
	return &idxHeader{name: name, typ: hdr[2], dims: dims, size: size}, nil
}

// payloadErr describes an error met after got payload bytes.
func (h *idxHeader) payloadErr(err error, got int64) error {
	return readErr(h.name, err, fmt.Sprintf("%d of %d payload bytes for dimensions %v", got, h.size, h.dims))
}

// checkEnd checks that r holds nothing after the payload. Reading to the
// end also makes a gzip reader verify its checksum.
func (h *idxHeader) checkEnd(r io.Reader) error {
	var one [1]byte
	switch n, err := io.ReadFull(r, one[:]); {
	case n > 0:
		return fmt.Errorf("dataset: %s: %w: payload of %d bytes for dimensions %v is followed by more bytes",
			h.name, ErrTrailingData, h.size, h.dims)
	case err != io.EOF:
		return fmt.Errorf("dataset: %s: after the payload: %w", h.name, err)
	}
	return nil
}

// readErr turns a read error into one that names the file; a short read
// becomes ErrTruncated.
func readErr(name string, err error, got string) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("dataset: %s: %w: got %s", name, ErrTruncated, got)
	}
	return fmt.Errorf("dataset: %s: reading %s: %w", name, got, err)
}

// growChunk is the first allocation for a payload whose size is not
// vouched for by the input's length.
const growChunk = 1 << 20

// readN reads exactly n bytes. Unless trusted (the input is known to be
// long enough), the buffer starts at growChunk bytes and doubles, so memory
// follows the bytes actually present.
func readN(r io.Reader, n int64, trusted bool) ([]byte, error) {
	first := n
	if !trusted {
		first = min(n, growChunk)
	}
	buf := make([]byte, 0, first)
	for int64(len(buf)) < n {
		if len(buf) == cap(buf) {
			nb := make([]byte, len(buf), min(n, 2*int64(cap(buf))))
			copy(nb, buf)
			buf = nb
		}
		m, err := io.ReadFull(r, buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+m]
		if err != nil {
			return buf, err
		}
	}
	return buf, nil
}

// ReadIDXFile reads the IDX file at path with DefaultIDXLimit, gunzipping it
// transparently if it starts with the gzip magic 1f 8b (whatever its name).
// Errors name path.
func ReadIDXFile(path string) (*IDX, error) {
	f, r, hint, err := openIDXFile(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return readIDX(r, path, DefaultIDXLimit, hint)
}

// maxDeflateRatio bounds how many bytes a deflate stream of n bytes can
// decode to: 1032·n (258-byte matches in 2 bits at best).
const maxDeflateRatio = 1032

// openIDXFile opens path and returns the file (for Close), a reader of its
// possibly gunzipped contents, and a hint of the contents' length: the
// file size for a plain file, the gzip trailer's ISIZE (the length modulo
// 2^32 of the last member, at most maxDeflateRatio times the file's size)
// for a gzipped one. A wrong hint costs memory up to the payload limit,
// never correctness: gzip verifies ISIZE at the end.
func openIDXFile(path string) (io.Closer, io.Reader, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil, 0, fmt.Errorf("dataset: %s: %w: %w", path, ErrNotFound, err)
		}
		return nil, nil, 0, fmt.Errorf("dataset: %w", err)
	}
	var size int64
	if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
		size = fi.Size()
	}
	br := bufio.NewReaderSize(f, 1<<16)
	if magic, _ := br.Peek(2); !bytes.Equal(magic, []byte{0x1f, 0x8b}) {
		return f, br, size, nil
	}
	var hint int64
	var trailer [4]byte
	if size >= 18 { // the smallest gzip member
		if _, err := f.ReadAt(trailer[:], size-4); err == nil {
			// ISIZE is the file's word, not a fact: deflate expands at
			// most 1032 times, so a larger claim is a forgery (a 32-byte
			// file claiming 4 GiB got 1 GiB allocated).
			hint = min(int64(binary.LittleEndian.Uint32(trailer[:])), maxDeflateRatio*size)
		}
	}
	zr, err := gzip.NewReader(br)
	if err != nil {
		f.Close()
		return nil, nil, 0, fmt.Errorf("dataset: %s: gzip: %w", path, err)
	}
	return f, zr, hint, nil
}

// WriteIDX encodes x in the IDX format to w. It checks x the way ReadIDX
// checks a header (known type, 1..MaxIDXDims dimensions, no zero inner
// dimension, len(Data) matching the dimensions), without the size limit,
// so that ReadIDX can decode whatever WriteIDX wrote within that limit.
func WriteIDX(w io.Writer, x *IDX) error {
	for _, d := range x.Dims {
		if d < 0 || uint64(d) > math.MaxUint32 {
			return fmt.Errorf("dataset: WriteIDX: %w: dimension %d does not fit in uint32", ErrBadHeader, d)
		}
	}
	size, err := payloadSize(x.Type, x.Dims, math.MaxInt64)
	if err != nil {
		return fmt.Errorf("dataset: WriteIDX: %w", err)
	}
	if int64(len(x.Data)) != size {
		return fmt.Errorf("dataset: WriteIDX: %w: %d data bytes, dimensions %v need %d", ErrMismatch, len(x.Data), x.Dims, size)
	}
	hdr := make([]byte, 4, 4+4*len(x.Dims))
	hdr[2], hdr[3] = x.Type, byte(len(x.Dims))
	for _, d := range x.Dims {
		hdr = binary.BigEndian.AppendUint32(hdr, uint32(d))
	}
	if _, err := w.Write(hdr); err != nil {
		return fmt.Errorf("dataset: WriteIDX: %w", err)
	}
	if _, err := w.Write(x.Data); err != nil {
		return fmt.Errorf("dataset: WriteIDX: %w", err)
	}
	return nil
}
