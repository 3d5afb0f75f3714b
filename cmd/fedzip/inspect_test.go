package main

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fedzip/fedzip/checkpoint"
	"github.com/fedzip/fedzip/deliver"
	"github.com/fedzip/fedzip/gradient"
	"github.com/fedzip/fedzip/nn"
)

func randDelta(n int, seed uint64) []float32 {
	r := rand.New(rand.NewPCG(seed, 2))
	d := make([]float32, n)
	for i := range d {
		d[i] = float32(r.NormFloat64()) * 0.01
	}
	return d
}

func encodeUpdate(t *testing.T, spec string, n int) []byte {
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
func downloadStream(t *testing.T, n int) []byte {
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

func modelFile(t *testing.T) []byte {
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
// tensor, and the PEM public key.
func deviceFile(t *testing.T) ([]byte, []byte) {
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
	return e.Data, deliver.MarshalPublicKeyPEM(pub)
}

func writeBytes(t *testing.T, dir, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestInspectUpdates(t *testing.T) {
	dir := t.TempDir()
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
			path := writeBytes(t, dir, "u.bin", data)
			code, stdout, stderr := runCmd("inspect", path, "-o", "json")
			if code != exitOK {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			var in inspection
			if err := json.Unmarshal([]byte(stdout), &in); err != nil {
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
			code, stdout, _ = runCmd("inspect", "-o", "table", path)
			if code != exitOK || !strings.Contains(stdout, "crc-32c") || !strings.Contains(stdout, " ok") || !strings.Contains(stdout, tc.selection) {
				t.Fatalf("table: exit %d\n%s", code, stdout)
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
		path := writeBytes(t, dir, "run.bin", data)
		code, stdout, stderr := runCmd("inspect", "-o", "json", path)
		var in inspection
		if err := json.Unmarshal([]byte(stdout), &in); err != nil || code != exitOK {
			t.Fatalf("exit %d, %v: %s", code, err, stderr)
		}
		if len(in.Update) != 1 || in.Update[0].Run != run.String() || in.Update[0].Round != 7 {
			t.Fatalf("%+v", in.Update)
		}
		code, stdout, _ = runCmd("inspect", "-o", "table", path)
		if code != exitOK || !strings.Contains(stdout, run.String()) {
			t.Fatalf("table: exit %d\n%s", code, stdout)
		}
	})
	t.Run("download stream", func(t *testing.T) {
		path := writeBytes(t, dir, "d.bin", downloadStream(t, n))
		code, stdout, stderr := runCmd("inspect", "-o", "json", path)
		if code != exitOK {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		var in inspection
		if err := json.Unmarshal([]byte(stdout), &in); err != nil {
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
		path := writeBytes(t, dir, "bad.bin", data)
		code, stdout, stderr := runCmd("inspect", "-o", "json", path)
		var in inspection
		if err := json.Unmarshal([]byte(stdout), &in); err != nil {
			t.Fatal(err)
		}
		if code != exitError || len(in.Update) != 1 || in.Update[0].CRCOK || in.Update[0].K != 500 || !strings.Contains(stderr, "checksum") {
			t.Fatalf("exit %d, %+v, %s", code, in, stderr)
		}
	})
}

func TestInspectModelAndDevice(t *testing.T) {
	dir := t.TempDir()
	model := writeBytes(t, dir, "m.fzmodel", modelFile(t))
	code, stdout, stderr := runCmd("inspect", model, "-o", "json")
	var in inspection
	if err := json.Unmarshal([]byte(stdout), &in); err != nil || code != exitOK {
		t.Fatalf("exit %d: %v %s", code, err, stderr)
	}
	if m := in.Model; m == nil || m.Params != 20*8+8+8*4+4 || m.Version != 12 || !m.CRCOK || len(m.Tensors) != 4 || m.Extra["seed"] != "1" {
		t.Fatalf("model %+v", in.Model)
	}

	data, pubPEM := deviceFile(t)
	fzm := writeBytes(t, dir, "d.fzm", data)
	pub := writeBytes(t, dir, "d.pub.pem", pubPEM)
	_, otherPEM := deviceFile(t)
	other := writeBytes(t, dir, "o.pub.pem", otherPEM)
	for _, tc := range []struct {
		args []string
		code int
		sig  string
	}{
		{nil, exitOK, "present, not verified"},
		{[]string{"--pubkey", pub}, exitOK, "verified"},
		{[]string{"--pubkey", other}, exitError, "DOES NOT VERIFY"},
	} {
		code, stdout, stderr := runCmd(append([]string{"inspect", fzm, "-o", "json"}, tc.args...)...)
		var in inspection
		if err := json.Unmarshal([]byte(stdout), &in); err != nil || code != tc.code {
			t.Fatalf("%v: exit %d: %v %s", tc.args, code, err, stderr)
		}
		d := in.Device
		if d == nil || !strings.HasPrefix(d.Signature, tc.sig) || len(d.Tensors) != 2 || d.Params != 15 || d.Input != 4 || d.Classes != 3 {
			t.Fatalf("%v: %+v", tc.args, d)
		}
		if w := d.Tensors[0]; !w.Sparse || w.Stored != 3 || w.Index == 0 || w.Values != 12 || w.Total <= w.Index+w.Values {
			t.Fatalf("tensor %+v", w)
		}
	}
	code, stdout, _ = runCmd("inspect", fzm)
	if code != exitOK || !strings.Contains(stdout, "fc1.weight") || !strings.Contains(stdout, "sparse 3 of 12") {
		t.Fatalf("table: exit %d\n%s", code, stdout)
	}
}

// TestInspectGarbage feeds truncated, corrupted and random files of every
// kind: inspect exits 1 with one line of error for every truncation and
// never panics.
func TestInspectGarbage(t *testing.T) {
	dir := t.TempDir()
	dev, _ := deviceFile(t)
	files := map[string][]byte{
		"update": encodeUpdate(t, "stc", 3000),
		"dense":  encodeUpdate(t, "none", 50),
		"stream": downloadStream(t, 800),
		"model":  modelFile(t),
		"device": dev,
	}
	r := rand.New(rand.NewPCG(5, 5))
	for name, data := range files {
		path := filepath.Join(dir, name)
		check := func(what string, b []byte, mustFail bool) {
			if err := os.WriteFile(path, b, 0o644); err != nil {
				t.Fatal(err)
			}
			code, _, stderr := runCmd("inspect", path, "-o", "json")
			if code != exitOK && code != exitError {
				t.Fatalf("%s %s: exit %d", name, what, code)
			}
			if mustFail && (code != exitError || strings.Count(strings.TrimRight(stderr, "\n"), "\n") != 0 || stderr == "") {
				t.Fatalf("%s %s: exit %d, stderr %q", name, what, code, stderr)
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
		path := writeBytes(t, dir, "x", b)
		if code, _, stderr := runCmd("inspect", path); code != exitError || stderr == "" {
			t.Errorf("%q: exit %d, %q", b, code, stderr)
		}
	}
	if code, _, _ := runCmd("inspect", filepath.Join(dir, "missing")); code != exitError {
		t.Errorf("missing file: exit %d", code)
	}
	if code, _, _ := runCmd("inspect", "a", "b"); code != exitUsage {
		t.Errorf("two files: exit %d", code)
	}
	if code, _, _ := runCmd("inspect", "-o", "yaml", "a"); code != exitUsage {
		t.Errorf("-o yaml: exit %d", code)
	}
}
