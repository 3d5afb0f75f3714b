// Package httpguard serves fedzip's read-only HTTP endpoints (metrics,
// dashboard): GET and HEAD only, optionally behind a bearer token, on a
// listener the caller chooses (bind it to 127.0.0.1 to keep it local).
package httpguard

import (
	"crypto/subtle"
	"errors"
	"net"
	"net/http"
	"strings"
	"time"
)

// ReadOnly wraps h: it answers 405 to any method but GET and HEAD and,
// when token is not empty, 401 to a request that carries neither
// "Authorization: Bearer TOKEN" nor "?token=TOKEN" (compared in constant
// time).
func ReadOnly(token string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed: this endpoint is read-only", http.StatusMethodNotAllowed)
			return
		}
		if token != "" && !Authorized(r, token) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="fedzip"`)
			http.Error(w, "unauthorized: pass the token as 'Authorization: Bearer TOKEN' or ?token=TOKEN", http.StatusUnauthorized)
			return
		}
		w.Header().Set("X-Content-Type-Options", "nosniff")
		h.ServeHTTP(w, r)
	})
}

// Authorized reports whether r carries token.
func Authorized(r *http.Request, token string) bool {
	got := r.URL.Query().Get("token")
	if a := r.Header.Get("Authorization"); strings.HasPrefix(a, "Bearer ") {
		got = strings.TrimPrefix(a, "Bearer ")
	}
	return got != "" && subtle.ConstantTimeCompare([]byte(got), []byte(token)) == 1
}

// Listen serves h on addr in a new goroutine and returns the server and the
// address it listens on (useful with port 0). Close or Shutdown the server
// to stop it.
func Listen(addr string, h http.Handler) (*http.Server, net.Addr, error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second,
		WriteTimeout: 60 * time.Second, IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 64 << 10}
	go func() {
		if err := srv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			lis.Close()
		}
	}()
	return srv, lis.Addr(), nil
}

// Loopback reports whether addr ("host:port") binds only to a loopback
// address: 127.0.0.0/8, ::1 or localhost. An empty host (all interfaces)
// is not loopback.
func Loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
