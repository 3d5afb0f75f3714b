package deliver

import (
	"bytes"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"math"
	"math/rand/v2"
	"reflect"
	"testing"

	"github.com/fedzip/fedzip/compress"
	"github.com/fedzip/fedzip/nn"
)

// testKey is a fixed key, so that the fuzz corpus stays valid.
var testKey = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))

func testPub() ed25519.PublicKey { return testKey.Public().(ed25519.PublicKey) }

// testFile returns a small network that uses every encoding: a sparse
// Huffman-coded codebook layer, a factored layer with an int8 and a float16
// factor, and a dense float32 layer.
func testFile(seed uint64) *File {
	r := rand.New(rand.NewPCG(seed, 1))
	norm := func(n int) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(r.NormFloat64())
		}
		return v
	}
	f := &File{Meta: map[string]string{"model": "test", "source": "unit"}, Input: 20}
	// fc1: 16×20, 25 % dense, codebook of 3 bits, Huffman.
	var idx []int32
	for i := 0; i < 320; i++ {
		if r.IntN(4) == 0 {
			idx = append(idx, int32(i))
		}
	}
	cent := []float32{-1, -0.5, -0.25, 0.25, 0.5, 1}
	codes := make([]uint8, len(idx))
	for i := range codes {
		codes[i] = uint8(r.IntN(len(cent)))
	}
	f.Tensors = append(f.Tensors,
		Tensor{Name: "fc1.weight", Shape: []int{16, 20}, Sparse: true, Index: idx, Encoding: Codebook, Codes: codes, Centroids: cent, Bits: 3, Coding: Huffman},
		Tensor{Name: "fc1.bias", Shape: []int{16}, Encoding: Float32, Values: norm(16)})
	// fc2: 8×16 as 8×3 (int8 per channel) times 3×16 (float16).
	a := norm(8 * 3)
	scale, zero := make([]float32, 8), make([]int8, 8)
	lo, hi := make([]float32, 8), make([]float32, 8)
	compress.CalibrateMinMax(lo, hi, a)
	compress.AffineParams(scale, zero, lo, hi)
	q := make([]int8, len(a))
	compress.QuantizeAffine(q, a, scale, zero)
	b := norm(3 * 16)
	half := make([]uint16, len(b))
	compress.ToFloat16(half, b)
	f.Tensors = append(f.Tensors,
		Tensor{Name: "fc2.weight.a", Shape: []int{8, 3}, Encoding: Int8, Q: q, Scale: scale, Zero: zero, Coding: Packed},
		Tensor{Name: "fc2.weight.b", Shape: []int{3, 16}, Encoding: Float16, Half: half},
		Tensor{Name: "fc3.weight", Shape: []int{4, 8}, Encoding: Float32, Values: norm(32)})
	f.Layers = []Layer{
		{Weights: []int{0}, Bias: 1, ReLU: true},
		{Weights: []int{2, 3}, Bias: -1, ReLU: true},
		{Weights: []int{4}, Bias: -1},
	}
	return f
}

func encode(t testing.TB, f *File) []byte {
	t.Helper()
	e, err := Encode(f, testKey)
	if err != nil {
		t.Fatal(err)
	}
	return e.Data
}

func TestRoundTrip(t *testing.T) {
	f := testFile(1)
	data := encode(t, f)
	g, err := Read(data, testPub())
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(f, g) {
		t.Fatalf("round trip differs:\n%+v\n%+v", f, g)
	}
	// Packed codebook symbols and float16 centroids round-trip too.
	f.Tensors[0].Coding = Packed
	f.Tensors[0].CentroidsHalf = true
	f.Tensors[2].Coding = Huffman
	g, err = Read(encode(t, f), testPub())
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(f, g) {
		t.Fatal("round trip with packed codes differs")
	}
}

