package transport

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"
)

// File names GenerateDevCerts writes in its directory.
const (
	CAFile         = "ca.pem"
	CAKeyFile      = "ca-key.pem"
	ServerCertFile = "server.pem"
	ServerKeyFile  = "server-key.pem"
	ClientCertFile = "client.pem"
	ClientKeyFile  = "client-key.pem"
	PeerCAFile     = "peer-ca.pem"
	PeerCAKeyFile  = "peer-ca-key.pem"
	NodeCertFile   = "node.pem"
	NodeKeyFile    = "node-key.pem"
)

// DevCertValidity is how long development certificates are valid.
const DevCertValidity = 365 * 24 * time.Hour

// CertFiles are the paths of a set of development certificates.
type CertFiles struct {
	CA, CAKey             string
	ServerCert, ServerKey string
	ClientCert, ClientKey string
	// PeerCA signs node certificates only; NodeCert (with NodeKey) is a
	// coordinator node's certificate on the Raft port (PeerTLSConfig).
	PeerCA, PeerCAKey string
	NodeCert, NodeKey string
}

// DevCertFiles returns the paths GenerateDevCerts writes in dir.
func DevCertFiles(dir string) CertFiles {
	j := func(name string) string { return filepath.Join(dir, name) }
	return CertFiles{
		CA: j(CAFile), CAKey: j(CAKeyFile),
		ServerCert: j(ServerCertFile), ServerKey: j(ServerKeyFile),
		ClientCert: j(ClientCertFile), ClientKey: j(ClientKeyFile),
		PeerCA: j(PeerCAFile), PeerCAKey: j(PeerCAKeyFile),
		NodeCert: j(NodeCertFile), NodeKey: j(NodeKeyFile),
	}
}

// GenerateDevCerts makes a certificate authority and certificates signed
// by it for local use, with ECDSA P-256 keys, valid for DevCertValidity,
// and writes them to dir (created 0700 if missing): ca.pem and ca-key.pem;
// server.pem and server-key.pem for the coordinator nodes, valid for
// 127.0.0.1, ::1, localhost and hosts (IP addresses or DNS names), usable
// for server and client authentication (a node may also dial its peers);
// client.pem and client-key.pem for training clients. A second CA,
// peer-ca.pem and peer-ca-key.pem, signs only node.pem and node-key.pem:
// the certificate coordinator nodes present to each other on the Raft port,
// which carries the node role (NodeRoleURI; PeerTLSConfig). Neither the
// client nor the server certificate carries the role, and the peer CA
// signs nothing else, so a client certificate never speaks Raft. Keys are PKCS #8 PEM
// with mode 0600, certificates 0644. It refuses to overwrite: if any of
// the files exists it returns an error wrapping fs.ErrExist and writes
// nothing.
//
// These are development certificates: one client certificate shared by
// every client, the CA key beside them. For production, issue
// certificates from your own CA.
func GenerateDevCerts(dir string, hosts []string) error {
	files := DevCertFiles(dir)
	for _, f := range []string{files.CA, files.CAKey, files.ServerCert, files.ServerKey, files.ClientCert, files.ClientKey,
		files.PeerCA, files.PeerCAKey, files.NodeCert, files.NodeKey} {
		if _, err := os.Lstat(f); err == nil {
			return fmt.Errorf("transport: dev certs: %s: %w", f, fs.ErrExist)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("transport: dev certs: %w", err)
		}
	}
	now := time.Now().Add(-time.Hour) // tolerate clock skew
	caCert, caKey, caDER, err := devCA("fedzip dev CA", now)
	if err != nil {
		return err
	}

	server := &x509.Certificate{
		Subject:     pkix.Name{Organization: []string{"fedzip dev"}, CommonName: "fedzip coordinator"},
		NotBefore:   now,
		NotAfter:    now.Add(DevCertValidity),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:    []string{"localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			server.IPAddresses = append(server.IPAddresses, ip)
		} else if h != "" {
			server.DNSNames = append(server.DNSNames, h)
		}
	}
	serverKey, serverDER, err := issue(server, caCert, caKey)
	if err != nil {
		return err
	}

	client := &x509.Certificate{
		Subject:     pkix.Name{Organization: []string{"fedzip dev"}, CommonName: "fedzip client"},
		NotBefore:   now,
		NotAfter:    now.Add(DevCertValidity),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	clientKey, clientDER, err := issue(client, caCert, caKey)
	if err != nil {
		return err
	}

	peerCACert, peerCAKey, peerCADER, err := devCA("fedzip dev peer CA", now)
	if err != nil {
		return err
	}
	role, err := url.Parse(NodeRoleURI)
	if err != nil {
		return fmt.Errorf("transport: dev certs: %w", err)
	}
	node := &x509.Certificate{
		Subject:     pkix.Name{Organization: []string{"fedzip dev"}, CommonName: "fedzip node"},
		NotBefore:   now,
		NotAfter:    now.Add(DevCertValidity),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:        []*url.URL{role},
	}
	nodeKey, nodeDER, err := issue(node, peerCACert, peerCAKey)
	if err != nil {
		return err
	}

	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("transport: dev certs: %w", err)
	}
	for _, w := range []struct {
		path, kind string
		der        []byte
		mode       os.FileMode
	}{
		{files.CA, "CERTIFICATE", caDER, 0o644},
		{files.CAKey, "PRIVATE KEY", caKey, 0o600},
		{files.ServerCert, "CERTIFICATE", serverDER, 0o644},
		{files.ServerKey, "PRIVATE KEY", serverKey, 0o600},
		{files.ClientCert, "CERTIFICATE", clientDER, 0o644},
		{files.ClientKey, "PRIVATE KEY", clientKey, 0o600},
		{files.PeerCA, "CERTIFICATE", peerCADER, 0o644},
		{files.PeerCAKey, "PRIVATE KEY", peerCAKey, 0o600},
		{files.NodeCert, "CERTIFICATE", nodeDER, 0o644},
		{files.NodeKey, "PRIVATE KEY", nodeKey, 0o600},
	} {
		if err := writeNew(w.path, pem.EncodeToMemory(&pem.Block{Type: w.kind, Bytes: w.der}), w.mode); err != nil {
			return err
		}
	}
	return nil
}

