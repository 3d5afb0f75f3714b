package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthgrpc "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
	"google.golang.org/grpc/status"
)

// DefaultClientKeepalive is a client's keepalive when ClientConfig.Keepalive
// is zero: ping every 30 s, also while idle (long polls, NATs), and give
// up 10 s after an unanswered ping. It complies with
// DefaultEnforcementPolicy.
var DefaultClientKeepalive = keepalive.ClientParameters{
	Time:                30 * time.Second,
	Timeout:             10 * time.Second,
	PermitWithoutStream: true,
}

// ClientConfig configures Dial.
type ClientConfig struct {
	// TLS is the client's TLS configuration (ClientTLSConfig). The server
	// name is set per address from its host. Nil requires Insecure.
	TLS *tls.Config
	// Insecure allows dialling without TLS. For tests and in-process use only.
	Insecure bool
	// Credentials, if not nil, attach the client's token to every RPC.
	// With TLS they refuse to travel over a connection without it.
	Credentials *TokenCredentials
	// Dialer, if not nil, makes the connections (for example bufconn's).
	Dialer func(ctx context.Context, addr string) (net.Conn, error)
	// MaxRecvMsgSize bounds one received message; 0 means DefaultMaxChunk
	// plus MessageOverhead.
	MaxRecvMsgSize int
	// Keepalive: zero means DefaultClientKeepalive.
	Keepalive keepalive.ClientParameters
	// Lazy makes Dial return without contacting any server.
	Lazy bool
}

// Dial returns a connection to the coordinator nodes at addrs
// ("host:port"). The connection uses the first address that accepts it,
// in order, and moves to the next when that node goes away. To follow a
// leader redirect (LeaderFromError), close the connection and Dial again
// with the leader's address first.
//
// Unless cfg.Lazy, Dial waits, for as long as ctx allows, until a node has
// completed the TLS handshake and answered a health check. If every
// address fails (refused, TLS rejected) it returns the error at once, with
// the cause in its message; it does not retry. A node that answers the
// health check with an error other than Unavailable counts as reached.
func Dial(ctx context.Context, addrs []string, cfg ClientConfig) (*grpc.ClientConn, error) {
	if len(addrs) == 0 {
		return nil, errors.New("transport: Dial: no address")
	}
	if cfg.TLS == nil && !cfg.Insecure {
		return nil, errors.New("transport: ClientConfig needs TLS or Insecure")
	}
	if cfg.TLS != nil && cfg.Insecure {
		return nil, errors.New("transport: ClientConfig has both TLS and Insecure")
	}
	if cfg.MaxRecvMsgSize == 0 {
		cfg.MaxRecvMsgSize = DefaultMaxChunk + MessageOverhead
	}
	if cfg.Keepalive == (keepalive.ClientParameters{}) {
		cfg.Keepalive = DefaultClientKeepalive
	}

	state := resolver.State{}
	for _, a := range addrs {
		host, _, err := net.SplitHostPort(a)
		if err != nil {
			return nil, fmt.Errorf("transport: Dial: %w", err)
		}
		state.Addresses = append(state.Addresses, resolver.Address{Addr: a, ServerName: host})
	}
	r := manual.NewBuilderWithScheme("fedzip")
	r.InitialState(state)

	opts := []grpc.DialOption{
		grpc.WithResolvers(r),
		grpc.WithKeepaliveParams(cfg.Keepalive),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(cfg.MaxRecvMsgSize)),
	}
	if cfg.TLS != nil {
		opts = append(opts, grpc.WithTransportCredentials(credentials.NewTLS(cfg.TLS)))
	} else {
		opts = append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))
	}
	if cfg.Credentials != nil {
		opts = append(opts, grpc.WithPerRPCCredentials(perRPC{c: cfg.Credentials, secure: cfg.TLS != nil}))
	}
	if cfg.Dialer != nil {
		opts = append(opts, grpc.WithContextDialer(cfg.Dialer))
	}
	conn, err := grpc.NewClient("fedzip:///coordinator", opts...)
	if err != nil {
		return nil, fmt.Errorf("transport: Dial: %w", err)
	}
	if cfg.Lazy {
		return conn, nil
	}
	_, err = healthgrpc.NewHealthClient(conn).Check(ctx, &healthgrpc.HealthCheckRequest{}, grpc.WaitForReady(false))
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled:
		conn.Close()
		return nil, fmt.Errorf("transport: Dial %v: %w", addrs, err)
	}
	return conn, nil
}
