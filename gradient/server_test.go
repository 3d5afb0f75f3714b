package gradient

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"math"
	"slices"
	"testing"
)

// walk returns the global models of a training run: a random walk.
func walk(n, versions int) [][]float32 {
	w := make([][]float32, versions+1)
	w[0] = genDelta(make([]float32, n), 99, 1)
	for v := 1; v <= versions; v++ {
		d := genDelta(make([]float32, n), uint64(v), 0.01)
		w[v] = make([]float32, n)
		for i := range d {
			w[v][i] = w[v-1][i] + d[i]
		}
	}
	return w
}

func TestServerEncoder(t *testing.T) {
	const n, versions, maxLag = 2000, 12, 4
	for _, s := range []string{"stc", "topk=0.05,bits=4", "topk=0.1", "randk=0.1,bits=8,stochastic=on", "bits=16", "none", "topk=0.02,bits=ternary,ef=on,entropy=zstd"} {
		t.Run(s, func(t *testing.T) {
			w := walk(n, versions)
			srv, err := NewServerEncoder(mustSpec(t, s), w[0], maxLag)
			if err != nil {
				t.Fatal(err)
			}
			// Clients that last synced at each version.
			models := make([][]float32, versions+1)
			for v := 1; v <= versions; v++ {
				prev := slices.Clone(srv.Model())
				st, err := srv.Publish(w[v], uint64(v))
				if err != nil {
					t.Fatal(err)
				}
				if srv.Version() != v || st.Kept == 0 {
					t.Fatalf("version %d, stats %+v", srv.Version(), st)
				}
				// The server residual is what is left of the global model.
				if sp := mustSpec(t, s); sp.Lossless() && !slices.Equal(srv.Model(), w[v]) {
					t.Fatalf("version %d: lossless codec, model differs from global", v)
				}
				// A client one version behind gets exactly one delta.
				up, full := srv.AppendUpdate(nil, v-1)
				m := slices.Clone(prev)
				got, err := ApplyDownload(m, v-1, up, Limits{})
				if err != nil || got != v || full && !mustSpec(t, s).Lossless() {
					t.Fatalf("version %d: apply: %v, version %d, full %v", v, err, got, full)
				}
				if !slices.Equal(m, srv.Model()) {
					t.Fatalf("version %d: client model differs from the server's", v)
				}
				models[v] = m
			}
			models[0] = slices.Clone(w[0])
			// Clients behind by every lag, and one from the future.
			for have := range versions + 2 {
				m := slices.Clone(models[min(have, versions)])
				up, full := srv.AppendUpdate(nil, have)
				wantFull := have < versions-maxLag || have > versions
				if !wantFull && have < versions {
					size := 0
					for _, d := range srv.history[len(srv.history)-(versions-have):] {
						size += len(d)
					}
					wantFull = size >= fullSize(n)
				}
				if full != wantFull {
					t.Errorf("have %d: full = %v, want %v", have, full, wantFull)
				}
				if have == versions && len(up) != 0 {
					t.Errorf("current client gets %d bytes", len(up))
				}
				got, err := ApplyDownload(m, have, up, Limits{})
				if err != nil || got != versions && have != versions+1 {
					t.Fatalf("have %d: %v, version %d", have, err, got)
				}
				if have <= versions && !slices.Equal(m, srv.Model()) {
					t.Fatalf("have %d: model differs from the server's", have)
				}
			}
			full := srv.AppendFull(nil)
			h, err := ReadHeader(full, Limits{})
			if err != nil || !h.Full() || h.Round != versions || h.Size > fullSize(n) {
				t.Fatalf("full model: %+v, %v (fullSize %d)", h, err, fullSize(n))
			}
		})
	}
}

