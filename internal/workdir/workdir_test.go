package workdir

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"runtime"
	"strings"
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

// TestRelativeHomeRefused: a relative $FEDZIP_HOME would put a new work
// folder, with keys, in whichever folder a command runs in.
func TestRelativeHomeRefused(t *testing.T) {
	for _, d := range []string{"rel", ".", "./x/.."} {
		t.Setenv(Env, d)
		if got, err := Dir(); !errors.Is(err, ErrNoHome) {
			t.Errorf("FEDZIP_HOME=%q: Dir() = %q, %v; want ErrNoHome", d, got, err)
		}
		if got, err := Make(); !errors.Is(err, ErrNoHome) {
			t.Errorf("FEDZIP_HOME=%q: Make() = %q, %v; want ErrNoHome", d, got, err)
		}
	}
	// Empty is unset.
	t.Setenv(Env, "")
	t.Setenv("XDG_STATE_HOME", "/xdg")
	if d, err := Dir(); err != nil || d != "/xdg/fedzip" {
		t.Fatalf("FEDZIP_HOME empty: %q, %v", d, err)
	}
}

// TestMakeRefusesOpenFolder: a work folder other users can read or write
// into, holding files, is refused (they may have read the keys or
// planted their own), and left as it was; an empty one is made 0700; a
// file is no folder.
func TestMakeRefusesOpenFolder(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("no Unix permissions")
	}
	for _, mode := range []os.FileMode{0o777, 0o755, 0o750, 0o701} {
		dir := filepath.Join(t.TempDir(), "w")
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "signing-key.pem"), []byte("planted"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(dir, mode); err != nil {
			t.Fatal(err)
		}
		t.Setenv(Env, dir)
		if _, err := Make(); !errors.Is(err, ErrNotPrivate) || !strings.Contains(err.Error(), "chmod 700") {
			t.Errorf("mode %#o with a file: Make() = %v, want ErrNotPrivate that says chmod 700", mode, err)
		}
		fs := flag.NewFlagSet("x", flag.ContinueOnError)
		var state string
		fs.Var(Flag(&state, "state", nil), "state-dir", "")
		if err := Resolve(fs, true); !errors.Is(err, ErrNotPrivate) {
			t.Errorf("mode %#o: Resolve() = %v, want ErrNotPrivate", mode, err)
		}
		if fi, _ := os.Stat(dir); fi.Mode().Perm() != mode {
			t.Errorf("a refused folder's mode changed to %#o", fi.Mode().Perm())
		}

		empty := filepath.Join(t.TempDir(), "e")
		if err := os.Mkdir(empty, 0o700); err != nil {
			t.Fatal(err)
		}
		os.Chmod(empty, mode)
		t.Setenv(Env, empty)
		if _, err := Make(); err != nil {
			t.Errorf("empty folder of mode %#o: %v", mode, err)
		}
		if fi, _ := os.Stat(empty); fi.Mode().Perm() != 0o700 {
			t.Errorf("empty folder of mode %#o: now %#o, want 0700", mode, fi.Mode().Perm())
		}
	}
	file := filepath.Join(t.TempDir(), "f")
	os.WriteFile(file, nil, 0o600)
	t.Setenv(Env, file)
	if _, err := Make(); err == nil {
		t.Fatal("FEDZIP_HOME naming a file: Make() succeeded")
	}
}

// TestPrivateRefusesAnotherUsersFolder: a folder another user made (say
// in /tmp, before this one) is refused whatever its mode. Needs root to
// give a folder away.
func TestPrivateRefusesAnotherUsersFolder(t *testing.T) {
	if runtime.GOOS == "windows" || os.Geteuid() != 0 {
		t.Skip("needs root to chown")
	}
	dir := t.TempDir()
	if err := os.Chown(dir, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if err := Private(dir); !errors.Is(err, ErrNotPrivate) || !strings.Contains(err.Error(), "another user") {
		t.Fatalf("Private(folder of uid 65534) = %v, want ErrNotPrivate", err)
	}
}
