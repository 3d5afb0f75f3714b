package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/fedzip/fedzip/dashboard"
	"github.com/fedzip/fedzip/internal/syncbuf"
)

// chromium is Debian's headless browser (apt-get install chromium).
const chromium = "/usr/bin/chromium"

// TestDashboardInChromium runs 'fedzip simulate --ui 127.0.0.1:0' for 4
// rounds, loads its dashboard in headless Chromium, and checks in the DOM
// that the JavaScript drew every chart with one point per round (SVG
// paths with data-points) and the round count. It is skipped where
// Chromium is not installed.
func TestDashboardInChromium(t *testing.T) {
	if _, err := os.Stat(chromium); err != nil {
		t.Skipf("%s not installed (apt-get install -y chromium)", chromium)
	}
	const rounds = 4
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout, stderr syncbuf.Buffer
	code := make(chan int, 1)
	go func() {
		code <- run(ctx, []string{"simulate", "--dataset", "synthetic", "--clients", "20", "--model", "mlp:", "--fraction", "0.5",
			"--rounds", strconv.Itoa(rounds), "--deliver", "", "--quiet", "--ui", "127.0.0.1:0", "--ui-token", "t0k"}, &stdout, &stderr)
	}()
	urlRE := regexp.MustCompile(`dashboard at (http://127\.0\.0\.1:\d+)/`)
	var base string
	deadline := time.Now().Add(60 * time.Second)
	for base == "" {
		if m := urlRE.FindStringSubmatch(stderr.String()); m != nil {
			base = m[1]
			break
		}
		select {
		case c := <-code:
			t.Fatalf("simulate exited with %d before serving the dashboard: %s", c, stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no dashboard URL on stderr: %q", stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Wait for the run to finish: the dashboard stays up after it.
	for {
		req, _ := http.NewRequest("GET", base+"/api/state", nil)
		req.Header.Set("Authorization", "Bearer t0k")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var s dashboard.State
		err = json.NewDecoder(res.Body).Decode(&s)
		res.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if s.Done {
			if len(s.Rounds) != rounds {
				t.Fatalf("feed has %d rounds, want %d", len(s.Rounds), rounds)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the run did not finish: %+v", s)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, u := range []string{base + "/api/state", base + "/api/state?token=t0k"} {
		if res, err := http.Get(u); err != nil || res.StatusCode != http.StatusUnauthorized {
			t.Fatalf("%s: %v %v", u, res.Status, err)
		}
	}

	dom := dumpDOM(t, base+"/?token=t0k")
	for _, id := range []string{"chart-accuracy", "chart-loss", "chart-bytes", "chart-ratio", "chart-clients"} {
		m := regexp.MustCompile(`<svg id="` + id + `"[^>]*data-points="(\d+)" data-rounds="(\d+)"`).FindStringSubmatch(dom)
		if m == nil {
			t.Errorf("%s: no drawn chart in the DOM", id)
			continue
		}
		if points, _ := strconv.Atoi(m[1]); points < rounds {
			t.Errorf("%s: %s points, want at least %d", id, m[1], rounds)
		}
		if m[2] != strconv.Itoa(rounds) {
			t.Errorf("%s: last round %s, want %d", id, m[2], rounds)
		}
	}
	paths := regexp.MustCompile(`<path [^>]*data-series="([a-z ]+)" data-points="(\d+)"`).FindAllStringSubmatch(dom, -1)
	series := map[string]string{}
	for _, p := range paths {
		series[p[1]] = p[2]
	}
	for _, s := range []string{"test accuracy", "test loss", "train loss", "total", "upload", "download", "total ratio", "upload ratio"} {
		if series[s] != strconv.Itoa(rounds) {
			t.Errorf("series %q has %q points, want %d (series: %v)", s, series[s], rounds, series)
		}
	}
	if n := len(regexp.MustCompile(`class="bar-ok" data-round=`).FindAllString(dom, -1)); n != rounds {
		t.Errorf("participation chart has %d bars, want %d", n, rounds)
	}
	if !regexp.MustCompile(`finished: ` + strconv.Itoa(rounds) + ` rounds`).MatchString(dom) {
		t.Errorf("progress line does not say the run finished")
	}

	cancel()
	if c := <-code; c != exitOK {
		t.Fatalf("simulate exit %d: %s", c, stderr.String())
	}
}

// dumpDOM loads url in headless Chromium and returns the DOM after its
// scripts ran (virtual time lets the first poll complete).
func dumpDOM(t *testing.T, url string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync", "--user-data-dir="+t.TempDir(),
		"--virtual-time-budget=10000", "--dump-dom", url)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium: %v\n%s", err, errb.String())
	}
	return out.String()
}
