package inspect

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/fedzip/fedzip/checkpoint"
	"github.com/fedzip/fedzip/deliver"
	"github.com/fedzip/fedzip/gradient"
	"github.com/fedzip/fedzip/nn"
)

// describe describes data, checks that its JSON reads back the same, and
// returns it with its table.
func describe(t *testing.T, data []byte, pub ed25519.PublicKey) (*Inspection, string, error) {
	t.Helper()
	in, err := Describe("f", data, pub)
	if in == nil {
		return nil, "", err
	}
	b, jerr := json.Marshal(in)
	var back Inspection
	if jerr != nil || json.Unmarshal(b, &back) != nil || !bytes.Equal(b, must(json.Marshal(&back))) {
		t.Fatalf("JSON does not round-trip: %v\n%s", jerr, b)
	}
	var tb strings.Builder
	if err := in.WriteTable(&tb); err != nil {
		t.Fatal(err)
	}
	return in, tb.String(), err
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}

func randDelta(n int, seed uint64) []float32 {
	r := rand.New(rand.NewPCG(seed, 2))
	d := make([]float32, n)
	for i := range d {
		d[i] = float32(r.NormFloat64()) * 0.01
	}
	return d
}

func encodeUpdate(t testing.TB, spec string, n int) []byte {
	t.Helper()
	sp, err := gradient.ParseSpec(spec)
	if err != nil {
		t.Fatal(err)
	}
	enc, err := gradient.NewEncoder(sp, n)
	if err != nil {
		t.Fatal(err)
	}
	b, _, err := enc.Encode(nil, randDelta(n, 1), 7, 42)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// downloadStream returns what a client 3 versions behind downloads.
func downloadStream(t testing.TB, n int) []byte {
	t.Helper()
	sp, _ := gradient.ParseSpec("topk=0.05,bits=ternary")
	w := randDelta(n, 9)
	srv, err := gradient.NewServerEncoder(sp, w, 5)
	if err != nil {
		t.Fatal(err)
	}
	for v := uint64(1); v <= 3; v++ {
		d := randDelta(n, v)
		for i := range w {
			w[i] += d[i]
		}
		if _, err := srv.Publish(w, v); err != nil {
			t.Fatal(err)
		}
	}
	b, _ := srv.AppendUpdate(nil, 0)
	return b
}

func modelFile(t testing.TB) []byte {
	t.Helper()
	m, _ := nn.ParseArch("mlp:8", 20, 4)
	p := make([]float32, m.NumParams())
	m.Init(p, 1)
	ck := checkpoint.New(m, p)
	ck.Header.Round, ck.Header.Version, ck.Header.Extra = 12, 12, map[string]string{"seed": "1"}
	b, err := checkpoint.Marshal(ck)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// deviceFile returns a signed device model with a sparse and a dense
// tensor, and its public key.
func deviceFile(t testing.TB) ([]byte, ed25519.PublicKey) {
	t.Helper()
	pub, key, err := deliver.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	f := &deliver.File{Meta: map[string]string{"model": "test"}, Input: 4,
		Tensors: []deliver.Tensor{
			{Name: "fc1.weight", Shape: []int{3, 4}, Sparse: true, Index: []int32{0, 5, 11}, Encoding: deliver.Float32, Values: []float32{1, -2, 0.5}},
			{Name: "fc1.bias", Shape: []int{3}, Encoding: deliver.Float32, Values: []float32{0.1, 0.2, 0.3}},
		},
		Layers: []deliver.Layer{{Weights: []int{0}, Bias: 1}}}
	e, err := deliver.Encode(f, key)
	if err != nil {
		t.Fatal(err)
	}
	return e.Data, pub
}

func TestInspectUpdates(t *testing.T) {
	const n = 5000
	for _, tc := range []struct {
		spec, selection, format string
		bits, k                 int
		indices                 bool
	}{
		{"stc", "topk", "codes", 2, 50, true},
		{"topk=0.1,bits=8,bucket=128", "topk", "codes", 8, 500, true},
		{"randk=0.02,bits=16", "randk", "float16", 16, 100, true},
		{"bits=4,stochastic=on", "dense", "codes", 4, n, false},
		{"none", "dense", "float32", 32, n, false},
	} {
		t.Run(tc.spec, func(t *testing.T) {
			data := encodeUpdate(t, tc.spec, n)
			in, table, err := describe(t, data, nil)
			if err != nil {
				t.Fatal(err)
			}
			if in.Kind != "encoded update" || in.Bytes != len(data) || len(in.Update) != 1 {
				t.Fatalf("%+v", in)
			}
			u := in.Update[0]
			if u.N != n || u.K != tc.k || u.Selection != tc.selection || u.Format != tc.format || u.Bits != tc.bits ||
				u.Round != 7 || u.WireVersion != gradient.Version || !u.CRCOK || u.Size != len(data) {
				t.Fatalf("message %+v", u)
			}
			sections := 0
			for _, s := range u.Sections {
				sections += s.Bytes
			}
			if sections >= len(data) || (u.IndexBits > 0) != tc.indices || u.ValueBits <= 0 {
				t.Fatalf("sections of %d bytes in %d, index bits %v, value bits %v", sections, len(data), u.IndexBits, u.ValueBits)
			}
			if got := (u.IndexBits + u.ValueBits) * float64(u.K) / 8; int(got+0.5) != sections {
				t.Fatalf("bits per kept coordinate give %v bytes, sections %d", got, sections)
			}
			// The table says the same.
			if !strings.Contains(table, "crc-32c") || !strings.Contains(table, " ok") || !strings.Contains(table, tc.selection) {
				t.Fatalf("table:\n%s", table)
			}
		})
	}
	t.Run("run ID", func(t *testing.T) {
		enc, err := gradient.NewEncoder(gradient.Spec{}, n)
		if err != nil {
			t.Fatal(err)
		}
		run := gradient.RunID{0xab, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 0xcd}
		enc.SetRun(run)
		data, _, err := enc.Encode(nil, randDelta(n, 1), 7, 42)
		if err != nil {
			t.Fatal(err)
		}
		in, table, err := describe(t, data, nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(in.Update) != 1 || in.Update[0].Run != run.String() || in.Update[0].Round != 7 {
			t.Fatalf("%+v", in.Update)
		}
		if !strings.Contains(table, run.String()) {
			t.Fatalf("table:\n%s", table)
		}
	})
	t.Run("download stream", func(t *testing.T) {
		in, _, err := describe(t, downloadStream(t, n), nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(in.Update) != 3 || !strings.HasPrefix(in.Kind, "download stream") {
			t.Fatalf("%+v", in)
		}
		for i, u := range in.Update {
			if u.Base != i || u.Round != i+1 || u.K != n/20 || !u.CRCOK {
				t.Fatalf("message %d: %+v", i, u)
			}
		}
	})
	t.Run("checksum mismatch", func(t *testing.T) {
		data := encodeUpdate(t, "topk=0.1,bits=8", n)
		data[len(data)/2] ^= 0x10
		in, _, err := describe(t, data, nil)
		if err == nil || in == nil || len(in.Update) != 1 || in.Update[0].CRCOK || in.Update[0].K != 500 || !strings.Contains(err.Error(), "checksum") {
			t.Fatalf("%+v, %v", in, err)
		}
	})
}

func TestInspectModelAndDevice(t *testing.T) {
	in, _, err := describe(t, modelFile(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	if m := in.Model; m == nil || m.Params != 20*8+8+8*4+4 || m.Version != 12 || !m.CRCOK || len(m.Tensors) != 4 || m.Extra["seed"] != "1" {
		t.Fatalf("model %+v", in.Model)
	}

	data, pub := deviceFile(t)
	other, _ := deviceFile(t)
	for _, tc := range []struct {
		pub   ed25519.PublicKey
		fails bool
		sig   string
	}{
		{nil, false, "present, not verified"},
		{pub, false, "verified"},
		{other, true, "DOES NOT VERIFY"},
	} {
		in, table, err := describe(t, data, tc.pub)
		if (err != nil) != tc.fails || in == nil {
			t.Fatalf("%s: %v", tc.sig, err)
		}
		d := in.Device
		if d == nil || !strings.HasPrefix(d.Signature, tc.sig) || len(d.Tensors) != 2 || d.Params != 15 || d.Input != 4 || d.Classes != 3 {
			t.Fatalf("%s: %+v", tc.sig, d)
		}
		if w := d.Tensors[0]; !w.Sparse || w.Stored != 3 || w.Index == 0 || w.Values != 12 || w.Total <= w.Index+w.Values {
			t.Fatalf("tensor %+v", w)
		}
		if !strings.Contains(table, "fc1.weight") || !strings.Contains(table, "sparse 3 of 12") {
			t.Fatalf("table:\n%s", table)
		}
	}
}

// TestInspectGarbage feeds truncated, corrupted and random files of every
// kind: Describe returns an error for every truncation and never panics.
func TestInspectGarbage(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 5))
	for name, data := range garbageSeeds(t) {
		check := func(what string, b []byte, mustFail bool) {
			in, err := Describe(name, b, nil)
			if mustFail && err == nil {
				t.Fatalf("%s %s: no error", name, what)
			}
			if in == nil && err == nil {
				t.Fatalf("%s %s: neither a description nor an error", name, what)
			}
			if in != nil {
				if err := in.WriteTable(io.Discard); err != nil {
					t.Fatal(err)
				}
			}
		}
		step := max(1, len(data)/300)
		for n := 0; n < len(data); n += step {
			// A download stream cut between messages is a shorter stream.
			check("truncated", data[:n], name != "stream")
		}
		for range 200 {
			b := bytes.Clone(data)
			for range 1 + r.IntN(4) {
				b[r.IntN(len(b))] = byte(r.Uint32())
			}
			check("corrupted", b, false)
		}
		for range 50 {
			b := make([]byte, r.IntN(200))
			for i := range b {
				b[i] = byte(r.Uint32())
			}
			check("random", append(bytes.Clone(data[:8]), b...), false)
		}
	}
	for _, b := range [][]byte{nil, []byte("FZ"), []byte("PK\x03\x04zip"), []byte(gradient.Magic), []byte(checkpoint.Magic), []byte(deliver.Magic)} {
		if in, err := Describe("x", b, nil); err == nil || in != nil {
			t.Errorf("%q: %+v, %v", b, in, err)
		}
	}
	if _, err := Describe("x", []byte("PK\x03\x04"), nil); !errors.Is(err, ErrUnknown) {
		t.Errorf("a zip file: %v, want ErrUnknown", err)
	}
}

func garbageSeeds(t testing.TB) map[string][]byte {
	dev, _ := deviceFile(t)
	return map[string][]byte{
		"update": encodeUpdate(t, "stc", 3000),
		"dense":  encodeUpdate(t, "none", 50),
		"stream": downloadStream(t, 800),
		"model":  modelFile(t),
		"device": dev,
	}
}

// FuzzDescribe: Describe never panics, and a description it returns can
// be printed.
// TestInspectManyMessages: a file of one-parameter updates back to back
// (26 bytes each: 40 million in a 1 GiB file) is described up to
// MaxMessages, then refused, not described into gigabytes.
func TestInspectManyMessages(t *testing.T) {
	one := encodeUpdate(t, "none", 1)
	data := bytes.Repeat(one, MaxMessages+3)
	in, err := Describe("many", data, nil)
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("more than %d messages", MaxMessages)) {
		t.Fatalf("%d messages: %v, want an error about more than %d", MaxMessages+3, err, MaxMessages)
	}
	if in == nil || len(in.Update) != MaxMessages || in.Error == "" {
		t.Fatalf("described %v", in != nil && len(in.Update) > 0)
	}
	if in, err := Describe("enough", bytes.Repeat(one, MaxMessages), nil); err != nil || len(in.Update) != MaxMessages {
		t.Fatalf("%d messages: %v", MaxMessages, err)
	}
}

func FuzzDescribe(f *testing.F) {
	for _, b := range garbageSeeds(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		in, err := Describe("fuzz", data, nil)
		if in == nil && err == nil {
			t.Fatal("neither a description nor an error")
		}
		if in != nil {
			in.WriteTable(io.Discard)
			if _, err := json.Marshal(in); err != nil {
				t.Fatal(err)
			}
		}
	})
}
