package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/fedzip/fedzip/transport"
)

// TestCoordinatorRaftNeedsNodeCertificate: a coordinator with TLS runs Raft
// over peer TLS, so it refuses to start (exit 2, before opening any port)
// without a node certificate that its peers would accept, and without TLS it
// refuses a Raft address that is not loopback.
func TestCoordinatorRaftNeedsNodeCertificate(t *testing.T) {
	dir := t.TempDir()
	pki, other := transport.DevCertFiles(filepath.Join(dir, "a")), transport.DevCertFiles(filepath.Join(dir, "b"))
	for _, d := range []string{"a", "b"} {
		if err := transport.GenerateDevCerts(filepath.Join(dir, d), nil); err != nil {
			t.Fatal(err)
		}
	}
	base := []string{"coordinator", "--state-dir", filepath.Join(dir, "state"), "--listen", "127.0.0.1:0", "--raft-addr", "127.0.0.1:0",
		"--tls-cert", pki.ServerCert, "--tls-key", pki.ServerKey, "--client-ca", pki.CA, "--join-secret", "s3cret"}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"the server certificate (no node role)", nil, "--raft-cert"},
		{"a client certificate", []string{"--raft-cert", pki.ClientCert, "--raft-key", pki.ClientKey, "--raft-ca", pki.CA}, "node role"},
		{"the node certificate and the clients' CA", []string{"--raft-cert", pki.NodeCert, "--raft-key", pki.NodeKey}, "unknown authority"},
		{"the node certificate and another peer CA", []string{"--raft-cert", pki.NodeCert, "--raft-key", pki.NodeKey, "--raft-ca", other.PeerCA}, "unknown authority"},
	} {
		code, _, stderr := runCmd(append(append([]string{}, base...), tc.args...)...)
		if code != exitUsage || !strings.Contains(stderr, tc.want) {
			t.Errorf("%s: exit %d, stderr %q; want %d and %q", tc.name, code, stderr, exitUsage, tc.want)
		}
	}
	code, _, stderr := runCmd("coordinator", "--state-dir", filepath.Join(dir, "state2"), "--listen", "127.0.0.1:0", "--raft-addr", "192.0.2.1:7071",
		"--tls-cert", pki.ServerCert, "--tls-key", pki.ServerKey, "--client-ca", pki.CA, "--raft-cert", pki.NodeCert, "--raft-key", pki.NodeKey,
		"--raft-ca", pki.PeerCA, "--raft-advertise", "0.0.0.0:7071", "--join-secret", "s3cret")
	if code == exitOK || !strings.Contains(stderr, "advertise") {
		t.Errorf("advertising 0.0.0.0: exit %d, stderr %q", code, stderr)
	}
}