// devCA makes a self-signed development CA named name, valid from now for
// DevCertValidity, that signs leaf certificates only.
func devCA(name string, now time.Time) (cert *x509.Certificate, keyDER, certDER []byte, err error) {
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{Organization: []string{"fedzip dev"}, CommonName: name},
		NotBefore:             now,
		NotAfter:              now.Add(DevCertValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	if keyDER, certDER, err = issue(tmpl, nil, nil); err != nil {
		return nil, nil, nil, err
	}
	if cert, err = x509.ParseCertificate(certDER); err != nil {
		return nil, nil, nil, fmt.Errorf("transport: dev certs: %w", err)
	}
	return cert, keyDER, certDER, nil
}

// issue makes a key for tmpl and signs tmpl with parentKey (self-signed if
// parent is nil); it returns the PKCS #8 key and the certificate, DER.
func issue(tmpl, parent *x509.Certificate, parentKeyDER []byte) (keyDER, certDER []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("transport: dev certs: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, fmt.Errorf("transport: dev certs: %w", err)
	}
	tmpl.SerialNumber = serial
	var signer any = key
	if parent == nil {
		parent = tmpl
	} else {
		k, err := x509.ParsePKCS8PrivateKey(parentKeyDER)
		if err != nil {
			return nil, nil, fmt.Errorf("transport: dev certs: %w", err)
		}
		signer = k
	}
	certDER, err = x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, signer)
	if err != nil {
		return nil, nil, fmt.Errorf("transport: dev certs: %w", err)
	}
	keyDER, err = x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("transport: dev certs: %w", err)
	}
	return keyDER, certDER, nil
}

// writeNew creates path with mode (never overwriting) and writes b.
func writeNew(path string, b []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return fmt.Errorf("transport: dev certs: %w", err)
	}
	if err := f.Chmod(mode); err != nil { // the umask may have narrowed mode
		f.Close()
		return fmt.Errorf("transport: dev certs: %w", err)
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("transport: dev certs: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("transport: dev certs: %w", err)
	}
	return nil
}