// TestServerResidual checks the STC property: what the server did not send
// is sent later, so that publishing the same global model repeatedly
// brings the clients' model to it.
func TestServerResidual(t *testing.T) {
	const n = 1000
	w := walk(n, 3)
	srv, err := NewServerEncoder(mustSpec(t, "topk=0.1"), w[0], 0)
	if err != nil {
		t.Fatal(err)
	}
	for v := 1; v <= 3; v++ {
		if _, err := srv.Publish(w[v], 0); err != nil {
			t.Fatal(err)
		}
	}
	dist := func() float64 {
		var s float64
		for i, x := range srv.Model() {
			s = max(s, math.Abs(float64(w[3][i]-x)))
		}
		return s
	}
	d0 := dist()
	for range 10 {
		if _, err := srv.Publish(w[3], 0); err != nil {
			t.Fatal(err)
		}
	}
	if d := dist(); d0 == 0 || d > 1e-6*d0 {
		t.Errorf("residual not sent: max distance %g, was %g", d, d0)
	}
	if up, full := srv.AppendUpdate(nil, 5); !full || len(up) == 0 {
		t.Errorf("maxLag 0: a client behind gets a delta")
	}
}

func TestApplyDownloadRefusal(t *testing.T) {
	const n = 500
	w := walk(n, 3)
	srv, _ := NewServerEncoder(mustSpec(t, "topk=0.05,bits=4"), w[0], 5)
	for v := 1; v <= 3; v++ {
		_, _ = srv.Publish(w[v], 0)
	}
	stream, _ := srv.AppendUpdate(nil, 0)
	h1, err := parse(stream, Limits{}.norm(), true)
	if err != nil {
		t.Fatal(err)
	}
	m := slices.Clone(w[0])
	// Wrong base version: refused, model untouched.
	if v, err := ApplyDownload(m, 1, stream, Limits{}); !errors.Is(err, ErrBase) || v != 1 || !slices.Equal(m, w[0]) {
		t.Errorf("wrong base: %v, version %d", err, v)
	}
	// A corrupted second message: the first is applied, then refusal.
	bad := bytes.Clone(stream)
	bad[h1.Size+h1.Size/2+3] ^= 1
	v, err := ApplyDownload(m, 0, bad, Limits{})
	if !errors.Is(err, ErrChecksum) || v != 1 {
		t.Errorf("corrupted second message: %v, version %d", err, v)
	}
	want := slices.Clone(w[0])
	if _, err := ApplyDownload(want, 0, stream[:h1.Size], Limits{}); err != nil || !slices.Equal(m, want) {
		t.Errorf("model after the refusal is not version 1: %v", err)
	}
	if _, err := ApplyDownload(make([]float32, n+1), 0, stream, Limits{}); !errors.Is(err, ErrLength) {
		t.Errorf("wrong model length: %v", err)
	}
	if _, err := ApplyDownload(m, 0, stream[:len(stream)-1], Limits{}); !errors.Is(err, ErrTruncated) {
		t.Errorf("truncated stream: %v", err)
	}
	if _, err := NewServerEncoder(mustSpec(t, "dgc"), w[0], 1); !errors.Is(err, ErrSpec) {
		t.Errorf("momentum on the server: %v", err)
	}
	if _, err := srv.Publish(w[0][:n-1], 0); !errors.Is(err, ErrLength) {
		t.Errorf("short global model: %v", err)
	}
	nan := slices.Clone(w[0])
	nan[3] = float32(math.NaN())
	if _, err := srv.Publish(nan, 0); !errors.Is(err, ErrNonFinite) {
		t.Errorf("NaN global model: %v", err)
	}
}

// TestReadStreamHeader walks a download stream message by message.
func TestReadStreamHeader(t *testing.T) {
	w := walk(300, 3)
	srv, _ := NewServerEncoder(mustSpec(t, "topk=0.1,bits=8"), w[0], 3)
	for v := 1; v <= 3; v++ {
		_, _ = srv.Publish(w[v], 0)
	}
	stream, full := srv.AppendUpdate(nil, 0)
	if full {
		t.Fatal("full model for a client 3 versions behind")
	}
	var bases []int
	for rest := stream; len(rest) > 0; {
		h, err := ReadStreamHeader(rest, Limits{})
		if err != nil {
			t.Fatal(err)
		}
		bases = append(bases, h.Base)
		rest = rest[h.Size:]
	}
	if !slices.Equal(bases, []int{0, 1, 2}) {
		t.Fatalf("bases %v", bases)
	}
	if _, err := ReadHeader(stream, Limits{}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("ReadHeader on a stream of 3: %v", err)
	}
}