// reference computes the network's logits from dense tensors, directly.
func reference(f *File, x []float32) []float32 {
	dense := func(id int) []float32 {
		v := make([]float32, f.Tensors[id].Size())
		f.Tensors[id].Dense(v)
		return v
	}
	mul := func(w []float32, rows, cols int, x []float32) []float32 {
		y := make([]float32, rows)
		for r := range y {
			var s float64
			for c := 0; c < cols; c++ {
				s += float64(w[r*cols+c]) * float64(x[c])
			}
			y[r] = float32(s)
		}
		return y
	}
	for _, l := range f.Layers {
		for j := len(l.Weights) - 1; j >= 0; j-- {
			t := &f.Tensors[l.Weights[j]]
			x = mul(dense(l.Weights[j]), t.Shape[0], t.Shape[1], x)
		}
		if l.Bias >= 0 {
			for i, b := range dense(l.Bias) {
				x[i] += b
			}
		}
		if l.ReLU {
			for i := range x {
				x[i] = max(x[i], 0)
			}
		}
	}
	return x
}

func TestRuntimeMatchesReference(t *testing.T) {
	f := testFile(2)
	net, err := Load(encode(t, f), testPub())
	if err != nil {
		t.Fatal(err)
	}
	if net.InputDim() != 20 || net.Classes() != 4 {
		t.Fatal(net.InputDim(), net.Classes())
	}
	s := net.NewScratch()
	r := rand.New(rand.NewPCG(3, 3))
	probs := make([]float32, 4)
	for trial := 0; trial < 50; trial++ {
		x := make([]float32, 20)
		for i := range x {
			if r.IntN(3) > 0 { // some zero inputs, as in images
				x[i] = float32(r.NormFloat64())
			}
		}
		want := reference(f, x)
		got := net.Logits(x, s)
		for i := range want {
			if math.Abs(float64(got[i]-want[i])) > 1e-4*(1+math.Abs(float64(want[i]))) {
				t.Fatalf("logit %d: %v, reference %v", i, got[i], want[i])
			}
		}
		c := net.Predict(probs, x, s)
		var sum float32
		for j, p := range probs {
			sum += p
			if p > probs[c] || (p == probs[c] && j < c) {
				t.Fatalf("class %d but probs %v", c, probs)
			}
		}
		if math.Abs(float64(sum-1)) > 1e-5 {
			t.Fatalf("probabilities sum to %v", sum)
		}
	}
}

func TestRefusesBadFiles(t *testing.T) {
	f := testFile(4)
	data := encode(t, f)
	other := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{9}, 32))
	resign := func(body []byte) []byte {
		b := append([]byte(nil), body...)
		b = binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
		return append(b, ed25519.Sign(testKey, b)...)
	}
	body := data[:len(data)-trailer]
	flip := func(b []byte, i int) []byte {
		c := append([]byte(nil), b...)
		c[i] ^= 1
		return c
	}
	otherSigned, _ := Encode(f, other)
	badCRC := append([]byte(nil), data[:len(data)-trailer]...)
	badCRC = binary.LittleEndian.AppendUint32(badCRC, 0xdeadbeef)
	badCRC = append(badCRC, ed25519.Sign(testKey, badCRC)...)
	// A shape that does not match the data: fc3 declared 4×9, re-signed.
	g := testFile(4)
	g.Tensors[4].Shape = []int{4, 9}
	g.Tensors[4].Values = append(g.Tensors[4].Values, 0, 0, 0, 0)
	mismatch := encodeUnchecked(g)
	for _, tc := range []struct {
		name string
		data []byte
		want error
	}{
		{"empty", nil, ErrTruncated},
		{"truncated", data[:len(data)-1], ErrSignature},
		{"unsigned", body, ErrSignature},
		{"flipped payload bit", flip(data, 40), ErrSignature},
		{"flipped signature bit", flip(data, len(data)-1), ErrSignature},
		{"other key", otherSigned.Data, ErrSignature},
		{"bad checksum", badCRC, ErrChecksum},
		{"bad magic", resign(flip(body, 0)), ErrMagic},
		{"unknown version", resign(flip(body, 4)), ErrVersion},
		{"trailing bytes", resign(append(append([]byte(nil), body...), 0)), ErrCorrupt},
		{"body cut short", resign(body[:len(body)-3]), ErrTruncated},
		{"shape does not chain", mismatch, ErrCorrupt},
	} {
		_, err := Read(tc.data, testPub())
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: error %v, want %v", tc.name, err, tc.want)
		}
	}
	if _, err := Read(data, nil); !errors.Is(err, ErrKey) {
		t.Errorf("nil key: %v", err)
	}
	if _, err := Read(data, testPub()); err != nil {
		t.Fatal(err)
	}
	// Limits apply before allocation.
	if _, err := ReadLimits(data, testPub(), Limits{MaxParams: 100}); !errors.Is(err, ErrTooLarge) {
		t.Errorf("MaxParams: %v", err)
	}
	if _, err := ReadLimits(data, testPub(), Limits{MaxFileBytes: 100}); !errors.Is(err, ErrTooLarge) {
		t.Errorf("MaxFileBytes: %v", err)
	}
}

