package cliconfig

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// yamlBomb is a billion-laughs document over the flags' own keys: each
// anchor a list of nine aliases of the one before; expanded, 9⁹ values.
// The keys past the first are not flags (an unknown key is refused too,
// but only once the document is parsed: the parse must stay cheap).
func yamlBomb() string {
	var b strings.Builder
	b.WriteString("join: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n")
	b.WriteString("data-dir: &a1 [*a0, *a0, *a0, *a0, *a0, *a0, *a0, *a0, *a0]\n")
	for i := 2; i < 10; i++ {
		fmt.Fprintf(&b, "k%d: &a%d [", i, i)
		for j := 0; j < 9; j++ {
			if j > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "*a%d", i-1)
		}
		b.WriteString("]\n")
	}
	b.WriteString("upload-codec: *a9\n")
	return b.String()
}

// TestConfigYAMLBomb: a config file of aliases that expand to a billion
// values is refused at once, not expanded.
func TestConfigYAMLBomb(t *testing.T) {
	for _, body := range []string{
		yamlBomb(),
		"join: &a [x, *a]\n", // an alias inside its own anchor
		"x: &a {k: v}\njoin: *a\n",
		"join: *undefined\n",
		strings.Repeat("[", 20000) + strings.Repeat("]", 20000),
	} {
		var f testFlags
		fs := testFlagSet(&f)
		p := writeFile(t, "bomb.yaml", body)
		if err := fs.Parse([]string{"--config", p}); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		_, err := Apply(fs, func(string) (string, bool) { return "", false })
		if err == nil {
			t.Errorf("%.40q...: accepted, join %d bytes", body, len(f.join))
		}
		t.Logf("%.30q...: %v", body, err)
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("%.40q...: %v to refuse", body, d)
		}
	}
}

// FuzzConfigFile: whatever bytes a config file holds, Apply returns a
// value or an error, never panics, and sets only flags of the set.
func FuzzConfigFile(f *testing.F) {
	f.Add([]byte("rounds: 20\nupload-codec: stcm\njoin: [a:1, b:2]\n"))
	f.Add([]byte("rounds: 1\nrounds: 2\n"))
	f.Add([]byte(yamlBomb()))
	f.Add([]byte("- a\n- b\n"))
	f.Add([]byte("deadline: &d 5s\nlr: *d\n"))
	f.Add([]byte("{rounds: [1, [2]]}"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > MaxFile+1 {
			return
		}
		p := filepath.Join(t.TempDir(), "c.yaml")
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		var tf testFlags
		fs := testFlagSet(&tf)
		if err := fs.Parse([]string{"--config", p}); err != nil {
			t.Fatal(err)
		}
		src, err := Apply(fs, func(string) (string, bool) { return "", false })
		if err != nil {
			return
		}
		for name := range src {
			if fs.Lookup(name) == nil {
				t.Fatalf("source for unknown flag %q", name)
			}
		}
	})
}