// TestServerEncoderRestore restores an encoder from State mid-run: it
// serves the same bytes for every held version, and publishing the same
// models with the same seeds keeps both bit-identical. Damaged states are
// refused, and a smaller maxLag keeps the newest deltas.
func TestServerEncoderRestore(t *testing.T) {
	const n, versions, maxLag = 1500, 9, 4
	sp := mustSpec(t, "topk=0.05,bits=4")
	w := walk(n, versions)
	a, err := NewServerEncoder(sp, w[0], maxLag)
	if err != nil {
		t.Fatal(err)
	}
	for v := 1; v <= 6; v++ {
		if _, err := a.Publish(w[v], uint64(v)); err != nil {
			t.Fatal(err)
		}
	}
	st := a.State()
	b, err := RestoreServerEncoder(sp, st, maxLag)
	if err != nil {
		t.Fatal(err)
	}
	// The state is a copy: publishing on a does not change it.
	for v := 7; v <= versions; v++ {
		for _, s := range []*ServerEncoder{a, b} {
			if _, err := s.Publish(w[v], uint64(v)); err != nil {
				t.Fatal(err)
			}
		}
		if a.Version() != b.Version() || !slices.Equal(a.Model(), b.Model()) {
			t.Fatalf("version %d: restored encoder diverged", v)
		}
		for have := -1; have <= v+1; have++ {
			ua, fa := a.AppendUpdate(nil, have)
			ub, fb := b.AppendUpdate(nil, have)
			size, full := a.UpdateSize(have)
			if !bytes.Equal(ua, ub) || fa != fb || size != len(ua) || full != fa {
				t.Fatalf("version %d, have %d: %d/%v bytes vs %d/%v, UpdateSize %d/%v", v, have, len(ua), fa, len(ub), fb, size, full)
			}
		}
	}
	c, err := RestoreServerEncoder(sp, st, 2)
	if err != nil {
		t.Fatal(err)
	}
	if _, full := c.AppendUpdate(nil, 4); full || c.Version() != 6 {
		t.Fatal("restore with maxLag 2 lost the newest deltas")
	}
	if _, full := c.AppendUpdate(nil, 3); !full {
		t.Fatal("restore with maxLag 2 kept more than 2 deltas")
	}
	damage := map[string]func(s *ServerState){
		"flipped byte":     func(s *ServerState) { s.History[1][len(s.History[1])/2] ^= 1 },
		"truncated delta":  func(s *ServerState) { s.History[2] = s.History[2][:len(s.History[2])-1] },
		"swapped deltas":   func(s *ServerState) { s.History[0], s.History[1] = s.History[1], s.History[0] },
		"wrong version":    func(s *ServerState) { s.Version++ },
		"negative version": func(s *ServerState) { s.Version = -1 },
		"NaN in the model": func(s *ServerState) { s.Model[3] = float32(math.NaN()) },
		"two deltas in one": func(s *ServerState) {
			s.History = [][]byte{s.History[0], s.History[1], append(slices.Clone(s.History[2]), s.History[3]...)}
		},
		"more deltas than versions": func(s *ServerState) { s.Version = 3 },
		"a full model":              func(s *ServerState) { s.History[3] = a.AppendFull(nil) },
	}
	for name, f := range damage {
		s := cloneState(st)
		f(&s)
		if _, err := RestoreServerEncoder(sp, s, maxLag); err == nil {
			t.Errorf("%s: restored", name)
		}
	}
}

func cloneState(st ServerState) ServerState {
	c := ServerState{Version: st.Version, Model: slices.Clone(st.Model)}
	for _, m := range st.History {
		c.History = append(c.History, slices.Clone(m))
	}
	return c
}

func TestModelCRC(t *testing.T) {
	for _, n := range []int{0, 1, 1023, 1024, 1025, 5000} {
		m := make([]float32, n)
		var b []byte
		for i := range m {
			m[i] = float32(i) * 0.37
			b = binary.LittleEndian.AppendUint32(b, math.Float32bits(m[i]))
		}
		if got, want := ModelCRC(m), crc32.Checksum(b, castagnoli); got != want {
			t.Fatalf("n=%d: %08x, want %08x", n, got, want)
		}
	}
	probe := make([]float32, 3000)
	if a := testing.AllocsPerRun(10, func() { ModelCRC(probe) }); a != 0 {
		t.Fatalf("%v allocations", a)
	}
}