// encodeUnchecked encodes f without validating it, to build bad files.
func encodeUnchecked(f *File) []byte {
	b := []byte(Magic)
	b = append(b, Version, 0, 0)
	b = binary.AppendUvarint(b, uint64(f.Input))
	b = binary.AppendUvarint(b, uint64(len(f.Tensors)))
	for i := range f.Tensors {
		b, _ = appendTensor(b, &f.Tensors[i])
	}
	b = binary.AppendUvarint(b, uint64(len(f.Layers)))
	for _, l := range f.Layers {
		b = append(b, byte(len(l.Weights)))
		for _, id := range l.Weights {
			b = binary.AppendUvarint(b, uint64(id))
		}
		b = binary.AppendUvarint(b, uint64(l.Bias+1))
		if l.ReLU {
			b = append(b, 1)
		} else {
			b = append(b, 0)
		}
	}
	b = binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
	return append(b, ed25519.Sign(testKey, b)...)
}

func TestEncodeValidates(t *testing.T) {
	f := testFile(5)
	f.Tensors[0].Codes[0] = 7 // outside a codebook of 6
	if _, err := Encode(f, testKey); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("code outside codebook: %v", err)
	}
	f = testFile(5)
	f.Tensors[1].Values[0] = float32(math.NaN())
	if _, err := Encode(f, testKey); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("NaN: %v", err)
	}
	if _, err := Encode(testFile(5), nil); !errors.Is(err, ErrKey) {
		t.Fatalf("no key: %v", err)
	}
}

func TestKeysPEM(t *testing.T) {
	pub, priv, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	// Our PEM matches crypto/x509's, both ways.
	der, _ := x509.MarshalPKIXPublicKey(pub)
	if !bytes.Equal(der, append(append([]byte(nil), pkixPrefix...), pub...)) {
		t.Fatal("PKIX encoding differs from crypto/x509")
	}
	der, _ = x509.MarshalPKCS8PrivateKey(priv)
	if !bytes.Equal(der, append(append([]byte(nil), pkcs8Prefix...), priv.Seed()...)) {
		t.Fatal("PKCS#8 encoding differs from crypto/x509")
	}
	p2, err := ParsePublicKeyPEM(MarshalPublicKeyPEM(pub))
	if err != nil || !p2.Equal(pub) {
		t.Fatal(err)
	}
	k2, err := ParsePrivateKeyPEM(MarshalPrivateKeyPEM(priv))
	if err != nil || !k2.Equal(priv) {
		t.Fatal(err)
	}
	if _, err := ParsePublicKeyPEM(MarshalPrivateKeyPEM(priv)); !errors.Is(err, ErrKey) {
		t.Fatal(err)
	}
	if _, err := ParsePrivateKeyPEM([]byte("garbage")); !errors.Is(err, ErrKey) {
		t.Fatal(err)
	}
}

