package main

import (
	"bytes"
	"context"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fedzip/fedzip/deliver"
)

// TestFetchModelTrustsOnlySignedData (issue 12, finding 9) runs
// "fedzip fetch-model" against an HTTPS server (httptest, TLS) that lies:
// its version header says 999 while the signed file says 2; it then serves
// an older signed model; then it announces 300 MB and sends nothing. The
// command prints the signed version, refuses the rollback unless
// --allow-downgrade, and refuses the 300 MB response at once.
func TestFetchModelTrustsOnlySignedData(t *testing.T) {
	dir := t.TempDir()
	pub, key, err := deliver.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	pubPath := filepath.Join(dir, "key.pub.pem")
	os.WriteFile(pubPath, deliver.MarshalPublicKeyPEM(pub), 0o644)
	model := func(version int) []byte {
		f := &deliver.File{Meta: map[string]string{deliver.MetaModelVersion: strconv.Itoa(version)}, Input: 2,
			Tensors: []deliver.Tensor{{Name: "w", Shape: []int{1, 2}, Values: []float32{0.5, -1}}},
			Layers:  []deliver.Layer{{Weights: []int{0}, Bias: -1}}}
		e, err := deliver.Encode(f, key)
		if err != nil {
			t.Fatal(err)
		}
		return e.Data
	}
	var (
		serve atomic.Pointer[[]byte]
		huge  atomic.Bool
	)
	set := func(b []byte) { serve.Store(&b) }
	release := make(chan struct{})
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Fedzip-Model-Version", "999")
		if huge.Load() {
			w.Header().Set("Content-Length", "300000000")
			w.WriteHeader(http.StatusOK)
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
			case <-release:
			}
			return
		}
		w.Write(*serve.Load())
	}))
	defer srv.Close()
	defer close(release)
	ca := filepath.Join(dir, "ca.pem")
	os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644)
	out := filepath.Join(dir, "device.fzm")
	fetch := func(extra ...string) (int, string, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		var o, e bytes.Buffer
		code := run(ctx, append([]string{"fetch-model", "--url", srv.URL + "/v1/model", "--ca", ca, "--pubkey", pubPath, "--out", out}, extra...), &o, &e)
		return code, o.String(), e.String()
	}

	set(model(2))
	code, stdout, stderr := fetch()
	// "version 999", not "999": the output names the temporary directory,
	// whose random name can hold 999 (CI failed once on
	// /tmp/TestFetchModelTrustsOnlySignedData3401307999).
	if code != exitOK || !strings.Contains(stdout, "version 2 ") || strings.Contains(stdout, "version 999") {
		t.Fatalf("exit %d: %s%s: want the signed version 2, not the header's 999", code, stdout, stderr)
	}
	set(model(1))
	if code, stdout, stderr := fetch(); code == exitOK || !strings.Contains(stderr, "older") {
		t.Fatalf("an older signed model: exit %d: %s%s", code, stdout, stderr)
	}
	if b, _ := os.ReadFile(out); !bytes.Equal(b, model(2)) {
		t.Fatal("the refused model overwrote the one held")
	}
	if code, stdout, stderr := fetch("--allow-downgrade"); code != exitOK || !strings.Contains(stdout, "version 1 ") {
		t.Fatalf("--allow-downgrade: exit %d: %s%s", code, stdout, stderr)
	}
	huge.Store(true)
	start := time.Now()
	code, stdout, stderr = fetch()
	if code == exitOK || !strings.Contains(stderr, "Content-Length 300000000") {
		t.Fatalf("300 MB announced: exit %d after %v: %s%s", code, time.Since(start), stdout, stderr)
	}
	t.Logf("300 MB announced: refused after %v: %s", time.Since(start), strings.TrimSpace(stderr))
}
