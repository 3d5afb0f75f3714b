package transport

import (
	"context"
	"net"
	"sync/atomic"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/stats"
)

// Counting the bytes that cross the network, at two levels:
//
//   - RPC bytes (RPCBytesOf): the gRPC messages of one RPC, each with
//     gRPC's 5-byte length prefix, both ways: for an upload the header,
//     every chunk and the acknowledgment; for a download the request, the
//     header and every chunk. What HTTP/2 and TLS add is not in them.
//   - Wire bytes (WireCounter): every byte the server's connections read
//     and wrote, below TLS: TLS records and handshakes, HTTP/2 frames,
//     headers, window updates and pings, and every RPC (task polls,
//     registrations, cluster calls) besides uploads and downloads.
//
// Both are atomic counters updated once per message or per read and
// write: no per-byte work.

// RPCBytes counts the bytes of one RPC's messages, with gRPC framing. Its
// fields are updated atomically by the server's stats handler.
type RPCBytes struct {
	// In are the bytes of the messages the server received, Out of those
	// it sent.
	In, Out atomic.Int64
}

// Total returns In + Out (0 for a nil b).
func (b *RPCBytes) Total() int64 {
	if b == nil {
		return 0
	}
	return b.In.Load() + b.Out.Load()
}

type rpcBytesKey struct{}

// RPCBytesOf returns the counter of the RPC whose handler has ctx, nil if
// the server did not count (a server not made by NewServer). A message's
// bytes are counted before SendMsg or RecvMsg returns.
func RPCBytesOf(ctx context.Context) *RPCBytes {
	b, _ := ctx.Value(rpcBytesKey{}).(*RPCBytes)
	return b
}

// rpcCounter is the stats handler that counts every RPC's message bytes.
type rpcCounter struct{}

func (rpcCounter) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context {
	return context.WithValue(ctx, rpcBytesKey{}, new(RPCBytes))
}

func (rpcCounter) HandleRPC(ctx context.Context, s stats.RPCStats) {
	switch p := s.(type) {
	case *stats.InPayload:
		if b := RPCBytesOf(ctx); b != nil {
			b.In.Add(int64(p.WireLength))
		}
	case *stats.OutPayload:
		if b := RPCBytesOf(ctx); b != nil {
			b.Out.Add(int64(p.WireLength))
		}
	}
}

func (rpcCounter) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }
func (rpcCounter) HandleConn(context.Context, stats.ConnStats)                       {}

// WireCounter counts the bytes a server's connections read and write
// (ServerConfig.Wire), below TLS. It is safe for concurrent use.
type WireCounter struct {
	in, out atomic.Int64
}

// Bytes returns the bytes read (in) and written (out) so far; 0 for a nil
// c.
func (c *WireCounter) Bytes() (in, out int64) {
	if c == nil {
		return 0, 0
	}
	return c.in.Load(), c.out.Load()
}

// creds wraps a server's transport credentials so that the connection
// they handshake over counts its bytes. gRPC keeps the raw connection for
// its socket options (the TCP user timeout of keepalive), which wrapping
// the listener instead would hide.
func (c *WireCounter) creds(inner credentials.TransportCredentials) credentials.TransportCredentials {
	return countingCreds{TransportCredentials: inner, c: c}
}

type countingCreds struct {
	credentials.TransportCredentials
	c *WireCounter
}

func (cc countingCreds) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return cc.TransportCredentials.ServerHandshake(&countingConn{Conn: raw, c: cc.c})
}

func (cc countingCreds) Clone() credentials.TransportCredentials {
	return countingCreds{TransportCredentials: cc.TransportCredentials.Clone(), c: cc.c}
}

// countingConn counts what a connection reads and writes.
type countingConn struct {
	net.Conn
	c *WireCounter
}

func (c *countingConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.c.in.Add(int64(n))
	return n, err
}

func (c *countingConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.c.out.Add(int64(n))
	return n, err
}
