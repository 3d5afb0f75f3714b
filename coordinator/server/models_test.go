package server

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestModelServer: 404 before a model is delivered, then the file with its
// version and ETag, 304 for a client that holds it, 405 for writes, 404
// elsewhere.
func TestModelServer(t *testing.T) {
	ms := &modelServer{}
	do := func(method, path, etag string) *httptest.ResponseRecorder {
		r := httptest.NewRequest(method, path, nil)
		if etag != "" {
			r.Header.Set("If-None-Match", etag)
		}
		w := httptest.NewRecorder()
		ms.ServeHTTP(w, r)
		return w
	}
	if w := do("GET", ModelPath, ""); w.Code != http.StatusNotFound {
		t.Fatalf("before delivery: %d", w.Code)
	}
	ms.set([]byte("signed model"), 7)
	w := do("GET", ModelPath, "")
	etag := w.Header().Get("ETag")
	if w.Code != 200 || w.Body.String() != "signed model" || w.Header().Get("X-Fedzip-Model-Version") != "7" || len(etag) != 66 {
		t.Fatalf("GET: %d %q %v", w.Code, w.Body.String(), w.Header())
	}
	if w := do("GET", ModelPath, etag); w.Code != http.StatusNotModified || w.Body.Len() != 0 {
		t.Fatalf("If-None-Match: %d", w.Code)
	}
	if w := do("HEAD", ModelPath, ""); w.Code != 200 || w.Body.Len() != 0 {
		t.Fatalf("HEAD: %d, %d bytes", w.Code, w.Body.Len())
	}
	if w := do("PUT", ModelPath, ""); w.Code != http.StatusMethodNotAllowed {
		t.Fatalf("PUT: %d", w.Code)
	}
	if w := do("GET", "/v1/other", ""); w.Code != http.StatusNotFound {
		t.Fatalf("other path: %d", w.Code)
	}
}
