package dashboard

import (
	"encoding/json"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func get(t *testing.T, h http.Handler, target, auth string) (int, string) {
	t.Helper()
	req := httptest.NewRequest("GET", target, nil)
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	b, _ := io.ReadAll(rec.Body)
	return rec.Code, string(b)
}

func TestFeedServesRoundsInOrderAndSince(t *testing.T) {
	f := NewFeed("test run", "simulate")
	f.AddRound(Round{Round: 2, UploadBytes: 20, Selected: 3, Reported: 3})
	f.AddRound(Round{Round: 1, UploadBytes: 10, TestAccuracy: Float(0.5), TrainLoss: Float(math.NaN()), Ratio: math.Inf(1)})
	f.AddRound(Round{Round: 3, UploadBytes: 30})
	f.AddRound(Round{Round: 2, UploadBytes: 21}) // replaced
	f.Update(func(s *State) { s.TotalRounds, s.Round, s.Phase = 5, 3, "running" })
	h := Handler(f, "")

	code, body := get(t, h, "/api/state", "")
	if code != 200 {
		t.Fatalf("status %d: %s", code, body)
	}
	var s State
	if err := json.Unmarshal([]byte(body), &s); err != nil {
		t.Fatal(err)
	}
	if len(s.Rounds) != 3 || s.RoundsTotal != 3 || s.Rounds[0].Round != 1 || s.Rounds[1].UploadBytes != 21 || s.Rounds[2].Round != 3 {
		t.Fatalf("rounds %+v", s.Rounds)
	}
	if s.Rounds[0].TrainLoss != nil || s.Rounds[0].Ratio != 0 || s.Rounds[0].TestAccuracy == nil || *s.Rounds[0].TestAccuracy != 0.5 {
		t.Fatalf("non-finite values not dropped or finite ones lost: %+v", s.Rounds[0])
	}
	_, body = get(t, h, "/api/state?since=2", "")
	s = State{}
	json.Unmarshal([]byte(body), &s)
	if len(s.Rounds) != 1 || s.Rounds[0].Round != 3 || s.RoundsTotal != 3 {
		t.Fatalf("since=2: rounds %+v total %d", s.Rounds, s.RoundsTotal)
	}
}

func TestHandlerServesEmbeddedPageAndGuardsTheFeed(t *testing.T) {
	h := Handler(NewFeed("x", "coordinator"), "s3cret")
	for _, p := range []string{"/", "/app.js", "/style.css"} {
		code, body := get(t, h, p, "")
		if code != 200 || body == "" {
			t.Fatalf("%s: status %d", p, code)
		}
		if strings.Contains(body, "http://") && !strings.Contains(body, "http://www.w3.org/2000/svg") {
			t.Errorf("%s refers to an outside URL; the page must work offline", p)
		}
	}
	if code, _ := get(t, h, "/api/state", ""); code != http.StatusUnauthorized {
		t.Fatalf("feed without token: status %d", code)
	}
	// Issue 12, finding 10: a token in a data URL is not accepted.
	if code, _ := get(t, h, "/api/state?token=s3cret", ""); code != http.StatusUnauthorized {
		t.Fatalf("feed with token in query: status %d", code)
	}
	if code, _ := get(t, h, "/api/state", "Bearer s3cret"); code != 200 {
		t.Fatalf("feed with bearer token: status %d", code)
	}
	// A browser opens the page once as /?token=: it gets a session cookie
	// and a redirect without the token, and the cookie opens the feed.
	req := httptest.NewRequest("GET", "/?token=s3cret", nil)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusSeeOther || rec.Header().Get("Location") != "/" || len(rec.Result().Cookies()) != 1 {
		t.Fatalf("login: status %d, Location %q, cookies %v", rec.Code, rec.Header().Get("Location"), rec.Result().Cookies())
	}
	req = httptest.NewRequest("GET", "/api/state", nil)
	req.AddCookie(rec.Result().Cookies()[0])
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != 200 {
		t.Fatalf("feed with the session cookie: status %d", rec.Code)
	}
	req = httptest.NewRequest("POST", "/api/state?token=s3cret", nil)
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusMethodNotAllowed {
		t.Fatalf("POST: status %d", rec.Code)
	}
}
