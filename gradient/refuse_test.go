package gradient

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"runtime"
	"testing"

	"github.com/fedzip/fedzip/compress"
	"github.com/klauspost/compress/zstd"
)

// sample returns a valid message of the spec for n parameters.
func sample(t testing.TB, spec string, n int) []byte {
	t.Helper()
	e := mustEncoder(t, spec, n)
	msg, _, err := e.Encode(nil, genDelta(make([]float32, n), 11, 1), 1, 7)
	if err != nil {
		t.Fatal(err)
	}
	return msg
}

// decodeAll runs every decoding entry point on src and checks that they
// agree on the error, which it returns. Decode gets a destination of the
// length the header says if it can be read, else of length n.
func decodeAll(t *testing.T, src []byte, lim Limits, n int) error {
	t.Helper()
	if h, err := ReadHeader(src, lim); err == nil && h.N <= 1<<24 {
		n = h.N
	}
	_, err1 := Decode(make([]float32, n), src, lim)
	_, _, _, err2 := DecodeSparse(nil, nil, src, lim)
	if (err1 == nil) != (err2 == nil) {
		t.Fatalf("Decode: %v; DecodeSparse: %v", err1, err2)
	}
	return err1
}

func TestRefuseTruncated(t *testing.T) {
	for _, s := range []string{"topk4", "none", "randk=0.1,bits=bf16", "stc"} {
		msg := sample(t, s, 300)
		for l := range len(msg) {
			err := decodeAll(t, msg[:l], Limits{}, 300)
			if !errors.Is(err, ErrTruncated) {
				t.Fatalf("%s: prefix of %d of %d bytes: %v, want ErrTruncated", s, l, len(msg), err)
			}
		}
		if _, err := ReadHeader(msg, Limits{}); err != nil {
			t.Fatalf("%s: the whole message: %v", s, err)
		}
	}
}

func TestRefuseBitFlips(t *testing.T) {
	for _, s := range []string{"topk4", "qsgd4", "randk=0.1,bits=16", "topk=0.05,ef=on,entropy=zstd"} {
		msg := sample(t, s, 300)
		h, _ := ReadHeader(msg, Limits{})
		sectionsStart := h.Sections[0].Offset
		for bit := range 8 * len(msg) {
			bad := bytes.Clone(msg)
			bad[bit/8] ^= 1 << (bit % 8)
			err := decodeAll(t, bad, Limits{}, 300)
			if err == nil {
				t.Fatalf("%s: flip of bit %d accepted", s, bit)
			}
			// A flip in the fixed header (after the magic and version),
			// in the sections or in the checksum changes no length: the
			// checksum catches it. The RUN flag is the exception: it adds
			// the run ID to the header's layout.
			at := bit / 8
			runFlag := at == 5 && 1<<(bit%8) == FlagRun
			if at >= 5 && at < fixedHeader && !runFlag || at >= sectionsStart {
				if !errors.Is(err, ErrChecksum) {
					t.Fatalf("%s: flip of bit %d (byte %d): %v, want ErrChecksum", s, bit, at, err)
				}
			}
		}
	}
}

func TestRefuseHeader(t *testing.T) {
	msg := sample(t, "topk4", 300)
	n := 300
	tests := []struct {
		name string
		src  []byte
		lim  Limits
		want error
	}{
		{"empty", nil, Limits{}, ErrTruncated},
		{"magic", append([]byte("FZUQ"), msg[4:]...), Limits{}, ErrMagic},
		{"not an update", []byte("PK\x03\x04 a zip file"), Limits{}, ErrMagic},
		{"version 2", append(bytes.Clone(msg[:4]), append([]byte{2}, msg[5:]...)...), Limits{}, ErrVersion},
		{"version 0", append(bytes.Clone(msg[:4]), append([]byte{0}, msg[5:]...)...), Limits{}, ErrVersion},
		{"bytes over limit", msg, Limits{MaxBytes: len(msg) - 1}, ErrTooLarge},
		{"params over limit", msg, Limits{MaxParams: n - 1}, ErrTooLarge},
		{"trailing byte", append(bytes.Clone(msg), 0), Limits{}, ErrCorrupt},
		{"checksum", append(bytes.Clone(msg[:len(msg)-1]), msg[len(msg)-1]^0x80), Limits{}, ErrChecksum},
	}
	for _, tt := range tests {
		if err := decodeAll(t, tt.src, tt.lim, n); !errors.Is(err, tt.want) {
			t.Errorf("%s: %v, want %v", tt.name, err, tt.want)
		}
	}
	if err := decodeAll(t, msg, Limits{MaxBytes: len(msg), MaxParams: n}, n); err != nil {
		t.Errorf("at the limits: %v", err)
	}
	if _, err := Decode(make([]float32, n+1), msg, Limits{}); !errors.Is(err, ErrLength) {
		t.Errorf("destination length: %v", err)
	}
}

