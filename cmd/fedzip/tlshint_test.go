package main

import (
	"strings"
	"testing"

	"github.com/fedzip/fedzip/internal/fakecoord"
	"github.com/fedzip/fedzip/transport"
)

// TestUnknownAuthorityHint: 'fedzip client' and 'fedzip cluster status'
// given a CA that did not sign the coordinator's certificate exit 1 with
// a line that says to pass the cluster's CA with --ca.
func TestUnknownAuthorityHint(t *testing.T) {
	cluster, other := t.TempDir(), t.TempDir()
	s, err := fakecoord.StartDev(cluster)
	if err != nil {
		t.Fatal(err)
	}
	if err := transport.GenerateDevCerts(other, nil); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	wrongCA := transport.DevCertFiles(other).CA
	for _, args := range [][]string{
		{"client", "--coordinator", s.Addr, "--ca", wrongCA, "--dataset", "synthetic", "--clients", "2", "--state-dir", t.TempDir(), "--timeout", "2m"},
		{"cluster", "status", "--coordinator", s.Addr, "--ca", wrongCA},
	} {
		code, _, stderr := runCmd(args...)
		if code != exitError || !strings.Contains(stderr, "signed by an unknown authority: pass the cluster's CA with --ca FILE") {
			t.Errorf("fedzip %s: exit %d, stderr %q", strings.Join(args[:2], " "), code, stderr)
		}
	}
}
