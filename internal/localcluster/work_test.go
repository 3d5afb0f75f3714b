package localcluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/fedzip/fedzip/internal/workdir"
)

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*Config)
	}{
		{"no nodes", func(c *Config) { c.Nodes = 0 }},
		{"too many nodes", func(c *Config) { c.Nodes = MaxNodes + 1 }},
		{"no clients", func(c *Config) { c.Clients = 0 }},
		{"no rounds", func(c *Config) { c.Rounds = 0 }},
		{"min clients above clients", func(c *Config) { c.MinClients = c.Clients + 1 }},
		{"fraction 0", func(c *Config) { c.Fraction = 0 }},
		{"fraction above 1", func(c *Config) { c.Fraction = 1.5 }},
		{"no deadline", func(c *Config) { c.Deadline = 0 }},
		{"privileged base port", func(c *Config) { c.BasePort = 80 }},
		{"base port too high", func(c *Config) { c.BasePort = 65300 }},
		{"unknown data set", func(c *Config) { c.Dataset = "cifar" }},
		{"negative federated evaluation", func(c *Config) { c.FedEvalEvery = -1 }},
		{"holdout 1", func(c *Config) { c.HoldOut = 1 }},
		{"federated evaluation without a holdout", func(c *Config) { c.FedEvalEvery = 1 }},
		{"unknown strategy", func(c *Config) { c.Strategy = "bogus" }},
		{"bad strategy key", func(c *Config) { c.Strategy = "fedavg,lr=3" }},
		{"lattice as upload codec", func(c *Config) { c.UploadCodec = "lattice" }},
		{"download codec with momentum", func(c *Config) { c.DownloadCodec = "stcm" }},
	} {
		cfg := DefaultConfig()
		tc.edit(&cfg)
		if err := cfg.Validate(); !errors.Is(err, ErrConfig) {
			t.Errorf("%s: Validate() = %v, want ErrConfig", tc.name, err)
		}
		if _, err := Run(context.Background(), cfg); !errors.Is(err, ErrConfig) {
			t.Errorf("%s: Run() = %v, want ErrConfig", tc.name, err)
		}
	}
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("DefaultConfig: %v", err)
	}
}

