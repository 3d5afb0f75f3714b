package transport

import (
	"crypto/tls"
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	healthgrpc "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/fedzip/fedzip/transport/fedzippb"
)

// Tests on real sockets: TLS, mTLS, and clients that stall.

// listen listens on a random loopback port.
func listen(t *testing.T) net.Listener {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return lis
}

// devCerts writes a fresh set of dev certificates.
func devCerts(t *testing.T) CertFiles {
	t.Helper()
	dir := t.TempDir()
	if err := GenerateDevCerts(dir, []string{"coord.example", "10.1.2.3"}); err != nil {
		t.Fatal(err)
	}
	return DevCertFiles(dir)
}

func TestGenerateDevCerts(t *testing.T) {
	files := devCerts(t)
	for path, mode := range map[string]os.FileMode{
		files.CA: 0o644, files.CAKey: 0o600, files.ServerCert: 0o644,
		files.ServerKey: 0o600, files.ClientCert: 0o644, files.ClientKey: 0o600,
		files.PeerCA: 0o644, files.PeerCAKey: 0o600, files.NodeCert: 0o644, files.NodeKey: 0o600,
	} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != mode {
			t.Errorf("%s has mode %v, want %v", path, fi.Mode().Perm(), mode)
		}
	}
	cfg, err := ServerTLSConfig(files.ServerCert, files.ServerKey, "")
	if err != nil {
		t.Fatal(err)
	}
	leaf := cfg.Certificates[0].Leaf
	for _, h := range []string{"127.0.0.1", "localhost", "coord.example", "10.1.2.3"} {
		if err := leaf.VerifyHostname(h); err != nil {
			t.Errorf("server certificate: %v", err)
		}
	}
	// Only the node certificate carries the node role.
	for path, want := range map[string]bool{files.ServerCert: false, files.ClientCert: false, files.NodeCert: true} {
		cert, err := tls.LoadX509KeyPair(path, map[string]string{files.ServerCert: files.ServerKey, files.ClientCert: files.ClientKey, files.NodeCert: files.NodeKey}[path])
		if err != nil {
			t.Fatal(err)
		}
		if HasNodeRole(cert.Leaf) != want {
			t.Errorf("%s: node role %v, want %v", path, !want, want)
		}
	}
	if err := GenerateDevCerts(filepath.Dir(files.CA), nil); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("second GenerateDevCerts: %v, want fs.ErrExist", err)
	}
}

func TestMTLS(t *testing.T) {
	files := devCerts(t)
	other := devCerts(t)
	serverTLS, err := ServerTLSConfig(files.ServerCert, files.ServerKey, files.CA)
	if err != nil {
		t.Fatal(err)
	}
	f := newFake(testLimits)
	s := serve(t, f, listen(t), ServerConfig{TLS: serverTLS})

	// A client with a certificate from the CA: handshake, token auth, health.
	clientTLS, err := ClientTLSConfig(files.CA, files.ClientCert, files.ClientKey)
	if err != nil {
		t.Fatal(err)
	}
	creds := NewTokenCredentials(0, "")
	conn := s.dial(t, ClientConfig{TLS: clientTLS, Credentials: creds})
	id := register(t, conn, creds)
	ctx := ctxT(t)
	if _, err := fedzippb.NewCoordinatorClient(conn).GetTask(ctx, &fedzippb.GetTaskRequest{ClientId: id}); err != nil {
		t.Fatalf("GetTask over mTLS: %v", err)
	}
	resp, err := healthgrpc.NewHealthClient(conn).Check(ctx, &healthgrpc.HealthCheckRequest{})
	if err != nil || resp.GetStatus() != healthgrpc.HealthCheckResponse_SERVING {
		t.Fatalf("health over mTLS: %v, %v", resp, err)
	}

	// Refused handshakes.
	noCert, err := ClientTLSConfig(files.CA, "", "")
	if err != nil {
		t.Fatal(err)
	}
	otherCert, err := ClientTLSConfig(files.CA, other.ClientCert, other.ClientKey)
	if err != nil {
		t.Fatal(err)
	}
	otherCA, err := ClientTLSConfig(other.CA, files.ClientCert, files.ClientKey)
	if err != nil {
		t.Fatal(err)
	}
	for name, cfg := range map[string]ClientConfig{
		"no client certificate":      {TLS: noCert},
		"certificate of another CA":  {TLS: otherCert},
		"server not trusted":         {TLS: otherCA},
		"plain text to a TLS server": {Insecure: true},
	} {
		t.Run(name, func(t *testing.T) {
			conn, err := Dial(ctx, []string{s.addr}, cfg)
			if err == nil {
				conn.Close()
				t.Fatal("Dial succeeded")
			}
			t.Log(err)
		})
	}
}

