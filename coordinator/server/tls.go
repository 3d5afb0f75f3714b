package server

import (
	"cmp"
	"crypto/tls"
	"errors"
	"fmt"

	"github.com/fedzip/fedzip/transport"
)

// grpcTLS is the gRPC server's TLS configuration (nil when Insecure).
func (c Config) grpcTLS() (*tls.Config, error) {
	if c.Insecure {
		return nil, nil
	}
	return transport.ServerTLSConfig(c.TLSCert, c.TLSKey, c.ClientCA)
}

// peerTLS is the TLS configuration for dialling other nodes: the node's
// own certificate as a client certificate, and the CA that signed theirs.
func (c Config) peerTLS() (*tls.Config, error) {
	if c.Insecure {
		return nil, nil
	}
	return transport.ClientTLSConfig(cmp.Or(c.CA, c.ClientCA), c.TLSCert, c.TLSKey)
}

// raftTLS is the peer TLS configuration of the Raft port: mutual TLS with
// the node role, unless Insecure is set without RaftCert. A certificate
// without the node role is a usage error (ErrConfig).
func (c Config) raftTLS() (*tls.Config, error) {
	if c.Insecure && c.RaftCert == "" {
		return nil, nil
	}
	cert, key, ca := c.RaftCert, c.RaftKey, c.RaftCA
	if cert == "" {
		cert, key = c.TLSCert, c.TLSKey
	}
	if ca == "" {
		ca = cmp.Or(c.CA, c.ClientCA)
	}
	cfg, err := transport.PeerTLSConfig(ca, cert, key)
	if err != nil {
		err = fmt.Errorf("raft peer TLS: %w; give --raft-cert, --raft-key and --raft-ca ('fedzip dev-certs' writes node.pem, node-key.pem and peer-ca.pem), or --insecure for local testing", err)
		if errors.Is(err, transport.ErrPeerCert) {
			return nil, usage(err)
		}
	}
	return cfg, err
}

// protections are the attributes of the one startup log line that says
// which protections are on and which are off. Add a field here when a
// protection is added.
func (c Config) protections(raftTLS bool) []any {
	onOff := func(on bool) string {
		if on {
			return "on"
		}
		return "off"
	}
	// optional: "unused" when the listener it protects is off.
	optional := func(enabled, on bool) string {
		if !enabled {
			return "unused"
		}
		return onOff(on)
	}
	return []any{
		"grpc_tls", onOff(!c.Insecure),
		"mtls", onOff(!c.Insecure && c.ClientCA != ""),
		"join_secret", onOff(c.JoinSecret != ""),
		"open_registration", onOff(c.OpenRegistration),
		"cluster_secret", onOff(c.ClusterSecret != ""),
		"gossip_encryption", optional(c.GossipAddr != "", c.GossipKey != nil),
		"metrics_token", optional(c.MetricsAddr != "", c.MetricsToken != ""),
		"ui_token", optional(c.UIAddr != "", c.UIToken != ""),
		"raft_tls", onOff(raftTLS),
	}
}