// TestRefuseFields crafts messages with a valid checksum whose fields or
// sections are wrong, one check each.
func TestRefuseFields(t *testing.T) {
	const n = 100
	nan := float32(math.NaN())
	inf := float32(math.Inf(1))
	sparse := func(k int, f Format, bits int) Header {
		h := Header{Selection: TopK, Format: f, Bits: bits, N: n, K: k, Round: 1}
		h.Sections[0].Kind, h.Sections[0].Coding = SectionIndices, CodingRaw
		if f == FormatCodes {
			h.Sections[1].Kind = SectionScales
			h.Sections[2].Kind = SectionValues
		} else {
			h.Sections[1].Kind = SectionValues
		}
		return h
	}
	dense := func(f Format, bits int) Header {
		h := Header{Selection: Dense, Format: f, Bits: bits, N: n, K: n, Round: 1}
		if f == FormatCodes {
			h.Sections[0].Kind = SectionScales
			h.Sections[1].Kind = SectionValues
		} else {
			h.Sections[0].Kind = SectionValues
		}
		return h
	}
	raw := func(idx ...uint32) []byte { return compress.AppendPacked32(nil, idx, indexWidth(n)) }
	with := func(h Header, f func(*Header)) Header { f(&h); return h }
	rice := func(idx ...int32) []byte { return compress.AppendRiceIndices(nil, idx, n) }
	zeros := func(k int) []float32 { return make([]float32, k) }
	codes := func(k, bits int, sym uint8) []byte {
		s := bytes.Repeat([]byte{sym}, k)
		return compress.AppendPacked(nil, s, bits)
	}
	zstdOf := func(b []byte) []byte {
		enc, _ := zstd.NewWriter(nil)
		return enc.EncodeAll(b, nil)
	}

	tests := []struct {
		name string
		msg  []byte
		want error
	}{
		{"valid sparse", build(sparse(3, FormatFloat32, 32), raw(1, 5, 99), f32bytes(1, 2, 3)), nil},
		{"valid rice", build(with(sparse(3, FormatFloat32, 32), func(h *Header) { h.Sections[0].Coding = CodingRice }), rice(1, 5, 99), f32bytes(1, 2, 3)), nil},
		{"valid dense codes", build(dense(FormatCodes, 4), f32bytes(0.5), codes(n, 4, 7)), nil},

		{"repeated index", build(sparse(3, FormatFloat32, 32), raw(1, 5, 5), f32bytes(1, 2, 3)), ErrIndex},
		{"decreasing index", build(sparse(3, FormatFloat32, 32), raw(1, 5, 4), f32bytes(1, 2, 3)), ErrIndex},
		{"index = n", build(sparse(3, FormatFloat32, 32), raw(1, 5, n), f32bytes(1, 2, 3)), ErrIndex},
		{"index >= n", build(sparse(3, FormatFloat32, 32), raw(1, 5, 127), f32bytes(1, 2, 3)), ErrIndex},
		{"rice gap beyond n", build(with(sparse(3, FormatFloat32, 32), func(h *Header) { h.Sections[0].Coding = CodingRice; h.N = 50 }),
			rice(1, 5, 99), f32bytes(1, 2, 3)), ErrIndex},
		{"rice trailing bytes", build(with(sparse(3, FormatFloat32, 32), func(h *Header) { h.Sections[0].Coding = CodingRice }),
			append(rice(1, 5, 99), 0), f32bytes(1, 2, 3)), ErrCorrupt},
		{"zstd indices beyond n", build(with(sparse(3, FormatFloat32, 32), func(h *Header) { h.Sections[0].Coding = CodingZstd }),
			zstdOf(raw(1, 5, 120)), f32bytes(1, 2, 3)), ErrIndex},

		{"NaN value", build(sparse(3, FormatFloat32, 32), raw(1, 5, 9), f32bytes(1, nan, 3)), ErrNonFinite},
		{"Inf value", build(dense(FormatFloat32, 32), f32bytes(append(zeros(n-1), -inf)...)), ErrNonFinite},
		{"float16 Inf", build(sparse(2, FormatFloat16, 16), raw(1, 5), []byte{0, 0x3c, 0, 0x7c}), ErrNonFinite},
		{"float16 NaN", build(sparse(2, FormatFloat16, 16), raw(1, 5), []byte{1, 0xfe, 0, 0x3c}), ErrNonFinite},
		{"bfloat16 Inf", build(sparse(2, FormatBFloat16, 16), raw(1, 5), []byte{0x80, 0x7f, 0, 0x3f}), ErrNonFinite},
		{"NaN scale", build(dense(FormatCodes, 4), f32bytes(nan), codes(n, 4, 7)), ErrNonFinite},
		{"Inf scale", build(dense(FormatCodes, 4), f32bytes(inf), codes(n, 4, 7)), ErrNonFinite},
		{"scale overflows", build(dense(FormatCodes, 4), f32bytes(math.MaxFloat32/2), codes(n, 4, 7)), ErrNonFinite},
		{"negative scale", build(dense(FormatCodes, 4), f32bytes(-1), codes(n, 4, 7)), ErrCorrupt},
		{"zstd NaN", build(with(dense(FormatFloat32, 32), func(h *Header) { h.Sections[0].Coding = CodingZstd }),
			zstdOf(f32bytes(append(zeros(n-1), nan)...))), ErrNonFinite},

		{"symbol out of range", build(dense(FormatCodes, 4), f32bytes(1), codes(n, 4, 15)), ErrCorrupt},
		{"packing padding", build(dense(FormatCodes, 3), f32bytes(1), append(codes(n, 3, 3)[:packedLen(n, 3)-1], 0xff)), ErrCorrupt},
		{"huffman garbage", build(with(dense(FormatCodes, 4), func(h *Header) { h.Sections[1].Coding = CodingHuffman }),
			f32bytes(1), []byte{2, 3, 0xff, 0xff, 1, 2, 3}), ErrCorrupt},
		{"huffman trailing", build(with(dense(FormatCodes, 4), func(h *Header) { h.Sections[1].Coding = CodingHuffman }),
			f32bytes(1), []byte{0, 7, 0}), ErrCorrupt},
		{"zstd garbage", build(with(dense(FormatFloat32, 32), func(h *Header) { h.Sections[0].Coding = CodingZstd }),
			[]byte("not zstd at all")), ErrCorrupt},
		{"zstd too long", build(with(dense(FormatFloat32, 32), func(h *Header) { h.Sections[0].Coding = CodingZstd }),
			zstdOf(f32bytes(zeros(n+1)...))), ErrCorrupt},
		{"zstd bomb", build(with(dense(FormatFloat32, 32), func(h *Header) { h.Sections[0].Coding = CodingZstd }),
			zstdOf(make([]byte, 64<<20))), ErrCorrupt},
		{"zstd too short", build(with(dense(FormatFloat32, 32), func(h *Header) { h.Sections[0].Coding = CodingZstd }),
			zstdOf(f32bytes(zeros(n-1)...))), ErrCorrupt},

		{"unknown flag", build(with(dense(FormatFloat32, 32), func(h *Header) { h.Flags = 4 }), f32bytes(zeros(n)...)), ErrCorrupt},
		{"k > n", build(with(sparse(3, FormatFloat32, 32), func(h *Header) { h.K = n + 1 }), raw(1, 5, 9), f32bytes(1, 2, 3)), ErrCorrupt},
		{"dense k != n", build(with(dense(FormatFloat32, 32), func(h *Header) { h.K = n - 1 }), f32bytes(zeros(n-1)...)), ErrCorrupt},
		{"unknown selection", build(with(sparse(3, FormatFloat32, 32), func(h *Header) { h.Selection = 9 }), raw(1, 5, 9), f32bytes(1, 2, 3)), ErrCorrupt},
		{"unknown format", build(with(sparse(3, FormatFloat32, 32), func(h *Header) { h.Format = 9 }), raw(1, 5, 9), f32bytes(1, 2, 3)), ErrCorrupt},
		{"float32 with bits 16", build(sparse(3, FormatFloat32, 16), raw(1, 5, 9), f32bytes(1, 2, 3)), ErrCorrupt},
		{"codes of 9 bits", build(dense(FormatCodes, 9), f32bytes(1), codes(n, 8, 7)), ErrCorrupt},
		{"bucket with floats", build(with(dense(FormatFloat32, 32), func(h *Header) { h.Bucket = 10 }), f32bytes(zeros(n)...)), ErrCorrupt},
		{"missing section", build(sparse(3, FormatFloat32, 32), raw(1, 5, 9)), ErrCorrupt},
		{"sections swapped", build(with(sparse(3, FormatFloat32, 32), func(h *Header) {
			h.Sections[0].Kind, h.Sections[1].Kind = SectionValues, SectionIndices
		}), f32bytes(1, 2, 3), raw(1, 5, 9)), ErrCorrupt},
		{"unknown coding", build(with(sparse(3, FormatFloat32, 32), func(h *Header) { h.Sections[0].Coding = 9 }), raw(1, 5, 9), f32bytes(1, 2, 3)), ErrCorrupt},
		{"huffman floats", build(with(sparse(3, FormatFloat32, 32), func(h *Header) { h.Sections[1].Coding = CodingHuffman }), raw(1, 5, 9), f32bytes(1, 2, 3)), ErrCorrupt},
		{"seed for top-k", build(with(sparse(3, FormatFloat32, 32), func(h *Header) { h.Sections[0].Coding = CodingSeed }), make([]byte, 8), f32bytes(1, 2, 3)), ErrCorrupt},
		{"short values", build(sparse(3, FormatFloat32, 32), raw(1, 5, 9), f32bytes(1, 2)), ErrCorrupt},
		{"short scales", build(with(dense(FormatCodes, 4), func(h *Header) { h.Bucket = 10 }), f32bytes(1), codes(n, 4, 7)), ErrCorrupt},
		{"rice too short for k", build(with(sparse(30, FormatFloat32, 32), func(h *Header) { h.Sections[0].Coding = CodingRice }),
			[]byte{0, 0xff, 0xff}, f32bytes(zeros(30)...)), ErrCorrupt},
		{"full sparse", build(with(sparse(3, FormatFloat32, 32), func(h *Header) { h.Flags = FlagFull }), raw(1, 5, 9), f32bytes(1, 2, 3)), ErrCorrupt},
		{"full quantized", build(with(dense(FormatCodes, 4), func(h *Header) { h.Flags = FlagFull }), f32bytes(1), codes(n, 4, 7)), ErrCorrupt},
		{"no sections", build(dense(FormatFloat32, 32)), ErrCorrupt},
	}
	for _, tt := range tests {
		err := decodeAll(t, tt.msg, Limits{}, n)
		if tt.want == nil {
			if err != nil {
				t.Errorf("%s: %v", tt.name, err)
			}
			continue
		}
		if !errors.Is(err, tt.want) {
			t.Errorf("%s: %v, want %v", tt.name, err, tt.want)
		}
	}
}