func TestServerTLSWithoutClientCert(t *testing.T) {
	files := devCerts(t)
	serverTLS, err := ServerTLSConfig(files.ServerCert, files.ServerKey, "")
	if err != nil {
		t.Fatal(err)
	}
	s := serve(t, newFake(testLimits), listen(t), ServerConfig{TLS: serverTLS})
	clientTLS, err := ClientTLSConfig(files.CA, "", "")
	if err != nil {
		t.Fatal(err)
	}
	creds := NewTokenCredentials(0, "")
	// Two addresses, the first dead: the connection moves on to the second.
	dead := listen(t)
	deadAddr := dead.Addr().String()
	dead.Close()
	conn, err := Dial(ctxT(t), []string{deadAddr, s.addr}, ClientConfig{TLS: clientTLS, Credentials: creds})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	register(t, conn, creds)
}

// TestSlowloris: clients that stall in the handshake or in a stream do
// not block others, and the server shuts down in bounded time.
func TestSlowloris(t *testing.T) {
	files := devCerts(t)
	serverTLS, err := ServerTLSConfig(files.ServerCert, files.ServerKey, files.CA)
	if err != nil {
		t.Fatal(err)
	}
	f := newFake(testLimits)
	s := serve(t, f, listen(t), ServerConfig{TLS: serverTLS, ConnectionTimeout: 200 * time.Millisecond,
		StreamIdleTimeout: time.Hour})

	// A TCP connection that never starts its TLS handshake is closed.
	raw, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()

	clientTLS, err := ClientTLSConfig(files.CA, files.ClientCert, files.ClientKey)
	if err != nil {
		t.Fatal(err)
	}
	creds := NewTokenCredentials(0, "")
	conn := s.dial(t, ClientConfig{TLS: clientTLS, Credentials: creds})
	register(t, conn, creds)
	c := fedzippb.NewCoordinatorClient(conn)
	ctx := ctxT(t)
	stalled, err := c.Submit(ctx) // opens a stream and sends nothing
	if err != nil {
		t.Fatal(err)
	}

	// Others are served meanwhile.
	creds2 := NewTokenCredentials(0, "")
	conn2 := s.dial(t, ClientConfig{TLS: clientTLS, Credentials: creds2})
	id2 := register(t, conn2, creds2)
	if _, err := Upload(ctx, fedzippb.NewCoordinatorClient(conn2), &fedzippb.UpdateHeader{ClientId: id2}, testPayload(1<<20, 8), 32<<10); err != nil {
		t.Fatalf("upload beside a stalled client: %v", err)
	}

	raw.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := raw.Read(make([]byte, 1)); err == nil {
		t.Fatal("read from a stalled connection returned data")
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("the server kept a connection that never completed its handshake")
	}

	// The stalled stream keeps GracefulStop from finishing: Shutdown forces.
	if Shutdown(s.srv, 100*time.Millisecond) {
		t.Fatal("graceful stop finished with a stalled stream open")
	}
	err = stalled.RecvMsg(new(fedzippb.SubmitResponse))
	wantCode(t, err, codes.Unavailable)
}

