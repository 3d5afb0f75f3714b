package transport_test

import (
	"context"
	"fmt"
	"log"
	"net"
	"time"

	"github.com/fedzip/fedzip/transport"
	"github.com/fedzip/fedzip/transport/fedzippb"
)

func ExampleLimitsFor() {
	// A 1M-parameter model whose update codec needs at most 90 kB.
	l := transport.LimitsFor(1_000_000, 90_000)
	fmt.Println(l.MaxModelBytes, l.MaxUpdateBytes, l.MaxChunk)
	// Output: 5052672 155536 1048576
}

// coordinator stands for the coordinator's implementation.
type coordinator struct {
	fedzippb.UnimplementedCoordinatorServer
}

func (coordinator) Authenticate(ctx context.Context, clientID uint64, token string) error {
	return nil // look the token up in the client registry; compare with transport.EqualSecret
}

// ExampleNewServer wires a coordinator node and a client over mTLS with
// the development certificates in dir.
func ExampleNewServer() {
	dir := "certs" // made by transport.GenerateDevCerts(dir, nil), i.e. `fedzip dev-certs certs`
	files := transport.DevCertFiles(dir)

	serverTLS, err := transport.ServerTLSConfig(files.ServerCert, files.ServerKey, files.CA)
	if err != nil {
		log.Fatal(err)
	}
	impl := coordinator{}
	metrics := new(transport.Metrics)
	srv := transport.NewServer(transport.ServerConfig{
		TLS:           serverTLS,
		Authenticator: impl,
		Limits:        transport.LimitsFor(1_000_000, 0),
		Metrics:       metrics,
	})
	fedzippb.RegisterCoordinatorServer(srv, impl)
	lis, err := net.Listen("tcp", "127.0.0.1:7443")
	if err != nil {
		log.Fatal(err)
	}
	go srv.Serve(lis)
	defer transport.Shutdown(srv, 10*time.Second)

	clientTLS, err := transport.ClientTLSConfig(files.CA, files.ClientCert, files.ClientKey)
	if err != nil {
		log.Fatal(err)
	}
	creds := transport.NewTokenCredentials(0, "")
	ctx := context.Background()
	conn, err := transport.Dial(ctx, []string{"127.0.0.1:7443"}, transport.ClientConfig{TLS: clientTLS, Credentials: creds})
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	c := fedzippb.NewCoordinatorClient(conn)
	reg, err := c.Register(ctx, &fedzippb.RegisterRequest{JoinSecret: "secret"})
	if err != nil {
		log.Fatal(err)
	}
	creds.Set(reg.GetClientId(), reg.GetToken())
	task, err := c.GetTask(ctx, &fedzippb.GetTaskRequest{ClientId: reg.GetClientId()})
	if addr, ok := transport.LeaderFromError(err); ok {
		log.Printf("redial %s", addr)
	}
	_, _ = task, metrics.Refused()
}