// TestRefuseHugeFields checks that sizes far beyond the input are refused
// before anything is allocated for them.
func TestRefuseHugeFields(t *testing.T) {
	h := Header{Selection: Dense, Format: FormatCodes, Bits: 8, N: 1<<31 - 1, K: 1<<31 - 1}
	h.Sections[0] = Section{Kind: SectionScales}
	h.Sections[1] = Section{Kind: SectionValues, Coding: CodingHuffman}
	msg := build(h, f32bytes(1), []byte{0, 0}) // constant-mode Huffman: any k
	for _, lim := range []Limits{{}, {MaxParams: 1 << 20}} {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		if _, _, _, err := DecodeSparse(nil, nil, msg, lim); !errors.Is(err, ErrTooLarge) {
			t.Errorf("limits %+v: %v", lim, err)
		}
		runtime.ReadMemStats(&after)
		if b := after.TotalAlloc - before.TotalAlloc; b > 1<<16 {
			t.Errorf("limits %+v: %d bytes allocated before refusing", lim, b)
		}
	}
	// A section length beyond the input, and a varint beyond 64 bits.
	bad := append([]byte(Magic), Version, 0, 0, 0, 32, 1, 1, 0, 0, 0, 1, byte(SectionValues), 0)
	bad = binary.AppendUvarint(bad, 1<<40)
	if err := decodeAll(t, append(bad, 0, 0, 0, 0), Limits{}, 1); !errors.Is(err, ErrTruncated) {
		t.Errorf("section length 2^40: %v", err)
	}
	over := append([]byte(Magic), Version, 0, 0, 0, 32)
	over = append(over, bytes.Repeat([]byte{0xff}, 10)...)
	over = append(over, 1, 0, 0, 0, 0, 0, 0, 0)
	if err := decodeAll(t, over, Limits{}, 1); !errors.Is(err, ErrCorrupt) {
		t.Errorf("varint overflow: %v", err)
	}
}

func TestNoPanicOnMutations(t *testing.T) {
	// Every byte of several messages set to a few values, and every
	// truncation with junk after it: errors, never panics.
	for _, s := range []string{"topk4", "stc", "qsgd4", "randk=0.2,bits=8,entropy=zstd"} {
		msg := sample(t, s, 200)
		for i := range msg {
			for _, v := range []byte{0, 1, 0x7f, 0x80, 0xff} {
				bad := bytes.Clone(msg)
				bad[i] = v
				_ = decodeAll(t, bad, Limits{}, 200)
				_ = decodeAll(t, reseal(bad), Limits{}, 200)
			}
		}
	}
}