func FuzzRead(f *testing.F) {
	for seed := uint64(0); seed < 3; seed++ {
		data := encode(f, testFile(seed))
		f.Add(data[:len(data)-trailer])
	}
	for i, c := range convSpecs[:2] {
		net, err := nn.ParseNet(c.spec, c.c, c.h, c.w, c.classes)
		if err != nil {
			f.Fatal(err)
		}
		params := make([]float32, net.NumParams())
		net.Init(params, uint64(i))
		for _, g := range []*File{netFile(f, net, params), compressTensors(netFile(f, net, params))} {
			data := encode(f, g)
			f.Add(data[:len(data)-trailer])
		}
	}
	f.Add([]byte(Magic + "\x01\x00"))
	f.Add([]byte(Magic + "\x02\x00"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, body []byte) {
		// Arbitrary bytes as a whole file: refused by the signature (or
		// accepted if they happen to be a signed file, never a panic).
		Read(body, testPub())
		// The same bytes signed: the parser sees them.
		b := append([]byte(nil), body...)
		b = binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
		b = append(b, ed25519.Sign(testKey, b)...)
		file, err := Read(b, testPub())
		// The unverified reader agrees with Read on signed bytes.
		if u, uerr := ReadUnverified(b, Limits{}); (uerr == nil) != (err == nil) || err == nil && !reflect.DeepEqual(u.File, file) {
			t.Fatalf("ReadUnverified: %v, Read: %v", uerr, err)
		}
		if err != nil {
			return
		}
		// Round trip: a file that parses re-encodes to one that parses to
		// the same model, and compiles and runs.
		again, err := Read(encode(t, file), testPub())
		if err != nil {
			t.Fatalf("re-encoded file refused: %v", err)
		}
		if !reflect.DeepEqual(normalize(file), normalize(again)) {
			t.Fatal("round trip differs")
		}
		net, err := Compile(file)
		if err != nil {
			t.Fatal(err)
		}
		if net.Ops() < 1<<22 {
			net.Predict(make([]float32, net.Classes()), make([]float32, net.InputDim()), net.NewScratch())
		}
	})
}

// normalize clears what a round trip may legitimately change: nothing but
// nil versus empty slices.
func normalize(f *File) *File {
	for i := range f.Tensors {
		t := &f.Tensors[i]
		if t.Sparse && len(t.Index) == 0 {
			t.Index = []int32{}
		}
	}
	if len(f.Meta) == 0 {
		f.Meta = nil
	}
	return f
}

// TestReadUnverified: the unverified reader returns the same file as Read
// and the tensor sizes Encode measured, reads a file signed by another key,
// and refuses a bad checksum and every truncation.
func TestReadUnverified(t *testing.T) {
	f := testFile(3)
	enc, err := Encode(f, testKey)
	if err != nil {
		t.Fatal(err)
	}
	u, err := ReadUnverified(enc.Data, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	want, err := Read(enc.Data, testPub())
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(u.File, want) || !reflect.DeepEqual(u.Tensors, enc.Tensors) || u.Size != len(enc.Data) {
		t.Fatalf("unverified read: %+v, sizes %+v, want %+v", u.File, u.Tensors, enc.Tensors)
	}
	if !bytes.Equal(u.Signature, enc.Data[len(enc.Data)-ed25519.SignatureSize:]) {
		t.Fatal("signature not returned")
	}
	other := bytes.Clone(enc.Data)
	other[len(other)-1] ^= 1
	if _, err := ReadUnverified(other, Limits{}); err != nil {
		t.Fatalf("a bad signature is not checked here: %v", err)
	}
	bad := bytes.Clone(enc.Data)
	bad[10] ^= 1
	if _, err := ReadUnverified(bad, Limits{}); !errors.Is(err, ErrChecksum) {
		t.Fatalf("corrupted body: %v", err)
	}
	for n := range len(enc.Data) {
		if _, err := ReadUnverified(enc.Data[:n], Limits{}); err == nil {
			t.Fatalf("truncated to %d bytes: no error", n)
		}
	}
}
