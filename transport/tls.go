package transport

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
)

// ServerTLSConfig returns the TLS configuration of a coordinator node
// serving certFile and keyFile (PEM). If clientCAFile is not empty, it is
// mTLS: every client must present a certificate signed by a CA in that
// file (tls.RequireAndVerifyClientCert). TLS 1.3 is the minimum.
func ServerTLSConfig(certFile, keyFile, clientCAFile string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("transport: server certificate: %w", err)
	}
	cfg := &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS13,
	}
	if clientCAFile != "" {
		pool, err := loadPool(clientCAFile)
		if err != nil {
			return nil, err
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

// ClientTLSConfig returns the TLS configuration of a client that trusts
// the CAs in caFile (PEM; the system roots if empty). If certFile and
// keyFile are set, the client presents that certificate (mTLS); set both
// or neither. The server name is taken from each dialled address.
func ClientTLSConfig(caFile, certFile, keyFile string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS13}
	if caFile != "" {
		pool, err := loadPool(caFile)
		if err != nil {
			return nil, err
		}
		cfg.RootCAs = pool
	}
	if (certFile == "") != (keyFile == "") {
		return nil, fmt.Errorf("transport: client certificate and key must be given together")
	}
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("transport: client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// loadPool reads a PEM file of CA certificates.
func loadPool(file string) (*x509.CertPool, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("transport: CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("transport: CA file %s holds no PEM certificate", file)
	}
	return pool, nil
}

// NodeRoleURI is the URI SAN that marks a certificate as a coordinator
// node's: only a certificate that carries it, and chains to the peer CA,
// may speak Raft (PeerTLSConfig). Client certificates must not carry it.
const NodeRoleURI = "spiffe://fedzip/node"

// HasNodeRole reports whether cert carries NodeRoleURI among its URI SANs.
func HasNodeRole(cert *x509.Certificate) bool {
	for _, u := range cert.URIs {
		if u.String() == NodeRoleURI {
			return true
		}
	}
	return false
}

// PeerTLSConfig returns the mutual TLS configuration of a coordinator node
// on its Raft port, from the peer CA (caFile: the CA that signs node
// certificates, PEM) and this node's certificate and key (PEM). The same
// configuration serves both ends of a connection; see NewPeerTLSConfig.
func PeerTLSConfig(caFile, certFile, keyFile string) (*tls.Config, error) {
	if caFile == "" || certFile == "" || keyFile == "" {
		return nil, fmt.Errorf("%w: the peer CA, the node certificate and its key are all required", ErrPeerCert)
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("transport: node certificate: %w", err)
	}
	pool, err := loadPool(caFile)
	if err != nil {
		return nil, err
	}
	cfg, err := NewPeerTLSConfig(cert, pool)
	if err != nil {
		return nil, fmt.Errorf("%w (%s, CA %s)", err, certFile, caFile)
	}
	return cfg, nil
}

// NewPeerTLSConfig returns the mutual TLS 1.3 configuration of a node that
// presents cert and trusts the node certificates that cas signed. Both ends
// of every connection verify the other: the peer's certificate must chain
// to cas, be valid for server and client authentication (every node both
// dials and accepts), and carry NodeRoleURI. So a certificate from another
// CA, and a client certificate (no node role) even from the same CA, are
// refused in the handshake. The peer's host name is not checked: what a
// node proves is the node role, the same for every node, so that a node
// may be dialled at any address or DNS name (Consul checks its servers the
// same way). It returns an error wrapping ErrPeerCert if cert itself would
// be refused by its peers.
func NewPeerTLSConfig(cert tls.Certificate, cas *x509.CertPool) (*tls.Config, error) {
	leaf := cert.Leaf
	if leaf == nil && len(cert.Certificate) > 0 {
		var err error
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrPeerCert, err)
		}
	}
	if leaf == nil || cas == nil {
		return nil, fmt.Errorf("%w: no certificate or no CA", ErrPeerCert)
	}
	var inter []*x509.Certificate
	for _, der := range cert.Certificate[1:] {
		if c, err := x509.ParseCertificate(der); err == nil {
			inter = append(inter, c)
		}
	}
	verify := func(chain []*x509.Certificate) error {
		if len(chain) == 0 {
			return fmt.Errorf("%w: no certificate", ErrPeerCert)
		}
		if !HasNodeRole(chain[0]) {
			return fmt.Errorf("%w: %q lacks the node role %s", ErrPeerCert, chain[0].Subject.CommonName, NodeRoleURI)
		}
		pool := x509.NewCertPool()
		for _, c := range chain[1:] {
			pool.AddCert(c)
		}
		for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
			if _, err := chain[0].Verify(x509.VerifyOptions{Roots: cas, Intermediates: pool, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
				return fmt.Errorf("%w: %w", ErrPeerCert, err)
			}
		}
		return nil
	}
	if err := verify(append([]*x509.Certificate{leaf}, inter...)); err != nil {
		return nil, fmt.Errorf("this node's certificate would be refused by its peers: %w", err)
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS13,
		// Accepting: Go verifies the chain (client authentication);
		// VerifyConnection adds the node role and server authentication.
		ClientAuth: tls.RequireAndVerifyClientCert,
		ClientCAs:  cas,
		// Dialling: no host name to check (see above), so the chain is
		// verified in VerifyConnection instead.
		RootCAs:            cas,
		InsecureSkipVerify: true,
		VerifyConnection:   func(cs tls.ConnectionState) error { return verify(cs.PeerCertificates) },
	}, nil
}

// ExplainTLSError returns err with the step that fixes it when err is a
// TLS failure a user fixes with a flag; otherwise err itself (nil for
// nil). Today that is a server certificate signed by an authority the
// client does not trust: the error wraps ErrUnknownAuthority and err, and
// says to pass the cluster's CA with --ca. The cause is found by type
// (x509.UnknownAuthorityError) or, since gRPC reports a failed handshake
// as a status that keeps only the message, by Go's message for it.
func ExplainTLSError(err error) error {
	if err == nil || errors.Is(err, ErrUnknownAuthority) {
		return err
	}
	var ua x509.UnknownAuthorityError
	if errors.As(err, &ua) || strings.Contains(err.Error(), "certificate signed by unknown authority") {
		return fmt.Errorf("%w: pass the cluster's CA with --ca FILE ('fedzip dev-certs' writes ca.pem): %w", ErrUnknownAuthority, err)
	}
	return err
}
