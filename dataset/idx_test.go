package dataset

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// idxBytes encodes an IDX header for typ and dims followed by payload.
func idxBytes(typ byte, dims []uint32, payload []byte) []byte {
	b := []byte{0, 0, typ, byte(len(dims))}
	for _, d := range dims {
		b = binary.BigEndian.AppendUint32(b, d)
	}
	return append(b, payload...)
}

func TestReadIDXErrors(t *testing.T) {
	valid := idxBytes(IDXUint8, []uint32{2, 3}, []byte{1, 2, 3, 4, 5, 6})
	tests := []struct {
		name  string
		in    []byte
		limit int64
		want  error
		msg   string // must appear in the error
	}{
		{"empty", nil, 0, ErrTruncated, "0 of 4 magic bytes"},
		{"short magic", []byte{0, 0, 8}, 0, ErrTruncated, "3 of 4 magic bytes"},
		{"bad magic", append([]byte{1, 0}, valid[2:]...), 0, ErrBadMagic, "01 00 08 02"},
		{"unknown type 0x0A", idxBytes(0x0A, []uint32{1}, []byte{0}), 0, ErrBadMagic, "00 00 0A 01"},
		{"unknown type 0x07", idxBytes(0x07, []uint32{1}, []byte{0}), 0, ErrBadMagic, "00 00 07 01"},
		{"gzip not unwrapped", []byte{0x1f, 0x8b, 8, 0}, 0, ErrBadMagic, "1F 8B 08 00"},
		{"zero dims", []byte{0, 0, 8, 0}, 0, ErrBadHeader, "0 dimensions"},
		{"nine dims", []byte{0, 0, 8, 9}, 0, ErrBadHeader, "9 dimensions"},
		{"truncated dims", idxBytes(IDXUint8, []uint32{2, 3}, nil)[:9], 0, ErrTruncated, "5 of 8 dimension bytes"},
		{"zero inner dim", idxBytes(IDXUint8, []uint32{2, 0}, nil), 0, ErrBadHeader, "dimension 1 is 0"},
		{"over limit", idxBytes(IDXUint8, []uint32{10, 10}, nil), 99, ErrTooLarge, "need 100 bytes, limit is 99"},
		{"elem size counts", idxBytes(IDXFloat64, []uint32{2, 7}, nil), 100, ErrTooLarge, "need 112 bytes"},
		{"product overflows", idxBytes(IDXFloat64, []uint32{0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF}, nil), 0, ErrTooLarge, "exceed the limit"},
		{"inner overflows with zero count", idxBytes(IDXUint8, []uint32{0, 0xFFFFFFFF, 0xFFFFFFFF}, nil), 0, ErrTooLarge, "exceed the limit"},
		{"truncated payload", valid[:len(valid)-2], 0, ErrTruncated, "4 of 6 payload bytes for dimensions [2 3]"},
		{"no payload", valid[:12], 0, ErrTruncated, "0 of 6 payload bytes"},
		{"trailing garbage", append(bytes.Clone(valid), 0xAA), 0, ErrTrailingData, "payload of 6 bytes for dimensions [2 3] is followed by more bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ReadIDX(bytes.NewReader(tt.in), "some/file.idx", tt.limit)
			if err == nil {
				t.Fatalf("ReadIDX = %+v, nil; want error %v", got, tt.want)
			}
			if !errors.Is(err, tt.want) {
				t.Errorf("error %q does not wrap %v", err, tt.want)
			}
			for _, s := range []string{"some/file.idx", tt.want.Error(), tt.msg} {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not contain %q", err, s)
				}
			}
		})
	}
}

func TestReadIDXValid(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		want *IDX
	}{
		{"ubyte matrix", idxBytes(IDXUint8, []uint32{2, 3}, []byte{1, 2, 3, 4, 5, 6}),
			&IDX{Type: IDXUint8, Dims: []int{2, 3}, Data: []byte{1, 2, 3, 4, 5, 6}}},
		{"empty set", idxBytes(IDXUint8, []uint32{0, 28, 28}, nil),
			&IDX{Type: IDXUint8, Dims: []int{0, 28, 28}, Data: []byte{}}},
		{"int16 vector", idxBytes(IDXInt16, []uint32{2}, []byte{0xFF, 0xFE, 0, 1}),
			&IDX{Type: IDXInt16, Dims: []int{2}, Data: []byte{0xFF, 0xFE, 0, 1}}},
		{"float64 scalar-ish", idxBytes(IDXFloat64, []uint32{1, 1, 1, 1, 1, 1, 1, 1}, make([]byte, 8)),
			&IDX{Type: IDXFloat64, Dims: []int{1, 1, 1, 1, 1, 1, 1, 1}, Data: make([]byte, 8)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ReadIDX(bytes.NewReader(tt.in), "x", 0)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
			var buf bytes.Buffer
			if err := WriteIDX(&buf, got); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(buf.Bytes(), tt.in) {
				t.Errorf("WriteIDX = % X, want % X", buf.Bytes(), tt.in)
			}
		})
	}
}

// TestReadIDXLyingHeaderSmallAlloc checks that a header announcing the full
// limit but followed by few bytes does not allocate the full limit.
func TestReadIDXLyingHeaderSmallAlloc(t *testing.T) {
	in := idxBytes(IDXUint8, []uint32{1000, 1000, 60}, []byte{1, 2, 3}) // 60 MB announced
	var before, after runtimeMem
	before.read()
	_, err := ReadIDX(bytes.NewReader(in), "x", 0)
	after.read()
	if !errors.Is(err, ErrTruncated) {
		t.Fatalf("err = %v, want ErrTruncated", err)
	}
	if d := after.total - before.total; d > 4<<20 {
		t.Errorf("allocated %d bytes for a 3-byte payload", d)
	}
}

