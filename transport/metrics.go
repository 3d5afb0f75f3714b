package transport

import (
	"context"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// numCodes is the number of gRPC status codes (OK … Unauthenticated).
const numCodes = int(codes.Unauthenticated) + 1

// Metrics counts a server's RPCs. The zero value is ready; all fields are
// updated atomically by the interceptors and may be read at any time.
// Bytes are protobuf message sizes, not wire bytes.
type Metrics struct {
	// Started counts RPCs that reached the interceptors.
	Started atomic.Int64
	// Finished counts finished RPCs by status code (index codes.Code;
	// codes beyond Unauthenticated count as Unknown).
	Finished [numCodes]atomic.Int64
	// MsgsReceived and BytesReceived count request messages.
	MsgsReceived, BytesReceived atomic.Int64
	// MsgsSent and BytesSent count response messages.
	MsgsSent, BytesSent atomic.Int64
}

// Count returns the number of RPCs that finished with code c.
func (m *Metrics) Count(c codes.Code) int64 {
	if int(c) >= numCodes {
		c = codes.Unknown
	}
	return m.Finished[c].Load()
}

// Refused returns the number of RPCs that finished with a status other
// than OK.
func (m *Metrics) Refused() int64 {
	var n int64
	for c := 1; c < numCodes; c++ {
		n += m.Finished[c].Load()
	}
	return n
}

func (m *Metrics) finish(err error) {
	c := status.Code(err)
	if int(c) >= numCodes {
		c = codes.Unknown
	}
	m.Finished[c].Add(1)
}

func (m *Metrics) received(msg any) {
	m.MsgsReceived.Add(1)
	if p, ok := msg.(proto.Message); ok {
		m.BytesReceived.Add(int64(proto.Size(p)))
	}
}

func (m *Metrics) sent(msg any) {
	m.MsgsSent.Add(1)
	if p, ok := msg.(proto.Message); ok {
		m.BytesSent.Add(int64(proto.Size(p)))
	}
}

// UnaryServerInterceptor counts unary RPCs. Put it first in the chain so
// that it sees the refusals of later interceptors.
func (m *Metrics) UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		m.Started.Add(1)
		m.received(req)
		resp, err := handler(ctx, req)
		if err == nil {
			m.sent(resp)
		}
		m.finish(err)
		return resp, err
	}
}

// StreamServerInterceptor counts streaming RPCs and their messages. Put it
// first in the chain.
func (m *Metrics) StreamServerInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		m.Started.Add(1)
		err := handler(srv, &metricsStream{ServerStream: ss, m: m})
		m.finish(err)
		return err
	}
}

// metricsStream counts a stream's messages.
type metricsStream struct {
	grpc.ServerStream
	m *Metrics
}

func (s *metricsStream) RecvMsg(msg any) error {
	err := s.ServerStream.RecvMsg(msg)
	if err == nil {
		s.m.received(msg)
	}
	return err
}

func (s *metricsStream) SendMsg(msg any) error {
	err := s.ServerStream.SendMsg(msg)
	if err == nil {
		s.m.sent(msg)
	}
	return err
}
