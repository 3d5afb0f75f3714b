// Package httpguard serves fedzip's read-only HTTP endpoints (metrics,
// dashboard): GET and HEAD only, optionally behind a bearer token, on a
// listener the caller chooses (bind it to 127.0.0.1 to keep it local).
//
// A token travels in the Authorization header only, never in a URL, where
// access logs, proxies and browser history would keep it. The one
// exception is a browser's first load of the dashboard: Login takes
// "?token=TOKEN" once, answers with a session cookie (HttpOnly,
// SameSite=Strict) and redirects to the same URL without the token;
// ReadOnlySession then accepts that cookie on the data requests.
package httpguard

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"
)

// SessionCookie is the name of the cookie Login sets.
const SessionCookie = "fedzip_session"

// ReadOnly wraps h: it answers 405 to any method but GET and HEAD and,
// when token is not empty, 401 to a request without "Authorization:
// Bearer TOKEN" (compared in constant time). A "?token=" in the URL is not
// a credential: it is refused like no token at all.
func ReadOnly(token string, h http.Handler) http.Handler {
	return guard(token, false, h)
}

// ReadOnlySession is ReadOnly that also accepts the session cookie Login
// sets for token: for the data requests of a page opened in a browser.
func ReadOnlySession(token string, h http.Handler) http.Handler {
	return guard(token, true, h)
}

func guard(token string, cookie bool, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed: this endpoint is read-only", http.StatusMethodNotAllowed)
			return
		}
		if token != "" && !Authorized(r, token) && !(cookie && hasSession(r, token)) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="fedzip"`)
			http.Error(w, "unauthorized: pass the token as 'Authorization: Bearer TOKEN'", http.StatusUnauthorized)
			return
		}
		w.Header().Set("X-Content-Type-Options", "nosniff")
		h.ServeHTTP(w, r)
	})
}

// Authorized reports whether r carries "Authorization: Bearer TOKEN".
func Authorized(r *http.Request, token string) bool {
	a := r.Header.Get("Authorization")
	if !strings.HasPrefix(a, "Bearer ") {
		return false
	}
	got := strings.TrimPrefix(a, "Bearer ")
	return got != "" && token != "" && subtle.ConstantTimeCompare([]byte(got), []byte(token)) == 1
}

// sessionValue is the cookie Login sets for token: an HMAC of a fixed
// label under the token, so that the cookie is not the token itself (it
// opens the dashboard's data, not /metrics).
func sessionValue(token string) string {
	m := hmac.New(sha256.New, []byte(token))
	m.Write([]byte("fedzip dashboard session v1"))
	return hex.EncodeToString(m.Sum(nil))
}

func hasSession(r *http.Request, token string) bool {
	c, err := r.Cookie(SessionCookie)
	return err == nil && token != "" && subtle.ConstantTimeCompare([]byte(c.Value), []byte(sessionValue(token))) == 1
}

// Login wraps a page handler h for browsers. A GET or HEAD whose URL has
// "?token=TOKEN" gets, if the token is right, a session cookie
// (SessionCookie: HttpOnly, SameSite=Strict, Secure over TLS) and a 303
// redirect to the same path without the token, and 401 if it is wrong;
// every other request goes to h. With an empty token Login only drops a
// "?token=" from the URL the same way.
func Login(token string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if !q.Has("token") || r.Method != http.MethodGet && r.Method != http.MethodHead {
			h.ServeHTTP(w, r)
			return
		}
		got := q.Get("token")
		if token != "" {
			if subtle.ConstantTimeCompare([]byte(got), []byte(token)) != 1 {
				http.Error(w, "unauthorized: wrong token", http.StatusUnauthorized)
				return
			}
			http.SetCookie(w, &http.Cookie{Name: SessionCookie, Value: sessionValue(token), Path: "/", HttpOnly: true,
				SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
		}
		q.Del("token")
		// A path of "//host" would be a redirect to another site.
		path := r.URL.Path
		if !strings.HasPrefix(path, "/") || strings.HasPrefix(path, "//") || strings.HasPrefix(path, "/\\") {
			path = "/"
		}
		if len(q) > 0 {
			path += "?" + q.Encode()
		}
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("Referrer-Policy", "no-referrer")
		http.Redirect(w, r, path, http.StatusSeeOther)
	})
}

// Served is an HTTP server that Serve started.
type Served struct {
	// Addr is the address it listens on (useful with port 0), and URL
	// the address as a browser would use it (BrowserURL).
	Addr net.Addr
	URL  string
	srv  *http.Server
	done chan struct{}
}

// Close stops the server and waits for its goroutine to end.
func (s *Served) Close() error {
	err := s.srv.Close()
	<-s.done
	return err
}

// Serve serves h on addr in a new goroutine, with timeouts and header
// bounds, until Close; what names the endpoint in errors and logs. It
// warns on log when addr is reachable from other machines and token (the
// endpoint's token, "" for none) is empty.
func Serve(what, addr, token string, h http.Handler, log *slog.Logger) (*Served, error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	s := &Served{Addr: lis.Addr(), URL: BrowserURL(lis.Addr()), done: make(chan struct{}),
		srv: &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second,
			WriteTimeout: 60 * time.Second, IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 64 << 10}}
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error(what, "err", err)
		}
	}()
	if !Loopback(addr) && token == "" {
		log.Warn(what+" is reachable from other machines without a token: bind it to 127.0.0.1 or set its token flag", "addr", addr)
	}
	return s, nil
}

// BrowserURL is "http://" and a listener's address as a browser would
// use it: a wildcard host becomes 127.0.0.1.
func BrowserURL(a net.Addr) string {
	host, port, err := net.SplitHostPort(a.String())
	if err != nil {
		return "http://" + a.String()
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port)
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