// TestPeerTLSConfig: a node's own certificate must chain to the peer CA and
// carry the node role, or PeerTLSConfig refuses it; and two nodes of the
// same peer CA complete a handshake while a client certificate of the
// clients' CA does not, from either end.
func TestPeerTLSConfig(t *testing.T) {
	files, other := devCerts(t), devCerts(t)
	for _, tc := range []struct{ name, ca, cert, key string }{
		{"the server certificate (no role)", files.CA, files.ServerCert, files.ServerKey},
		{"a client certificate (no role)", files.CA, files.ClientCert, files.ClientKey},
		{"a node certificate and the clients' CA", files.CA, files.NodeCert, files.NodeKey},
		{"a node certificate of another peer CA", files.PeerCA, other.NodeCert, other.NodeKey},
	} {
		if _, err := PeerTLSConfig(tc.ca, tc.cert, tc.key); !errors.Is(err, ErrPeerCert) {
			t.Errorf("%s: %v, want ErrPeerCert", tc.name, err)
		}
	}
	if _, err := PeerTLSConfig("", files.NodeCert, files.NodeKey); !errors.Is(err, ErrPeerCert) {
		t.Errorf("no CA: %v, want ErrPeerCert", err)
	}
	node, err := PeerTLSConfig(files.PeerCA, files.NodeCert, files.NodeKey)
	if err != nil {
		t.Fatal(err)
	}
	clientCert, err := tls.LoadX509KeyPair(files.ClientCert, files.ClientKey)
	if err != nil {
		t.Fatal(err)
	}
	// Trusts the clients' CA and names the client certificate's CA as
	// its own: the node role is still missing.
	impostor := &tls.Config{Certificates: []tls.Certificate{clientCert}, InsecureSkipVerify: true, MinVersion: tls.VersionTLS13,
		ClientAuth: tls.RequireAnyClientCert}
	for _, tc := range []struct {
		name           string
		server, client *tls.Config
		ok             bool
	}{
		{"node to node", node, node, true},
		{"client certificate to node", node, impostor, false},
		{"node to client certificate", impostor, node, false},
	} {
		err := handshake(t, tc.server, tc.client)
		if (err == nil) != tc.ok {
			t.Errorf("%s: handshake error %v", tc.name, err)
		}
	}
}

// handshake runs a TLS handshake over loopback and returns the first
// error of either end, after one byte from client to server (TLS 1.3
// servers judge the client's certificate after the client is done).
func handshake(t *testing.T, server, client *tls.Config) error {
	t.Helper()
	lis := listen(t)
	defer lis.Close()
	errc := make(chan error, 1)
	go func() {
		c, err := lis.Accept()
		if err != nil {
			errc <- err
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		sc := tls.Server(c, server)
		_, err = sc.Read(make([]byte, 1))
		errc <- err
	}()
	c, err := tls.Dial("tcp", lis.Addr().String(), client)
	if err == nil {
		_, err = c.Write([]byte{1})
		c.Close()
	}
	if serr := <-errc; serr != nil {
		return serr
	}
	return err
}

// TestExplainTLSError dials a real TLS server with the CA of another
// set of certificates: the error says to pass the cluster's CA with --ca
// and keeps its cause. Other errors pass through unchanged.
func TestExplainTLSError(t *testing.T) {
	files, other := devCerts(t), devCerts(t)
	serverTLS, err := ServerTLSConfig(files.ServerCert, files.ServerKey, "")
	if err != nil {
		t.Fatal(err)
	}
	s := serve(t, newFake(testLimits), listen(t), ServerConfig{TLS: serverTLS})
	wrongCA, err := ClientTLSConfig(other.CA, "", "")
	if err != nil {
		t.Fatal(err)
	}
	_, err = Dial(ctxT(t), []string{s.addr}, ClientConfig{TLS: wrongCA})
	if err == nil {
		t.Fatal("Dial trusted a server of another CA")
	}
	explained := ExplainTLSError(err)
	if !errors.Is(explained, ErrUnknownAuthority) || !strings.Contains(explained.Error(), "--ca FILE") ||
		!strings.Contains(explained.Error(), err.Error()) || status.Code(explained) != status.Code(err) {
		t.Fatalf("ExplainTLSError(%v) = %v", err, explained)
	}
	if again := ExplainTLSError(explained); again != explained {
		t.Fatalf("explained twice: %v", again)
	}
	// The same server with its own CA: no error; a refused connection is
	// not a TLS error and passes unchanged.
	rightCA, err := ClientTLSConfig(files.CA, "", "")
	if err != nil {
		t.Fatal(err)
	}
	conn, err := Dial(ctxT(t), []string{s.addr}, ClientConfig{TLS: rightCA})
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
	lis := listen(t)
	addr := lis.Addr().String()
	lis.Close()
	_, err = Dial(ctxT(t), []string{addr}, ClientConfig{TLS: rightCA})
	if err == nil || ExplainTLSError(err) != err {
		t.Fatalf("refused connection: %v became %v", err, ExplainTLSError(err))
	}
	if ExplainTLSError(nil) != nil {
		t.Fatal("ExplainTLSError(nil) is not nil")
	}
}
