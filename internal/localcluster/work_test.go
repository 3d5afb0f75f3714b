package localcluster

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
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