func TestWriteIDXErrors(t *testing.T) {
	tests := []struct {
		name string
		x    *IDX
		want error
	}{
		{"unknown type", &IDX{Type: 0x0A, Dims: []int{1}, Data: []byte{0}}, ErrBadMagic},
		{"no dims", &IDX{Type: IDXUint8}, ErrBadHeader},
		{"zero inner", &IDX{Type: IDXUint8, Dims: []int{1, 0}}, ErrBadHeader},
		{"negative", &IDX{Type: IDXUint8, Dims: []int{-1}}, ErrBadHeader},
		{"short data", &IDX{Type: IDXInt32, Dims: []int{2}, Data: make([]byte, 7)}, ErrMismatch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := WriteIDX(&bytes.Buffer{}, tt.x); !errors.Is(err, tt.want) {
				t.Errorf("WriteIDX err = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestReadIDXFile(t *testing.T) {
	dir := t.TempDir()
	raw := idxBytes(IDXUint8, []uint32{3}, []byte{7, 8, 9})
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(raw)
	zw.Close()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	want := &IDX{Type: IDXUint8, Dims: []int{3}, Data: []byte{7, 8, 9}}
	for _, p := range []string{write("plain", raw), write("zipped.gz", gz.Bytes()), write("zipped-no-suffix", gz.Bytes())} {
		got, err := ReadIDXFile(p)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: got %+v, want %+v", p, got, want)
		}
	}

	// Errors inside a gzip stream still name the file.
	var gzTrunc bytes.Buffer
	zw = gzip.NewWriter(&gzTrunc)
	zw.Write(raw[:len(raw)-1])
	zw.Close()
	var gzTrail bytes.Buffer
	zw = gzip.NewWriter(&gzTrail)
	zw.Write(append(bytes.Clone(raw), 0))
	zw.Close()
	tests := []struct {
		file string
		b    []byte
		want error
	}{
		{"trunc.gz", gzTrunc.Bytes(), ErrTruncated},
		{"trail.gz", gzTrail.Bytes(), ErrTrailingData},
		{"trail-after-gzip.gz", append(bytes.Clone(gz.Bytes()), "junk"...), nil},
		{"cut-gzip.gz", gz.Bytes()[:len(gz.Bytes())-4], nil},
	}
	for _, tt := range tests {
		p := write(tt.file, tt.b)
		_, err := ReadIDXFile(p)
		if err == nil || !strings.Contains(err.Error(), p) {
			t.Errorf("%s: err = %v, want an error naming the file", tt.file, err)
		}
		if tt.want != nil && !errors.Is(err, tt.want) {
			t.Errorf("%s: err = %v, want %v", tt.file, err, tt.want)
		}
	}

	missing := filepath.Join(dir, "missing")
	if _, err := ReadIDXFile(missing); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), missing) {
		t.Errorf("missing file: err = %v", err)
	}
}

func FuzzReadIDX(f *testing.F) {
	valid := idxBytes(IDXUint8, []uint32{2, 3}, []byte{1, 2, 3, 4, 5, 6})
	f.Add(valid)
	f.Add(valid[:len(valid)-1])
	f.Add(valid[:7])
	f.Add(append(bytes.Clone(valid), 0))
	f.Add(idxBytes(IDXUint8, []uint32{0, 28, 28}, nil))
	f.Add(idxBytes(IDXUint8, []uint32{4}, []byte{0, 9, 3, 1}))
	f.Add(idxBytes(IDXInt8, []uint32{1, 1, 2}, []byte{0x80, 0x7F}))
	f.Add(idxBytes(IDXInt16, []uint32{1}, []byte{0x80, 0}))
	f.Add(idxBytes(IDXInt32, []uint32{1}, []byte{1, 2, 3, 4}))
	f.Add(idxBytes(IDXFloat32, []uint32{1, 1}, []byte{0x3F, 0x80, 0, 0}))
	f.Add(idxBytes(IDXFloat64, []uint32{1}, make([]byte, 8)))
	f.Add(idxBytes(IDXUint8, []uint32{0xFFFFFFFF, 0xFFFFFFFF}, nil))
	f.Add(idxBytes(IDXUint8, []uint32{1, 1, 1, 1, 1, 1, 1, 1}, []byte{5}))
	f.Add([]byte{0, 0, 8, 9})
	f.Add([]byte{0, 0, 8, 0})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, in []byte) {
		const limit = 1 << 16
		x, err := ReadIDX(bytes.NewReader(in), "fuzz.idx", limit)
		if err != nil {
			if !strings.Contains(err.Error(), "fuzz.idx") {
				t.Fatalf("error %q does not name the file", err)
			}
			return
		}
		if int64(len(x.Data)) > limit || len(x.Data) != x.Len()*IDXElemSize(x.Type) {
			t.Fatalf("decoded %d bytes for dims %v type %02X", len(x.Data), x.Dims, x.Type)
		}
		// Round trip: the format is canonical, so re-encoding gives the input back.
		var buf bytes.Buffer
		if err := WriteIDX(&buf, x); err != nil {
			t.Fatalf("WriteIDX of a decoded IDX: %v", err)
		}
		if !bytes.Equal(buf.Bytes(), in) {
			t.Fatalf("round trip:\n got % X\nwant % X", buf.Bytes(), in)
		}
		y, err := ReadIDX(&buf, "again", limit)
		if err != nil || !reflect.DeepEqual(x, y) {
			t.Fatalf("decode(encode(x)) = %+v, %v; want %+v", y, err, x)
		}
	})
}
