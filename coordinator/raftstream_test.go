package coordinator

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/fedzip/fedzip/internal/httpguard"
	"github.com/fedzip/fedzip/internal/syncbuf"
	"github.com/fedzip/fedzip/round"
	"github.com/fedzip/fedzip/transport"
)

// forgeRegister is the attack of issue 12 finding 1: from outside the
// cluster, through trans, it sends the node an AppendEntries with the
// node's term + 1 that appends and commits a register command whose token
// the attacker chose. It retries while the node answers (a log that moved
// on under it) until ok reports that the forged client authenticates, or
// until tries run out; it returns the last RPC error.
func forgeRegister(t *testing.T, trans raft.Transport, n *Node, token string, tries int) (ok bool, err error) {
	t.Helper()
	h := sha256Sum(token)
	c := command{Type: cmdRegister, Now: time.Now().UnixNano(), Name: "mallory", TokenHash: h[:], Examples: 1}
	data := c.encode()
	for i := 0; i < tries; i++ {
		st := n.Raft().Stats()
		u := func(k string) uint64 { v, _ := strconv.ParseUint(st[k], 10, 64); return v }
		term, last, lastTerm := u("term"), u("last_log_index"), u("last_log_term")
		req := &raft.AppendEntriesRequest{
			RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("mallory"), Addr: []byte(trans.LocalAddr())},
			Term:      term + 1, PrevLogEntry: last, PrevLogTerm: lastTerm,
			Entries:           []*raft.Log{{Index: last + 1, Term: term + 1, Type: raft.LogCommand, Data: data}},
			LeaderCommitIndex: last + 1,
		}
		var resp raft.AppendEntriesResponse
		err = trans.AppendEntries(raft.ServerID(n.cfg.ID), raft.ServerAddress(n.Address()), req, &resp)
		if err == nil && resp.Success {
			deadline := time.Now().Add(30 * time.Second)
			for time.Now().Before(deadline) {
				if forgedClient(n, token) != 0 {
					return true, nil
				}
				time.Sleep(5 * time.Millisecond)
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	return forgedClient(n, token) != 0, err
}

// forgedClient returns the registered client whose token is token, or 0.
func forgedClient(n *Node, token string) round.ClientID {
	for _, id := range n.FSM().ClientIDs() {
		if n.FSM().Authenticate(id, token) == nil {
			return id
		}
	}
	return 0
}

// plainAttacker is raft's own TCP transport on 127.0.0.1, as anyone on the
// network can run it.
func plainAttacker(t *testing.T) raft.Transport {
	t.Helper()
	tr, err := raft.NewTCPTransport("127.0.0.1:0", nil, 1, 2*time.Second, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.CloseStreams(); tr.Close() })
	return tr
}

// soloNode starts a one-node cluster on disk with cfg's Raft settings and
// waits until it leads and has initialised the run.
func soloNode(t *testing.T, cfg Config) *Node {
	t.Helper()
	cfg.ID, cfg.Dir, cfg.Bootstrap, cfg.Run, cfg.Raft, cfg.Tick = "solo", t.TempDir(), true, testRun(0), fastRaft, 10*time.Millisecond
	if cfg.RaftAddr == "" {
		cfg.RaftAddr = freeAddr(t)
	}
	n, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	leaderOf(t, []*Node{n})
	waitFor(t, "init", func() bool { _, ok := n.FSM().Node("solo"); return ok && n.FSM().View().Initialised })
	return n
}

// devPKI writes a set of development certificates (two CAs: clients' and
// peers') into a temporary directory.
func devPKI(t testing.TB) transport.CertFiles {
	t.Helper()
	dir := t.TempDir()
	if err := transport.GenerateDevCerts(dir, nil); err != nil {
		t.Fatal(err)
	}
	return transport.DevCertFiles(dir)
}

// peerTLS is the peer TLS configuration of a node of pki.
func peerTLS(t testing.TB, pki transport.CertFiles) *tls.Config {
	t.Helper()
	cfg, err := transport.PeerTLSConfig(pki.PeerCA, pki.NodeCert, pki.NodeKey)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// tlsDialStream is an attacker's stream layer: it dials with TLS,
// presenting certFile, and trusts any server.
type tlsDialStream struct {
	net.Listener
	cfg *tls.Config
}

func (s *tlsDialStream) Dial(a raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	return tls.DialWithDialer(&net.Dialer{Timeout: timeout}, "tcp", string(a), s.cfg)
}

func tlsAttacker(t *testing.T, certFile, keyFile string) raft.Transport {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// GetClientCertificate: present the certificate even though it is not
	// from a CA the server names.
	cfg := &tls.Config{GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil },
		InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}
	tr := raft.NewNetworkTransport(&tlsDialStream{ln, cfg}, 1, 2*time.Second, io.Discard)
	t.Cleanup(func() { tr.CloseStreams(); tr.Close() })
	return tr
}

// roleless writes a certificate that the peer CA of pki signs but that
// lacks the node role (as a careless or compromised peer CA might issue),
// valid for server and client authentication, and returns its files.
func roleless(t *testing.T, pki transport.CertFiles) (certFile, keyFile string) {
	t.Helper()
	ca, err := tls.LoadX509KeyPair(pki.PeerCA, pki.PeerCAKey)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "no role"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Leaf, &key.PublicKey, ca.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "norole.pem"), filepath.Join(dir, "norole-key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// TestRaftForgedAppendEntries is issue 12 finding 1: an AppendEntries with
// term+1 carrying a register command with the attacker's token, sent from
// outside the cluster to a node whose Raft port runs peer TLS, must be
// refused in the handshake whatever the attacker presents: nothing, a
// client certificate or the gRPC server certificate (the clients' CA, no
// node role), a node certificate of another peer CA, or a certificate of
// the right peer CA without the node role.
func TestRaftForgedAppendEntries(t *testing.T) {
	pki, other := devPKI(t), devPKI(t)
	noRoleCert, noRoleKey := roleless(t, pki)
	var logs syncbuf.Buffer
	n := soloNode(t, Config{RaftTLS: peerTLS(t, pki), Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if !n.RaftTLS() {
		t.Fatal("RaftTLS() is false on a node with peer TLS")
	}
	for _, tc := range []struct {
		name     string
		attacker func(t *testing.T) raft.Transport
	}{
		{"plain TCP", plainAttacker},
		{"TLS with a client certificate", func(t *testing.T) raft.Transport { return tlsAttacker(t, pki.ClientCert, pki.ClientKey) }},
		{"TLS with the gRPC server certificate", func(t *testing.T) raft.Transport { return tlsAttacker(t, pki.ServerCert, pki.ServerKey) }},
		{"TLS with a node certificate of another peer CA", func(t *testing.T) raft.Transport { return tlsAttacker(t, other.NodeCert, other.NodeKey) }},
		{"TLS with a certificate of the peer CA without the node role", func(t *testing.T) raft.Transport { return tlsAttacker(t, noRoleCert, noRoleKey) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ok, err := forgeRegister(t, tc.attacker(t), n, "token-of-"+tc.name, 3)
			if ok {
				t.Fatalf("the forged AppendEntries registered client %d with the attacker's token", forgedClient(n, "token-of-"+tc.name))
			}
			if err == nil {
				t.Fatal("the forged AppendEntries was answered")
			}
			t.Logf("refused: %v", err)
		})
	}
	if got := len(n.FSM().ClientIDs()); got != 0 {
		t.Fatalf("%d clients registered", got)
	}
	if !n.IsLeader() {
		t.Fatal("the node lost its leadership to the attacker's term")
	}
	waitFor(t, "the refusal in the log", func() bool { return strings.Contains(logs.String(), "raft: refused a peer connection") })
}

// TestRaftForgedAppendEntriesControl keeps TestRaftForgedAppendEntries
// honest: the same attack against a node without peer TLS (loopback, where
// Open allows clear text with a warning) succeeds, so the refusals above
// come from TLS and not from a broken attack. It is also the residual risk
// of --insecure: any local process can rewrite the state.
func TestRaftForgedAppendEntriesControl(t *testing.T) {
	n := soloNode(t, Config{})
	if n.RaftTLS() {
		t.Fatal("RaftTLS() is true without peer TLS")
	}
	if ok, err := forgeRegister(t, plainAttacker(t), n, "attacker-chosen-token", 20); !ok {
		t.Fatalf("the attack did not work against clear-text Raft (%v): the harness is broken", err)
	}
}

// TestRaftDialRefusesNonNode: a node dialling a Raft address where a
// server shows a certificate without the node role, or one from another
// peer CA, refuses it in the handshake and sends nothing.
func TestRaftDialRefusesNonNode(t *testing.T) {
	pki, other := devPKI(t), devPKI(t)
	noRoleCert, noRoleKey := roleless(t, pki)
	s, err := listenRaft(raftListen{bind: "127.0.0.1:0", tls: peerTLS(t, pki)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, tc := range []struct{ name, cert, key string }{
		{"the gRPC server certificate", pki.ServerCert, pki.ServerKey},
		{"a client certificate", pki.ClientCert, pki.ClientKey},
		{"a node certificate of another peer CA", other.NodeCert, other.NodeKey},
		{"a certificate of the peer CA without the node role", noRoleCert, noRoleKey},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cert, err := tls.LoadX509KeyPair(tc.cert, tc.key)
			if err != nil {
				t.Fatal(err)
			}
			ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, ClientAuth: tls.RequireAnyClientCert})
			if err != nil {
				t.Fatal(err)
			}
			var wg sync.WaitGroup
			wg.Add(1)
			go func() { // the rogue server
				defer wg.Done()
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.(*tls.Conn).Handshake()
				c.Close()
			}()
			defer func() { ln.Close(); wg.Wait() }()
			c, err := s.Dial(raft.ServerAddress(ln.Addr().String()), 5*time.Second)
			if err == nil {
				c.Close()
				t.Fatal("dialled a server without the node role")
			}
			if !errors.Is(err, transport.ErrPeerCert) {
				t.Fatalf("err = %v, want transport.ErrPeerCert", err)
			}
		})
	}
}

// TestRaftHandshakeDeadline: a peer that connects to the Raft port and
// sends nothing neither delays a real node's connection nor holds its
// goroutine past the handshake timeout.
func TestRaftHandshakeDeadline(t *testing.T) {
	pki := devPKI(t)
	for _, timeout := range []time.Duration{time.Minute, 100 * time.Millisecond} {
		s, err := listenRaft(raftListen{bind: "127.0.0.1:0", tls: peerTLS(t, pki), timeout: timeout})
		if err != nil {
			t.Fatal(err)
		}
		silent, err := net.Dial("tcp", s.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		if timeout == time.Minute {
			// A node connects and is accepted while the silent peer's
			// handshake is still waiting.
			peer, err := listenRaft(raftListen{bind: "127.0.0.1:0", tls: peerTLS(t, pki)})
			if err != nil {
				t.Fatal(err)
			}
			accepted := make(chan error, 1)
			go func() {
				c, err := s.Accept()
				if err == nil {
					c.Close()
				}
				accepted <- err
			}()
			c, err := peer.Dial(raft.ServerAddress(s.Addr().String()), 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if err := <-accepted; err != nil {
				t.Fatal(err)
			}
			c.Close()
			peer.Close()
		} else {
			// The silent peer is cut at the handshake deadline.
			silent.SetReadDeadline(time.Now().Add(20 * time.Second))
			_, err := silent.Read(make([]byte, 1))
			if ne, ok := err.(net.Error); err == nil || ok && ne.Timeout() {
				t.Fatalf("the silent connection is still open: %v", err)
			}
		}
		silent.Close()
		s.Close() // waits for the handshake goroutines; goleak checks the rest
	}
}

// TestRaftTLSCluster: three nodes with peer TLS, advertised by DNS name
// (localhost:PORT), elect a leader and replicate.
func TestRaftTLSCluster(t *testing.T) {
	if diskRaftPlain {
		t.Skip("FEDZIP_RAFT_PLAIN is set")
	}
	ds := diskCluster(t, 3, testRun(0), fastRaft)
	for _, d := range ds {
		if a := d.node.Address(); !strings.HasPrefix(a, "localhost:") || !d.node.RaftTLS() {
			t.Fatalf("node %s: address %s, TLS %v", d.id, a, d.node.RaftTLS())
		}
	}
	id, token := registerOnLeader(t, func() []*Node { return liveNodes(ds) }, "c")
	waitFor(t, "every replica to know the client", func() bool {
		for _, d := range ds {
			if d.node.FSM().Authenticate(id, token) != nil {
				return false
			}
		}
		return true
	})
}

// TestRaftAdvertiseResolvedAtDial: a node advertised by DNS name comes
// back at another IP address under the same name, as a StatefulSet pod
// does; the cluster finds it there because names are resolved at every
// dial. The test's resolver maps the names.
func TestRaftAdvertiseResolvedAtDial(t *testing.T) {
	pki := devPKI(t)
	var mu sync.Mutex
	hosts := map[string]string{"n0.fedzip.test": "127.0.0.1", "n1.fedzip.test": "127.0.0.1", "n2.fedzip.test": "127.0.0.1"}
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, port, _ := net.SplitHostPort(addr)
		mu.Lock()
		ip, ok := hosts[host]
		mu.Unlock()
		if !ok {
			return nil, errors.New("no such host " + host)
		}
		return (&net.Dialer{}).DialContext(ctx, network, net.JoinHostPort(ip, port))
	}
	base := t.TempDir()
	nodes := make([]*Node, 3)
	ports := make([]string, 3)
	open := func(i int, ip string, bootstrap bool) {
		n, err := Open(Config{ID: strconv.Itoa(i), Dir: filepath.Join(base, strconv.Itoa(i)), RaftAddr: net.JoinHostPort(ip, ports[i]),
			RaftAdvertise: "n" + strconv.Itoa(i) + ".fedzip.test:" + ports[i], RaftTLS: peerTLS(t, pki), raftDial: dial,
			Bootstrap: bootstrap, Run: testRun(0), Raft: fastRaft, Tick: 10 * time.Millisecond, JoinSecret: "s3cret", ApplyTimeout: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		nodes[i] = n
	}
	defer func() {
		for _, n := range nodes {
			if n != nil {
				n.Close()
			}
		}
	}()
	for i := range ports {
		_, ports[i], _ = net.SplitHostPort(freeAddr(t))
	}
	open(0, "127.0.0.1", true)
	for i := 1; i < 3; i++ {
		open(i, "127.0.0.1", false)
		waitFor(t, "a voter added", func() bool { return leaderOf(t, nodes).AddVoter(strconv.Itoa(i), nodes[i].Address()) == nil })
	}
	known := func(n *Node, id round.ClientID, token string) bool { return n.FSM().Authenticate(id, token) == nil }
	id, token := registerOnLeader(t, func() []*Node { return nodes }, "before")
	waitFor(t, "node 2 to replicate", func() bool { return known(nodes[2], id, token) })

	// Node 2 moves to 127.0.0.2 under the same name.
	nodes[2].Close()
	nodes[2] = nil
	mu.Lock()
	hosts["n2.fedzip.test"] = "127.0.0.2"
	mu.Unlock()
	open(2, "127.0.0.2", false)
	id, token = registerOnLeader(t, func() []*Node { return nodes }, "after")
	waitFor(t, "node 2 to replicate at its new address", func() bool { return known(nodes[2], id, token) })
}

// registerOnLeader registers a client through whichever node leads,
// retrying while leadership moves.
func registerOnLeader(t *testing.T, nodes func() []*Node, name string) (round.ClientID, string) {
	t.Helper()
	var id round.ClientID
	var token string
	waitFor(t, "a registration", func() bool {
		l := leaderOf(t, nodes())
		var err error
		id, token, err = l.Register(name, "s3cret", 10)
		return err == nil
	})
	return id, token
}

// TestRaftClearTextRefused: without peer TLS, a Raft address that is not
// loopback is refused unless RaftInsecure is set.
func TestRaftClearTextRefused(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", ":0", "192.0.2.1:7071", "fedzip-0.example:7071"} {
		_, err := Open(Config{ID: "n", Dir: t.TempDir(), RaftAddr: addr, Run: testRun(0)})
		if !errors.Is(err, ErrRaftClearText) {
			t.Errorf("Open on %s without TLS: %v, want ErrRaftClearText", addr, err)
		}
	}
	for addr, want := range map[string]bool{"127.0.0.1:1": true, "[::1]:1": true, "localhost:1": true, "127.0.0.2:1": true,
		"0.0.0.0:1": false, ":1": false, "10.0.0.1:1": false, "example.com:1": false, "[::]:1": false, "junk": false} {
		if httpguard.Loopback(addr) != want {
			t.Errorf("httpguard.Loopback(%q) = %v", addr, !want)
		}
	}
	// With RaftInsecure, on a non-loopback address of this machine.
	var ip net.IP
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() {
				ip = n.IP
				break
			}
		}
	}
	if ip == nil {
		t.Skip("no non-loopback IPv4 address")
	}
	n, err := Open(Config{ID: "n", Dir: t.TempDir(), RaftAddr: net.JoinHostPort(ip.String(), "0"), Run: testRun(0), RaftInsecure: true, Raft: fastRaft})
	if err != nil {
		t.Fatalf("Open with RaftInsecure: %v", err)
	}
	n.Close()
}

// TestRaftAdvertiseInvalid: advertise addresses that others cannot dial.
func TestRaftAdvertiseInvalid(t *testing.T) {
	for _, adv := range []string{"0.0.0.0:7071", "host", "host:0", ":7071", "host:99999"} {
		if _, err := listenRaft(raftListen{bind: "127.0.0.1:0", advertise: adv}); !errors.Is(err, ErrRaftAddress) {
			t.Errorf("advertise %q: %v, want ErrRaftAddress", adv, err)
		}
	}
	if _, err := listenRaft(raftListen{bind: "127.0.0.1:0", tls: &tls.Config{}}); !errors.Is(err, ErrRaftTLS) {
		t.Errorf("a TLS configuration without client authentication: %v, want ErrRaftTLS", err)
	}
}

// BenchmarkRaftStream measures the Raft port's cost over loopback, with
// peer TLS and over plain TCP: bulk bytes through one connection (MB/s, as
// log entries travel) and a new connection with its handshake (dial).
//
//	go test -run x -bench RaftStream ./coordinator/
func BenchmarkRaftStream(b *testing.B) {
	pki := devPKI(b)
	for _, mode := range []string{"tls", "plain"} {
		var cfg *tls.Config
		if mode == "tls" {
			cfg = peerTLS(b, pki)
		}
		s, err := listenRaft(raftListen{bind: "127.0.0.1:0", tls: cfg})
		if err != nil {
			b.Fatal(err)
		}
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { // drain every accepted connection
			defer wg.Done()
			for {
				c, err := s.Accept()
				if err != nil {
					return
				}
				wg.Add(1)
				go func() { defer wg.Done(); io.Copy(io.Discard, c); c.Close() }()
			}
		}()
		addr := raft.ServerAddress(s.Addr().String())
		b.Run(mode+"/bulk", func(b *testing.B) {
			c, err := s.Dial(addr, 5*time.Second)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			buf := make([]byte, 1<<20)
			b.SetBytes(int64(len(buf)))
			for i := 0; i < b.N; i++ {
				if _, err := c.Write(buf); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(mode+"/dial", func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				c, err := s.Dial(addr, 5*time.Second)
				if err != nil {
					b.Fatal(err)
				}
				c.Close()
			}
		})
		s.Close()
		wg.Wait()
	}
}
