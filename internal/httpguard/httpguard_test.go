package httpguard

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestReadOnly(t *testing.T) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "data") })
	for _, tc := range []struct {
		name, token, method, target, auth string
		want                              int
	}{
		{"open get", "", "GET", "/", "", 200},
		{"open head", "", "HEAD", "/", "", 200},
		{"post refused", "", "POST", "/", "", 405},
		{"delete refused even with token", "t0k", "DELETE", "/?token=t0k", "", 405},
		{"no token", "t0k", "GET", "/", "", 401},
		{"wrong token", "t0k", "GET", "/?token=nope", "", 401},
		{"query token", "t0k", "GET", "/?token=t0k", "", 200},
		{"bearer token", "t0k", "GET", "/", "Bearer t0k", 200},
		{"wrong bearer beats right query", "t0k", "GET", "/?token=t0k", "Bearer x", 401},
		{"basic auth is not a token", "t0k", "GET", "/", "Basic t0k", 401},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest(tc.method, tc.target, strings.NewReader(""))
			if tc.auth != "" {
				req.Header.Set("Authorization", tc.auth)
			}
			rec := httptest.NewRecorder()
			ReadOnly(tc.token, ok).ServeHTTP(rec, req)
			if rec.Code != tc.want {
				t.Fatalf("status %d, want %d", rec.Code, tc.want)
			}
			if tc.want == 200 && tc.method == "GET" && rec.Body.String() != "data" {
				t.Fatalf("body %q", rec.Body.String())
			}
		})
	}
}

func TestLoopback(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:9090": true, "localhost:1": true, "[::1]:80": true, "127.1.2.3:0": true,
		":9090": false, "0.0.0.0:9090": false, "10.0.0.1:9090": false, "nonsense": false,
	} {
		if got := Loopback(addr); got != want {
			t.Errorf("Loopback(%q) = %v, want %v", addr, got, want)
		}
	}
}
