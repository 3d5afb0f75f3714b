package cliconfig

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func writeFile(t *testing.T, name, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

type testFlags struct {
	rounds           int
	codec, join, dir string
	insecure         bool
	deadline         time.Duration
	lr, wd           float64
}

func testFlagSet(f *testFlags) *flag.FlagSet {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.IntVar(&f.rounds, "rounds", 100, "")
	fs.StringVar(&f.codec, "upload-codec", "none", "")
	fs.StringVar(&f.join, "join", "", "")
	fs.StringVar(&f.dir, "data-dir", "d", "")
	fs.BoolVar(&f.insecure, "insecure", false, "")
	fs.DurationVar(&f.deadline, "deadline", time.Minute, "")
	fs.Float64Var(&f.lr, "lr", 0.1, "")
	fs.Float64Var(&f.wd, "weight-decay", 0, "")
	AddFlag(fs)
	return fs
}

// TestConfigPrecedence checks default < file < environment < flag, flag
// by flag, and the source each one reports (the usual convention: what the
// user typed wins; FEDZIP_ROUNDS=2 used to beat --rounds 1).
func TestConfigPrecedence(t *testing.T) {
	file := writeFile(t, "c.yaml", "rounds: 20\nupload-codec: stcm\njoin: [a:1, b:2]\ninsecure: true\ndeadline: 30s\nweight-decay: 0.5\n")
	env := map[string]string{"FEDZIP_UPLOAD_CODEC": "topk1", "FEDZIP_LR": "0.5", "FEDZIP_DATA_DIR": "", "FEDZIP_WEIGHT_DECAY": "0.01"}
	var f testFlags
	fs := testFlagSet(&f)
	if err := fs.Parse([]string{"--config", file, "--rounds", "7", "--upload-codec", "qsgd8", "--lr", "0.2"}); err != nil {
		t.Fatal(err)
	}
	src, err := Apply(fs, func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		t.Fatal(err)
	}
	want := testFlags{rounds: 7, codec: "qsgd8", join: "a:1,b:2", dir: "d", insecure: true, deadline: 30 * time.Second, lr: 0.2, wd: 0.01}
	if f != want {
		t.Fatalf("flags %+v, want %+v", f, want)
	}
	for name, s := range map[string]string{
		"rounds":       "flag",                    // the flag beats the file
		"upload-codec": "flag",                    // the flag beats the environment and the file
		"lr":           "flag",                    // the flag beats the environment
		"weight-decay": "env FEDZIP_WEIGHT_DECAY", // the environment beats the file
		"join":         "file " + file + ":3",     // a list, joined
		"insecure":     "file " + file + ":4",     // only in the file
		"data-dir":     "",                        // an empty variable is unset
		"deadline":     "file " + file + ":5",     // durations as written
	} {
		if src[name] != s {
			t.Errorf("source of %s: %q, want %q", name, src[name], s)
		}
	}
}

// TestConfigBadFile: every mistake in a file is refused with the file,
// the line and the key.
func TestConfigBadFile(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		want       []string
	}{
		{"unknown key", "rounds: 3\nupload_codec: stcm\n", []string{":2:", `unknown key "upload_codec"`, `did you mean "upload-codec"`}},
		{"far unknown key", "rounds: 3\n\nfrobnicate: 1\n", []string{":3:", `unknown key "frobnicate"`, "fedzip demo -h"}},
		{"bad int", "rounds: many\n", []string{":1:", `key "rounds"`, `"many"`}},
		{"bad bool", "lr: 0.1\ninsecure: yes please\n", []string{":2:", `key "insecure"`}},
		{"bad duration", "deadline: 5 minutes\n", []string{":1:", `key "deadline"`}},
		{"repeated key", "rounds: 1\nlr: 0.1\nrounds: 2\n", []string{":3:", `key "rounds" repeats the one on line 1`}},
		{"mapping value", "join:\n  a: 1\n", []string{":1:", `key "join"`, "not a mapping"}},
		{"not a mapping", "- rounds\n- 3\n", []string{":1:", "want a mapping"}},
		{"syntax", "rounds: 3\nlr: [0.1\n", []string{"c.yaml", "line"}},
		{"config inside config", "config: other.yaml\n", []string{":1:", `unknown key "config"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			file := writeFile(t, "c.yaml", tc.body)
			var f testFlags
			fs := testFlagSet(&f)
			fs.Parse([]string{"--config", file})
			_, err := Apply(fs, func(string) (string, bool) { return "", false })
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
	var f testFlags
	fs := testFlagSet(&f)
	fs.Parse(nil)
	_, err := Apply(fs, func(k string) (string, bool) { return "lots", k == "FEDZIP_ROUNDS" })
	if err == nil || !strings.Contains(err.Error(), "$FEDZIP_ROUNDS") || !strings.Contains(err.Error(), "--rounds") {
		t.Fatalf("bad environment value: %v", err)
	}
	fs = testFlagSet(&f)
	fs.Parse([]string{"--config", filepath.Join(t.TempDir(), "missing.yaml")})
	if _, err := Apply(fs, func(string) (string, bool) { return "", false }); err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Fatalf("missing file: %v", err)
	}
	empty := writeFile(t, "empty.yaml", "# nothing set\n")
	fs = testFlagSet(&f)
	fs.Parse([]string{"--config", empty})
	if _, err := Apply(fs, func(string) (string, bool) { return "", false }); err != nil || f.rounds != 100 {
		t.Fatalf("empty file: %v, rounds %d", err, f.rounds)
	}
}

func TestNearest(t *testing.T) {
	var f testFlags
	fs := testFlagSet(&f)
	fs.Bool("o", false, "")
	for name, want := range map[string]string{
		"round": "rounds", "-round": "rounds", "upload_codec": "upload-codec", "UPLOAD-CODEC": "upload-codec",
		"dataa-dir": "data-dir", "frobnicate": "", "x": "", "config": "", "lrr": "lr",
	} {
		if got := Nearest(fs, name); got != want {
			t.Errorf("Nearest(%q) = %q, want %q", name, got, want)
		}
	}
}
