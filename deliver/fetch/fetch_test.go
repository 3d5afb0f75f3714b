package fetch

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/fedzip/fedzip/deliver"
)

// signedModel returns a tiny model file signed by key, with version in its
// signed metadata (none if version < 0).
func signedModel(t testing.TB, key ed25519.PrivateKey, version int64) []byte {
	t.Helper()
	f := &deliver.File{Meta: map[string]string{"source": "test"}, Input: 2,
		Tensors: []deliver.Tensor{{Name: "w", Shape: []int{1, 2}, Values: []float32{0.5, -1}}},
		Layers:  []deliver.Layer{{Weights: []int{0}, Bias: -1}}}
	if version >= 0 {
		f.Meta[deliver.MetaModelVersion] = strconv.FormatInt(version, 10)
	}
	e, err := deliver.Encode(f, key)
	if err != nil {
		t.Fatal(err)
	}
	return e.Data
}

// server is an HTTPS model server (httptest, TLS) whose handler the test
// sets.
func server(t *testing.T, h http.HandlerFunc) (*httptest.Server, Options) {
	t.Helper()
	srv := httptest.NewTLSServer(h)
	t.Cleanup(srv.Close)
	return srv, Options{Client: srv.Client()}
}

// TestFetchTakesTheSignedVersion (issue 12, finding 9): the server's
// X-Fedzip-Model-Version header says 999, the signed file says 2: the
// version is 2.
func TestFetchTakesTheSignedVersion(t *testing.T) {
	pub, key, _ := deliver.GenerateKey()
	file := signedModel(t, key, 2)
	srv, opt := server(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Fedzip-Model-Version", "999")
		w.Write(file)
	})
	opt.PublicKey = pub
	m, err := Fetch(context.Background(), srv.URL+"/v1/model", opt)
	if err != nil {
		t.Fatal(err)
	}
	if !m.Versioned || m.Version != 2 || !bytes.Equal(m.Signed, file) {
		t.Fatalf("version %d (versioned %v), %d bytes", m.Version, m.Versioned, len(m.Signed))
	}
	// Another key's file, or a modified one, is refused.
	other, _, _ := deliver.GenerateKey()
	opt.PublicKey = other
	if _, err := Fetch(context.Background(), srv.URL, opt); !errors.Is(err, deliver.ErrSignature) {
		t.Fatalf("another key: %v, want ErrSignature", err)
	}
}

// TestFetchRefusesRollback (issue 12, finding 9): holding version 5, a
// server that serves an older signed model (3), or one with no signed
// version, is refused unless AllowDowngrade; the same or a newer version
// is accepted.
func TestFetchRefusesRollback(t *testing.T) {
	pub, key, _ := deliver.GenerateKey()
	var serve []byte
	srv, opt := server(t, func(w http.ResponseWriter, r *http.Request) { w.Write(serve) })
	opt.PublicKey = pub
	out := filepath.Join(t.TempDir(), "model.fzm")
	if err := os.WriteFile(out, signedModel(t, key, 5), 0o644); err != nil {
		t.Fatal(err)
	}
	held, err := ReadHeld(out, pub, 0)
	if err != nil || held == nil || held.Version != 5 || !held.Versioned {
		t.Fatalf("ReadHeld: %+v, %v", held, err)
	}
	opt.Held = held
	for _, tc := range []struct {
		version int64
		allow   bool
		ok      bool
	}{
		{3, false, false}, {-1, false, false}, {0, false, false},
		{3, true, true}, {-1, true, true},
		{5, false, true}, {6, false, true},
	} {
		serve = signedModel(t, key, tc.version)
		opt.AllowDowngrade = tc.allow
		m, err := Fetch(context.Background(), srv.URL, opt)
		if tc.ok != (err == nil) || !tc.ok && !errors.Is(err, ErrDowngrade) {
			t.Errorf("version %d, allow %v: %v", tc.version, tc.allow, err)
		}
		if err == nil && tc.version >= 0 && m.Version != uint64(tc.version) {
			t.Errorf("version %d: fetched version %d", tc.version, m.Version)
		}
	}
	// Nothing held: anything signed goes.
	missing, err := ReadHeld(filepath.Join(t.TempDir(), "none.fzm"), pub, 0)
	if err != nil || missing != nil {
		t.Fatalf("ReadHeld of a missing file: %+v, %v", missing, err)
	}
	// A held file that does not verify cannot be the reference.
	os.WriteFile(out, []byte("not a model"), 0o644)
	if _, err := ReadHeld(out, pub, 0); !errors.Is(err, ErrHeld) {
		t.Fatalf("ReadHeld of garbage: %v, want ErrHeld", err)
	}
}

// TestFetchRefusesByContentLength (issue 12, finding 9): a response that
// announces 300 MB is refused from its Content-Length, before the body is
// read: the server sends nothing after the headers and holds the
// connection, so a client that read the body would hang. A chunked
// response without Content-Length is cut at the limit.
func TestFetchRefusesByContentLength(t *testing.T) {
	pub, key, _ := deliver.GenerateKey()
	release := make(chan struct{})
	srv, opt := server(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "300000000")
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
	defer close(release)
	opt.PublicKey = pub
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := Fetch(ctx, srv.URL, opt); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Content-Length 300 MB: %v, want ErrTooLarge", err)
	}

	file := signedModel(t, key, 1)
	chunked, copt := server(t, func(w http.ResponseWriter, r *http.Request) {
		for range 40 {
			w.Write(bytes.Repeat([]byte{'x'}, 32<<10))
			w.(http.Flusher).Flush()
		}
	})
	copt.PublicKey, copt.MaxBytes = pub, 1<<20
	if _, err := Fetch(ctx, chunked.URL, copt); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("chunked 1.25 MiB with a 1 MiB limit: %v, want ErrTooLarge", err)
	}
	// Within the limit, a chunked response is read whole.
	small, sopt := server(t, func(w http.ResponseWriter, r *http.Request) {
		w.Write(file[:10])
		w.(http.Flusher).Flush()
		w.Write(file[10:])
	})
	sopt.PublicKey, sopt.MaxBytes = pub, 1<<20
	if m, err := Fetch(ctx, small.URL, sopt); err != nil || m.Version != 1 {
		t.Fatalf("chunked small model: %v", err)
	}
	// A status other than 200 is refused.
	nf, nopt := server(t, http.NotFound)
	nopt.PublicKey = pub
	if _, err := Fetch(ctx, nf.URL, nopt); !errors.Is(err, ErrStatus) {
		t.Fatalf("404: %v, want ErrStatus", err)
	}
}

// FuzzModelVersion: any metadata value gives a version that prints back
// to the same string, or an error wrapping deliver.ErrCorrupt; never a
// panic.
func FuzzModelVersion(f *testing.F) {
	for _, s := range []string{"0", "2", "18446744073709551615", "18446744073709551616", "007", "-1", "+1", " 1", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		file := &deliver.File{Meta: map[string]string{deliver.MetaModelVersion: s}}
		v, ok, err := file.ModelVersion()
		if err != nil {
			if !errors.Is(err, deliver.ErrCorrupt) || ok {
				t.Fatalf("%q: %v, ok %v", s, err, ok)
			}
			return
		}
		if !ok || strconv.FormatUint(v, 10) != s {
			t.Fatalf("%q parsed as %d", s, v)
		}
	})
}
