package client

import (
	"errors"
	"math"
	"slices"
	"testing"

	"github.com/fedzip/fedzip/gradient"
)

// TestApplyDownload applies a server's deltas as a client does, and
// refuses, with an error and without touching what it holds, every
// download that does not fit: another base, version or kind, damaged or
// mis-sized bytes.
func TestApplyDownload(t *testing.T) {
	const n = 500
	spec, err := gradient.ParseSpec("topk=0.1,bits=8")
	if err != nil {
		t.Fatal(err)
	}
	init := make([]float32, n)
	for i := range init {
		init[i] = float32(math.Sin(float64(i)))
	}
	srv, err := gradient.NewServerEncoder(spec, init, 5)
	if err != nil {
		t.Fatal(err)
	}
	global := slices.Clone(init)
	for v := 1; v <= 3; v++ {
		for i := range global {
			global[i] += float32(math.Cos(float64(i*v))) * 0.01
		}
		if _, err := srv.Publish(global, uint64(v)); err != nil {
			t.Fatal(err)
		}
		if v == 1 {
			init = slices.Clone(srv.Model()) // the client holds version 1
		}
	}
	held := slices.Clone(init)
	delta, _ := srv.AppendUpdate(nil, 1)
	whole := make([]byte, 0, 4*n)
	for _, x := range srv.Model() {
		whole = appendF32(whole, x)
	}
	maxBytes := 4 * n
	crc := gradient.ModelCRC(srv.Model())
	hd := Download{Kind: DownloadDelta, Version: 3, BaseVersion: 1, CRC: &crc}
	m, err := ApplyDownload(held, 1, 3, with(hd, delta), n, maxBytes)
	if err != nil || !slices.Equal(m, srv.Model()) {
		t.Fatalf("delta: %v, bit-identical %v", err, slices.Equal(m, srv.Model()))
	}
	hf := Download{Kind: DownloadFull, Version: 3}
	if m, err := ApplyDownload(nil, 0, 3, with(hf, whole), n, maxBytes); err != nil || !slices.Equal(m, srv.Model()) {
		t.Fatalf("whole model: %v", err)
	}
	// A client holding the wrong model of version 1 (say a stale file)
	// rebuilds a wrong model that the deltas alone cannot tell.
	wrongHeld := slices.Clone(held)
	wrongHeld[7] += 0.5
	flipped := slices.Clone(delta)
	flipped[len(flipped)/2] ^= 0x10
	nan := slices.Clone(whole)
	copy(nan[8:], appendF32(nil, float32(math.NaN())))
	for name, tc := range map[string]struct {
		h          Download
		body       []byte
		have, want uint64
		held       []float32
	}{
		"delta from another base":      {Download{Kind: DownloadDelta, Version: 3, BaseVersion: 2}, delta, 1, 3, held},
		"delta while holding nothing":  {hd, delta, 0, 3, nil},
		"delta for a model of another": {hd, delta, 1, 3, held[:n-1]},
		"another version":              {hd, delta, 1, 4, held},
		"header and deltas disagree":   {Download{Kind: DownloadDelta, Version: 2, BaseVersion: 1}, delta, 1, 2, held},
		"flipped byte":                 {hd, flipped, 1, 3, held},
		"wrong held model":             {hd, delta, 1, 3, wrongHeld},
		"truncated delta":              {hd, delta[:len(delta)-3], 1, 3, held},
		"garbage":                      {hd, []byte("not a delta"), 1, 3, held},
		"unspecified kind":             {Download{Version: 3}, whole, 1, 3, held},
		"whole model, wrong size":      {hf, whole[:4*n-4], 0, 3, nil},
		"whole model with NaN":         {hf, nan, 0, 3, nil},
		"version beyond 2^32":          {Download{Kind: DownloadDelta, Version: 1 << 33, BaseVersion: 1 << 32}, delta, 1 << 32, 1 << 33, held},
	} {
		before := slices.Clone(tc.held)
		if _, err := ApplyDownload(tc.held, tc.have, tc.want, with(tc.h, tc.body), n, maxBytes); !errors.Is(err, ErrDownload) {
			t.Errorf("%s: %v, want ErrDownload", name, err)
		}
		if !slices.Equal(before, tc.held) {
			t.Errorf("%s: the held model changed", name)
		}
	}
}

func appendF32(b []byte, x float32) []byte {
	u := math.Float32bits(x)
	return append(b, byte(u), byte(u>>8), byte(u>>16), byte(u>>24))
}

// FuzzApplyDownload feeds arbitrary bytes and headers to the client's
// download decoder: it returns an error or a finite model of the right
// size, never panics, and never changes what the client holds.
func FuzzApplyDownload(f *testing.F) {
	const n = 64
	spec, _ := gradient.ParseSpec("topk=0.25,bits=4")
	held := make([]float32, n)
	for i := range held {
		held[i] = float32(i) / n
	}
	srv, _ := gradient.NewServerEncoder(spec, held, 3)
	next := slices.Clone(held)
	for i := range next {
		next[i] += float32(i%5) * 0.1
	}
	srv.Publish(next, 1)
	srv.Publish(held, 2)
	d, _ := srv.AppendUpdate(nil, 0)
	f.Add(uint8(2), uint64(2), uint64(0), d)
	d, _ = srv.AppendUpdate(nil, 1)
	f.Add(uint8(2), uint64(2), uint64(1), d)
	f.Add(uint8(1), uint64(2), uint64(0), make([]byte, 4*n))
	f.Fuzz(func(t *testing.T, kind uint8, version, base uint64, body []byte) {
		d := Download{Kind: DownloadKind(kind % 4), Version: version, BaseVersion: base, Body: body}
		before := slices.Clone(held)
		m, err := ApplyDownload(held, 1, version, d, n, 4*n)
		if !slices.Equal(before, held) {
			t.Fatal("the held model changed")
		}
		if err != nil {
			return
		}
		if len(m) != n {
			t.Fatalf("%d parameters", len(m))
		}
		for _, x := range m {
			if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
				t.Fatal("non-finite model accepted")
			}
		}
	})
}

