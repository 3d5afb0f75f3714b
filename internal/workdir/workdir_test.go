package workdir

import (
	"flag"
	"os"
	"path/filepath"
	"testing"
)

func TestDirOrder(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv(Env, "")
	t.Setenv("XDG_STATE_HOME", "")
	for _, c := range []struct {
		env, xdg, want string
	}{
		{"", "", filepath.Join(home, ".local", "state", "fedzip")},
		{"", "/xdg", "/xdg/fedzip"},
		{"", "relative", filepath.Join(home, ".local", "state", "fedzip")}, // XDG wants absolute paths
		{"/fz", "/xdg", "/fz"},
	} {
		t.Setenv(Env, c.env)
		t.Setenv("XDG_STATE_HOME", c.xdg)
		if d, err := Dir(); err != nil || d != c.want {
			t.Errorf("FEDZIP_HOME=%q XDG_STATE_HOME=%q: %q, %v; want %q", c.env, c.xdg, d, err, c.want)
		}
	}
}

func TestFlagResolve(t *testing.T) {
	work := filepath.Join(t.TempDir(), "work")
	t.Setenv(Env, work)
	var id, state, file, explicit string
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	fs.StringVar(&id, "id", "node1", "")
	fs.Var(Flag(&state, "coordinator-ID", func() string { return "coordinator-" + id }), "state-dir", "")
	fs.Var(Flag(&file, "model.fzm", func() string { return "model.fzm" }), "deliver", "")
	fs.Var(Flag(&explicit, "x", func() string { return "x" }), "explicit", "")
	if got := fs.Lookup("state-dir").DefValue; got != filepath.Join(work, "coordinator-ID") {
		t.Fatalf("help shows default %q", got)
	}
	if err := fs.Parse([]string{"--id", "n2", "--explicit", ""}); err != nil {
		t.Fatal(err)
	}
	if err := Resolve(fs, false); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(work); !os.IsNotExist(err) {
		t.Fatalf("Resolve without create made the folder: %v", err)
	}
	if err := Resolve(fs, true); err != nil {
		t.Fatal(err)
	}
	if got := fs.Lookup("state-dir").Value.String(); got != state {
		t.Fatalf("the flag shows %q after Resolve, holds %q", got, state)
	}
	if state != filepath.Join(work, "coordinator-n2") || file != filepath.Join(work, "model.fzm") || explicit != "" {
		t.Fatalf("state %q, file %q, explicit %q", state, file, explicit)
	}
	fi, err := os.Stat(work)
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("work folder %v, %v; want mode 0700", fi, err)
	}
}
