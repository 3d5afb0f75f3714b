package httpguard

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"go.uber.org/goleak"
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
		// Issue 12, finding 10: a token in the URL ends up in access
		// logs; it is not a credential.
		{"query token refused", "t0k", "GET", "/metrics?token=t0k", "", 401},
		{"bearer token", "t0k", "GET", "/", "Bearer t0k", 200},
		{"wrong bearer, right query", "t0k", "GET", "/?token=t0k", "Bearer x", 401},
		{"empty bearer", "t0k", "GET", "/", "Bearer ", 401},
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

// TestLogin: a browser's first load with ?token= gets a session cookie
// (HttpOnly, SameSite=Strict) and a redirect to the URL without the
// token; the cookie then opens ReadOnlySession but not ReadOnly (the
// metrics endpoint takes the bearer token only).
func TestLogin(t *testing.T) {
	page := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "page") })
	data := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "data") })
	mux := http.NewServeMux()
	mux.Handle("/", ReadOnly("", Login("t0k", page)))
	mux.Handle("/api/state", ReadOnlySession("t0k", data))
	mux.Handle("/metrics", ReadOnly("t0k", data))
	do := func(target string, c *http.Cookie) *httptest.ResponseRecorder {
		req := httptest.NewRequest("GET", target, nil)
		if c != nil {
			req.AddCookie(c)
		}
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, req)
		return rec
	}
	rec := do("/?token=t0k&since=3", nil)
	if rec.Code != http.StatusSeeOther || rec.Header().Get("Location") != "/?since=3" {
		t.Fatalf("login: %d, Location %q", rec.Code, rec.Header().Get("Location"))
	}
	cookies := rec.Result().Cookies()
	if len(cookies) != 1 || cookies[0].Name != SessionCookie || !cookies[0].HttpOnly || cookies[0].SameSite != http.SameSiteStrictMode || cookies[0].Value == "t0k" {
		t.Fatalf("cookies %+v", cookies)
	}
	session := &http.Cookie{Name: SessionCookie, Value: cookies[0].Value}
	if rec := do("/api/state", session); rec.Code != 200 || rec.Body.String() != "data" {
		t.Fatalf("data with the session cookie: %d", rec.Code)
	}
	for _, tc := range []struct {
		target string
		cookie *http.Cookie
		want   int
	}{
		{"/api/state", nil, 401},
		{"/api/state?token=t0k", nil, 401},
		{"/api/state", &http.Cookie{Name: SessionCookie, Value: "t0k"}, 401},
		{"/api/state", &http.Cookie{Name: SessionCookie, Value: ""}, 401},
		{"/metrics", session, 401},
		{"/?token=wrong", nil, 401},
		{"/", nil, 200},
	} {
		if rec := do(tc.target, tc.cookie); rec.Code != tc.want {
			t.Errorf("%s with %v: %d, want %d", tc.target, tc.cookie, rec.Code, tc.want)
		}
	}
	// No open redirect through the path.
	if rec := do("//evil.example/?token=t0k", nil); rec.Code == http.StatusSeeOther && rec.Header().Get("Location") != "/" {
		t.Fatalf("redirect to %q", rec.Header().Get("Location"))
	}
}

// TestServe attacks a served endpoint as an outsider would: bound to every
// interface without a token, Serve says so (a warning naming the
// endpoint); on 127.0.0.1 or with a token it does not. A second server on
// the same port is refused. Close ends the serving goroutine, so the port
// is free again at once, and a request after Close fails.
func TestServe(t *testing.T) {
	defer goleak.VerifyNone(t)
	for _, tc := range []struct {
		addr, token string
		warn        bool
	}{
		{"0.0.0.0:0", "", true},
		{"0.0.0.0:0", "tok", false},
		{"127.0.0.1:0", "", false},
	} {
		var logs bytes.Buffer
		log := slog.New(slog.NewTextHandler(&logs, nil))
		s, err := Serve("dashboard", tc.addr, tc.token, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }), log)
		if err != nil {
			t.Fatal(err)
		}
		if warned := strings.Contains(logs.String(), "dashboard is reachable from other machines without a token"); warned != tc.warn {
			t.Errorf("%s token %q: warned %v, want %v: %s", tc.addr, tc.token, warned, tc.warn, logs.String())
		}
		if !strings.HasPrefix(s.URL, "http://127.0.0.1:") {
			t.Errorf("URL %q: want one a browser on this machine opens", s.URL)
		}
		resp, err := http.Get(s.URL)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if _, err := Serve("again", s.Addr.String(), "", http.NotFoundHandler(), log); err == nil {
			t.Errorf("a second server on %v was started", s.Addr)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := http.Get(s.URL); err == nil {
			t.Errorf("%s still answers after Close", s.URL)
		}
		lis, err := net.Listen("tcp", s.Addr.String())
		if err != nil {
			t.Fatalf("port not free after Close: %v", err)
		}
		lis.Close()
	}
	http.DefaultClient.CloseIdleConnections()
}