// TestWorkFolder: certificates and secrets are made once (secrets random,
// mode 0600) and reused; an earlier run's state is refused, and removed
// with Reset, which keeps them.
func TestWorkFolder(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Work = filepath.Join(t.TempDir(), "w")
	w, err := prepareWork(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !w.newCerts || !w.newSecrets {
		t.Fatalf("a new work folder reused certificates (%v) or secrets (%v)", !w.newCerts, !w.newSecrets)
	}
	s := w.secrets
	if s.join == "" || s.join == s.cluster || s.join == s.uiToken || s.cluster == s.uiToken {
		t.Fatalf("secrets are empty or equal: %+v", s)
	}
	for _, f := range []string{joinSecretFile, clusterSecretFile, gossipKeyFile, uiTokenFile} {
		fi, err := os.Stat(filepath.Join(w.dir, "secrets", f))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, want 0600", f, fi.Mode().Perm())
		}
	}
	ca, err := os.ReadFile(w.certs.CA)
	if err != nil {
		t.Fatal(err)
	}

	w2, err := prepareWork(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ca2, _ := os.ReadFile(w2.certs.CA)
	if w2.newCerts || w2.newSecrets || w2.secrets != s || !bytes.Equal(ca, ca2) {
		t.Fatal("a second run in the same work folder did not reuse the certificates and secrets")
	}

	if err := os.MkdirAll(w.stateDir("n1"), 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := prepareWork(cfg); !errors.Is(err, ErrStaleState) || !strings.Contains(err.Error(), "--reset") {
		t.Fatalf("a work folder with state: %v, want ErrStaleState that says --reset", err)
	}
	cfg.Reset = true
	w3, err := prepareWork(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(w.stateDir("n1")); !os.IsNotExist(err) {
		t.Fatalf("Reset left the earlier state: %v", err)
	}
	if w3.secrets != s {
		t.Fatal("Reset changed the secrets")
	}

	// A partial set of certificates is refused, not completed.
	os.Remove(w.certs.ClientKey)
	if _, err := prepareWork(cfg); !errors.Is(err, ErrStaleState) {
		t.Fatalf("incomplete certificates: %v, want ErrStaleState", err)
	}
}

// TestResetSparesForeignFolder: --work naming a folder of the user's
// (here with state/ and logs/ folders of its own) is refused, with or
// without --reset, and nothing in it is removed or added.
func TestResetSparesForeignFolder(t *testing.T) {
	dir := t.TempDir()
	mine := []string{"state/thesis.tex", "logs/2026.log", "models/resnet.pt", "model.fzmodel", "notes.txt"}
	for _, f := range mine {
		p := filepath.Join(dir, f)
		os.MkdirAll(filepath.Dir(p), 0o700)
		if err := os.WriteFile(p, []byte("mine"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	before := listTree(t, dir)
	for _, reset := range []bool{true, false} {
		cfg := DefaultConfig()
		cfg.Work, cfg.Reset = dir, reset
		if _, err := prepareWork(cfg); !errors.Is(err, ErrForeignWork) {
			t.Fatalf("Reset %v on a folder of the user's: %v, want ErrForeignWork", reset, err)
		}
		if after := listTree(t, dir); after != before {
			t.Fatalf("Reset %v changed a folder it refused:\nbefore %s\nafter  %s", reset, before, after)
		}
	}
	// Only the layout of a work folder, without certificates and secrets,
	// is not one either.
	dir2 := t.TempDir()
	os.MkdirAll(filepath.Join(dir2, "state", "x"), 0o700)
	cfg := DefaultConfig()
	cfg.Work, cfg.Reset = dir2, true
	if _, err := prepareWork(cfg); !errors.Is(err, ErrForeignWork) {
		t.Fatalf("a folder holding state/ alone: %v, want ErrForeignWork", err)
	}
	if _, err := os.Stat(filepath.Join(dir2, "state", "x")); err != nil {
		t.Fatalf("Reset removed a folder it refused: %v", err)
	}
}

// TestWorkFolderMarker: a new work folder is marked, and a folder an
// earlier fedzip local made without the marker (certs, secrets, state)
// is recognised and marked, so that --reset works there.
func TestWorkFolderMarker(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Work = filepath.Join(t.TempDir(), "w")
	w, err := prepareWork(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(w.dir, markerFile)); err != nil {
		t.Fatalf("a new work folder has no marker: %v", err)
	}
	os.Remove(filepath.Join(w.dir, markerFile))
	os.MkdirAll(w.stateDir("n1"), 0o700)
	cfg.Reset = true
	if _, err := prepareWork(cfg); err != nil {
		t.Fatalf("a work folder of an earlier version: %v", err)
	}
	if _, err := os.Stat(w.stateDir("n1")); !os.IsNotExist(err) {
		t.Fatalf("Reset left the state: %v", err)
	}
}

// TestWorkFolderNotPrivate: a work folder other users can write into
// (anything in it may be planted: a known join secret, a log file that
// is a link to ~/.bashrc) or that another user owns is refused before
// anything in it is read.
func TestWorkFolderNotPrivate(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("no Unix permissions")
	}
	cfg := DefaultConfig()
	cfg.Work = filepath.Join(t.TempDir(), "w")
	if _, err := prepareWork(cfg); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{cfg.Work, filepath.Join(cfg.Work, "secrets")} {
		os.Chmod(dir, 0o777)
		if _, err := prepareWork(cfg); !errors.Is(err, workdir.ErrNotPrivate) {
			t.Errorf("%s of mode 0777: %v, want workdir.ErrNotPrivate", dir, err)
		}
		os.Chmod(dir, 0o700)
	}
	if os.Geteuid() == 0 {
		// Another user's folder, made before this one (say in /tmp).
		os.Chown(cfg.Work, 65534, 65534)
		if _, err := prepareWork(cfg); !errors.Is(err, workdir.ErrNotPrivate) {
			t.Errorf("a work folder of uid 65534: %v, want workdir.ErrNotPrivate", err)
		}
		os.Chown(cfg.Work, 0, 0)
	}
	if _, err := prepareWork(cfg); err != nil {
		t.Fatalf("back to private: %v", err)
	}
}

// TestSecretFilesMustBePrivate: a secret file that is a symbolic link
// (to /etc/passwd, or /dev/zero), that others can read, or that is huge
// is refused, not followed, fixed or read whole.
func TestSecretFilesMustBePrivate(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("no Unix permissions")
	}
	cfg := DefaultConfig()
	cfg.Work = filepath.Join(t.TempDir(), "w")
	if _, err := prepareWork(cfg); err != nil {
		t.Fatal(err)
	}
	secret := filepath.Join(cfg.Work, "secrets", joinSecretFile)
	good, _ := os.ReadFile(secret)
	// Each case makes the secret file anew. Nothing here may chmod or
	// write through the links: they point at real system files.
	for _, tc := range []struct {
		name string
		make func() error
	}{
		{"link to /etc/passwd", func() error { return os.Symlink("/etc/passwd", secret) }},
		{"link to /dev/zero", func() error { return os.Symlink("/dev/zero", secret) }},
		{"mode 0644", func() error {
			if err := os.WriteFile(secret, good, 0o600); err != nil {
				return err
			}
			return os.Chmod(secret, 0o644) // a regular file, not a link
		}},
		{"1 MiB", func() error { return os.WriteFile(secret, bytes.Repeat([]byte("x"), 1<<20), 0o600) }},
	} {
		if err := os.Remove(secret); err != nil {
			t.Fatal(err)
		}
		if err := tc.make(); err != nil {
			t.Fatal(err)
		}
		if _, err := prepareWork(cfg); !errors.Is(err, ErrStaleState) {
			t.Errorf("join secret %s: %v, want ErrStaleState", tc.name, err)
		}
	}
	for _, f := range []string{"/etc/passwd", "/dev/zero"} {
		if fi, err := os.Stat(f); err == nil && fi.Mode().Perm()&0o004 == 0 {
			t.Errorf("%s is mode %#o after the test: the test changed a system file", f, fi.Mode().Perm())
		}
	}
	os.Remove(secret)
	if err := os.WriteFile(secret, good, 0o600); err != nil {
		t.Fatal(err)
	}
	if w, err := prepareWork(cfg); err != nil || w.secrets.join != strings.TrimSpace(string(good)) {
		t.Fatalf("the secret restored: %v", err)
	}
}

// listTree lists the files under dir with their contents.
func listTree(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		fmt.Fprintf(&b, "%s ", rel)
		if !d.IsDir() {
			c, _ := os.ReadFile(p)
			fmt.Fprintf(&b, "(%s) ", c)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// TestResetKeepsLinkTargets: --reset in a work folder whose state/ and
// model.fzmodel are symbolic links (to a disk with room, say) removes the
// links, not what they point to.
func TestResetKeepsLinkTargets(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("symbolic links")
	}
	cfg := DefaultConfig()
	cfg.Work = filepath.Join(t.TempDir(), "w")
	w, err := prepareWork(cfg)
	if err != nil {
		t.Fatal(err)
	}
	elsewhere := t.TempDir()
	os.WriteFile(filepath.Join(elsewhere, "keep"), []byte("keep"), 0o600)
	os.RemoveAll(w.state)
	if err := os.Symlink(elsewhere, w.state); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(elsewhere, "keep"), w.model()); err != nil {
		t.Fatal(err)
	}
	cfg.Reset = true
	if _, err := prepareWork(cfg); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(elsewhere, "keep")); err != nil || string(b) != "keep" {
		t.Fatalf("Reset removed or changed a link's target: %q, %v", b, err)
	}
	if fi, err := os.Lstat(w.state); err != nil || !fi.IsDir() {
		t.Fatalf("state/ after Reset: %v, %v; want a new folder", fi, err)
	}
}

// TestChildFlags: the model, federated evaluation and holdout settings reach
// the nodes' and the clients' command lines, and are absent when unset.
func TestChildFlags(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Work = filepath.Join(t.TempDir(), "w")
	w, err := prepareWork(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ports := []nodePorts{{"127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3", "127.0.0.1:4"}}
	has := func(args []string, flag, value string) bool {
		i := slices.Index(args, flag)
		return i >= 0 && i+1 < len(args) && args[i+1] == value
	}
	s := newSupervisor(cfg, w, ports)
	for _, c := range append(s.nodes, s.clients...) {
		if slices.Contains(c.args, "--model") || slices.Contains(c.args, "--fed-eval-every") || slices.Contains(c.args, "--holdout") {
			t.Fatalf("%s: unset settings passed: %v", c.name, c.args)
		}
	}
	cfg.Model, cfg.FedEvalEvery, cfg.HoldOut = "conv:4x5,pool:2,fc:10", 2, 0.2
	s = newSupervisor(cfg, w, ports)
	for _, n := range s.nodes {
		if !has(n.args, "--model", cfg.Model) || !has(n.args, "--fed-eval-every", "2") {
			t.Errorf("node %s: %v", n.name, n.args)
		}
	}
	for _, c := range s.clients {
		if !has(c.args, "--holdout", "0.2") {
			t.Errorf("client %s: %v", c.name, c.args)
		}
	}
}