// with returns d holding body.
func with(d Download, body []byte) Download {
	d.Body = body
	return d
}

// TestApplySync applies lattice syncs to a replica: from the version it
// holds and from version 0, to the server's model bit for bit; a whole
// model is parsed and leaves the replica alone; a wrong version, base or
// checksum is refused with ErrDownload.
func TestApplySync(t *testing.T) {
	init := make([]float32, 300)
	for i := range init {
		init[i] = float32(math.Sin(float64(i))) / 10
	}
	spec, err := gradient.ParseSpec("lattice")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := gradient.NewServerEncoder(spec, init, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.SetTensors([]int{200, 100}); err != nil {
		t.Fatal(err)
	}
	global := slices.Clone(init)
	publish := func(v int) {
		for i := range global {
			global[i] += float32(math.Cos(float64(i*v))) / 20
		}
		if _, err := srv.Publish(global, uint64(v)); err != nil {
			t.Fatal(err)
		}
	}
	rep, err := gradient.NewReplica(init)
	if err != nil {
		t.Fatal(err)
	}
	sync := func(have int) Download {
		p, full := srv.AppendUpdate(nil, have)
		if full {
			t.Fatalf("a whole model to a client at version %d", have)
		}
		h, err := gradient.ReadHeader(p, gradient.Limits{})
		if err != nil {
			t.Fatal(err)
		}
		crc := gradient.ModelCRC(srv.Model())
		return Download{Kind: DownloadDelta, Version: uint64(srv.Version()), BaseVersion: uint64(h.Base), CRC: &crc, Body: p}
	}
	publish(1)
	m, err := ApplySync(rep, 1, sync(0), len(init), 1<<20)
	if err != nil || !slices.Equal(m, srv.Model()) || rep.Version() != 1 {
		t.Fatalf("from version 0: %v, equal %v", err, slices.Equal(m, srv.Model()))
	}
	publish(2)
	publish(3) // version 1 is no longer kept: a sync from version 0
	d := sync(1)
	if d.BaseVersion != 0 {
		t.Fatalf("a sync from version %d, want 0", d.BaseVersion)
	}
	bad := d
	bad.Version = 4
	if _, err := ApplySync(rep, 4, bad, len(init), 1<<20); !errors.Is(err, ErrDownload) {
		t.Fatalf("another version: %v", err)
	}
	bad = d
	crc := *d.CRC ^ 1
	bad.CRC = &crc
	if _, err := ApplySync(rep, 3, bad, len(init), 1<<20); !errors.Is(err, ErrDownload) {
		t.Fatalf("another checksum: %v", err)
	}
	if rep, err = gradient.NewReplica(init); err != nil {
		t.Fatal(err)
	}
	if m, err := ApplySync(rep, 3, d, len(init), 1<<20); err != nil || !slices.Equal(m, srv.Model()) {
		t.Fatalf("from version 0 again: %v", err)
	}
	publish(4)
	bad = sync(3)
	bad.BaseVersion = 2
	if _, err := ApplySync(rep, 4, bad, len(init), 1<<20); !errors.Is(err, ErrDownload) {
		t.Fatalf("from a version the replica does not hold: %v", err)
	}
	whole := Download{Kind: DownloadFull, Version: 4, Body: gradient.AppendFloat32s(nil, srv.Model())}
	if m, err := ApplySync(rep, 4, whole, len(init), 1<<20); err != nil || !slices.Equal(m, srv.Model()) || rep.Version() != 3 {
		t.Fatalf("a whole model: %v, replica at version %d", err, rep.Version())
	}
}

// FuzzApplySync applies arbitrary downloads to a replica: never a panic,
// and a model returned is finite and of the right size.
func FuzzApplySync(f *testing.F) {
	const n = 64
	spec, _ := gradient.ParseSpec("topk=0.25,bits=lattice")
	init := make([]float32, n)
	for i := range init {
		init[i] = float32(i) / n
	}
	srv, _ := gradient.NewServerEncoder(spec, init, 1)
	srv.SetTensors([]int{48, 16})
	next := slices.Clone(init)
	for v := uint64(1); v <= 3; v++ {
		for i := range next {
			next[i] += float32((i+int(v))%5) * 0.1
		}
		srv.Publish(next, v)
	}
	for _, have := range []int{0, 2} {
		d, _ := srv.AppendUpdate(nil, have)
		f.Add(uint8(2), uint64(3), uint64(have), d)
	}
	f.Add(uint8(1), uint64(3), uint64(0), make([]byte, 4*n))
	f.Fuzz(func(t *testing.T, kind uint8, version, base uint64, body []byte) {
		rep, err := gradient.NewReplica(init)
		if err != nil {
			t.Fatal(err)
		}
		d := Download{Kind: DownloadKind(kind % 4), Version: version, BaseVersion: base, Body: body}
		m, err := ApplySync(rep, version, d, n, 4*n)
		if err != nil {
			return
		}
		if len(m) != n {
			t.Fatalf("%d parameters", len(m))
		}
		for _, x := range m {
			if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
				t.Fatal("non-finite model accepted")
			}
		}
	})
}
