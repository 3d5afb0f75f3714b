package transport

import (
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Sentinel errors. Functions of this package return them wrapped in an
// error that also carries a gRPC status (see StatusError), so a handler can
// return it as is, a client receives the status code, and local callers can
// still test it with errors.Is. Across the wire only the code and the
// message survive.
var (
	// ErrPayloadTooLarge: a stream announced more bytes than the limit
	// (codes.ResourceExhausted).
	ErrPayloadTooLarge = errors.New("transport: payload too large")
	// ErrChunkTooLarge: one chunk exceeded Limits.MaxChunk, or a stream
	// exceeded its byte budget (codes.ResourceExhausted).
	ErrChunkTooLarge = errors.New("transport: chunk too large")
	// ErrTruncated: a stream ended before it delivered the announced bytes
	// (codes.DataLoss).
	ErrTruncated = errors.New("transport: stream truncated")
	// ErrChecksum: the reassembled payload failed its CRC-32C
	// (codes.DataLoss).
	ErrChecksum = errors.New("transport: checksum mismatch")
	// ErrMalformedStream: a stream broke the chunking rules: no header on
	// the first message, a header on a later one, an empty chunk, or more
	// data than announced (codes.InvalidArgument).
	ErrMalformedStream = errors.New("transport: malformed stream")
	// ErrStreamIdle: a client-streamed RPC sent nothing for longer than the
	// server's idle timeout (codes.DeadlineExceeded).
	ErrStreamIdle = errors.New("transport: stream idle")
	// ErrPeerCert: a node certificate that does not chain to the peer CA
	// or lacks the node role (NodeRoleURI), or a peer TLS configuration
	// that lacks one. Returned by PeerTLSConfig; not a gRPC error.
	ErrPeerCert = errors.New("transport: not a coordinator node certificate")
	// ErrUnknownAuthority: the server's certificate is signed by a CA the
	// client does not trust (ExplainTLSError). Not a gRPC error.
	ErrUnknownAuthority = errors.New("the server's certificate is signed by an unknown authority")
	// ErrStreamSlow: a client-streamed RPC sent less than the server's
	// minimum rate (codes.DeadlineExceeded).
	ErrStreamSlow = errors.New("transport: stream too slow")
	// ErrTooManyUploads: the client, or the server, has as many uploads
	// open as it allows (codes.ResourceExhausted).
	ErrTooManyUploads = errors.New("transport: too many uploads open")
	// ErrTooManyDownloads: the client, or the server, has as many
	// downloads (authenticated server-streamed RPCs) open as it allows
	// (codes.ResourceExhausted).
	ErrTooManyDownloads = errors.New("transport: too many downloads open")
	// ErrDownloadStalled: a client took no message of a server-streamed
	// RPC for longer than the server's idle timeout
	// (codes.DeadlineExceeded).
	ErrDownloadStalled = errors.New("transport: download stalled")
	// ErrUnauthenticated: missing or invalid token, client id or join
	// secret (codes.Unauthenticated).
	ErrUnauthenticated = errors.New("transport: unauthenticated")
	// ErrPermissionDenied: a request names a client other than the
	// authenticated one (codes.PermissionDenied).
	ErrPermissionDenied = errors.New("transport: permission denied")
	// ErrNotLeader: the node is not the Raft leader (codes.Unavailable);
	// see NotLeaderError and LeaderFromError.
	ErrNotLeader = errors.New("transport: not the leader")
	// ErrNoTask: a GetTask long poll ended without a task
	// (codes.DeadlineExceeded); see NoTaskError.
	ErrNoTask = errors.New("transport: no task yet")
	// ErrInternal: a handler panicked (codes.Internal).
	ErrInternal = errors.New("transport: internal error")
	// ErrBadLimits: CheckedLimits was given a parameter count or codec
	// size out of range (a local error; it carries no gRPC status).
	ErrBadLimits = errors.New("transport: sizes out of range for limits")
)

// statusError is an error with a gRPC status that still unwraps to a
// sentinel. grpc-go and status.FromError use its GRPCStatus method.
type statusError struct {
	st  *status.Status
	err error
}

func (e *statusError) Error() string              { return e.err.Error() }
func (e *statusError) Unwrap() error              { return e.err }
func (e *statusError) GRPCStatus() *status.Status { return e.st }

// StatusError returns an error that reports err's message under code to
// gRPC (a handler may return it directly) and unwraps to err, so that
// errors.Is(StatusError(c, err), err) holds. It is how this package maps
// its sentinel errors to status codes; the coordinator may use it for its own.
func StatusError(code codes.Code, err error) error {
	return &statusError{st: status.New(code, err.Error()), err: err}
}

// errorf wraps sentinel with a formatted detail under code.
func errorf(code codes.Code, sentinel error, format string, args ...any) error {
	return StatusError(code, fmt.Errorf("%w: "+format, append([]any{sentinel}, args...)...))
}

// NoTaskError is what a GetTask handler returns when its long poll ends
// without a task for the client: codes.DeadlineExceeded. The client simply
// polls again; see IsNoTask.
func NoTaskError() error {
	return errorf(codes.DeadlineExceeded, ErrNoTask, "poll again")
}

// IsNoTask reports whether err from GetTask means "no task yet, poll
// again": the server's NoTaskError or the client's own deadline expiring
// (both codes.DeadlineExceeded).
func IsNoTask(err error) bool {
	return status.Code(err) == codes.DeadlineExceeded
}
