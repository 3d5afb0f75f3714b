package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthgrpc "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/protobuf/proto"

	"github.com/fedzip/fedzip/transport/fedzippb"
)

// Server defaults, used where a ServerConfig field is zero.
const (
	// DefaultConnectionTimeout bounds a new connection's TLS and HTTP/2
	// handshake.
	DefaultConnectionTimeout = 10 * time.Second
	// DefaultStreamIdleTimeout bounds the wait for each message of a
	// client-streamed RPC.
	DefaultStreamIdleTimeout = 30 * time.Second
	// DefaultMaxConcurrentStreams bounds the RPCs in flight on one connection.
	DefaultMaxConcurrentStreams = 64
	// DefaultMaxHeaderListSize bounds a request's metadata.
	DefaultMaxHeaderListSize = 64 << 10
	// DefaultMaxUploadsPerClient bounds the uploads (client-streamed RPCs)
	// one authenticated client may have open at once: a retry beside the
	// one in flight.
	DefaultMaxUploadsPerClient = 2
	// DefaultMaxUploads bounds the uploads open at once on a server.
	DefaultMaxUploads = 256
	// DefaultUploadMinRate is the least average rate, in bytes per second
	// after the first StreamIdleTimeout, of an upload: a 64 kbit/s link
	// passes, a stream that sends a byte now and then is cut.
	DefaultUploadMinRate = 4 << 10
)

// DefaultServerKeepalive is the server's keepalive when
// ServerConfig.Keepalive is zero: ping idle clients every 30 s, drop them
// 10 s after an unanswered ping, close connections idle (no RPC) for
// 10 min, and age connections out after 30 min with 2 min of grace for
// their RPCs; clients reconnect transparently. The age bounds how long any
// stalled stream can hold resources.
var DefaultServerKeepalive = keepalive.ServerParameters{
	Time:                  30 * time.Second,
	Timeout:               10 * time.Second,
	MaxConnectionIdle:     10 * time.Minute,
	MaxConnectionAge:      30 * time.Minute,
	MaxConnectionAgeGrace: 2 * time.Minute,
}

// DefaultEnforcementPolicy is the server's keepalive enforcement when
// ServerConfig.KeepalivePolicy is zero: clients may ping at most every
// 10 s, also without RPCs in flight (DefaultClientKeepalive complies).
var DefaultEnforcementPolicy = keepalive.EnforcementPolicy{
	MinTime:             10 * time.Second,
	PermitWithoutStream: true,
}

// ServerConfig configures NewServer.
type ServerConfig struct {
	// TLS is the server's TLS configuration (ServerTLSConfig). Nil
	// requires Insecure.
	TLS *tls.Config
	// Insecure allows serving without TLS: tokens then cross the network
	// in clear text. For tests and in-process use only.
	Insecure bool
	// Authenticator checks the token of every non-public RPC. Required.
	Authenticator Authenticator
	// PublicMethods lists full method names served without a token in
	// addition to IsPublicMethod's.
	PublicMethods []string
	// Limits bound message and stream sizes (LimitsFor). Required.
	Limits Limits
	// Metrics, if not nil, counts RPCs.
	Metrics *Metrics
	// Wire, if not nil, counts every byte the server's connections read
	// and write, below TLS (see WireCounter). Every server counts each
	// RPC's message bytes (RPCBytesOf) whatever Wire is.
	Wire *WireCounter
	// Health is the health service to register; nil registers a new one
	// reporting SERVING for "" and "fedzip.v1.Coordinator".
	Health *health.Server
	// Logger receives handler panics; nil means slog.Default().
	Logger *slog.Logger

	// ConnectionTimeout bounds a connection's handshake (anti-slowloris);
	// 0 means DefaultConnectionTimeout.
	ConnectionTimeout time.Duration
	// StreamIdleTimeout bounds the wait for each message of a
	// client-streamed RPC (Submit); the RPC then fails with
	// DeadlineExceeded (ErrStreamIdle). 0 means DefaultStreamIdleTimeout.
	StreamIdleTimeout time.Duration
	// MaxConcurrentStreams bounds RPCs in flight per connection; 0 means
	// DefaultMaxConcurrentStreams.
	MaxConcurrentStreams uint32
	// MaxUploadsPerClient bounds the client-streamed RPCs (Submit) one
	// authenticated client may have open at once, and MaxUploads those of
	// all clients together; one more is refused at once with
	// ResourceExhausted (ErrTooManyUploads), never queued. 0 means
	// DefaultMaxUploadsPerClient and DefaultMaxUploads. Uploads hold what
	// they received until they end: at most MaxUploads × MaxUpdateBytes.
	// The same bounds apply, counted apart, to an authenticated client's
	// server-streamed RPCs (Download; ErrTooManyDownloads), whose every
	// message the client must take within StreamIdleTimeout, and at
	// UploadMinRate on average after it (ErrDownloadStalled).
	MaxUploadsPerClient, MaxUploads int
	// UploadMinRate is the least average rate, in bytes per second, of a
	// client-streamed RPC once StreamIdleTimeout has passed: a stream that
	// has received fewer than UploadMinRate × (elapsed − StreamIdleTimeout)
	// bytes fails with DeadlineExceeded (ErrStreamSlow), so that sending a
	// byte just within each idle timeout no longer holds a stream open.
	// Downloads follow the same rule for the bytes the client has taken
	// (ErrDownloadStalled). 0 means DefaultUploadMinRate; negative turns
	// the rule off.
	UploadMinRate int
	// Keepalive: zero means DefaultServerKeepalive.
	Keepalive keepalive.ServerParameters
	// KeepalivePolicy: zero means DefaultEnforcementPolicy.
	KeepalivePolicy keepalive.EnforcementPolicy
}

// Validate reports whether cfg can make a server.
func (cfg *ServerConfig) Validate() error {
	if cfg.TLS == nil && !cfg.Insecure {
		return errors.New("transport: ServerConfig needs TLS or Insecure")
	}
	if cfg.TLS != nil && cfg.Insecure {
		return errors.New("transport: ServerConfig has both TLS and Insecure")
	}
	if cfg.Authenticator == nil {
		return errors.New("transport: ServerConfig needs an Authenticator")
	}
	if err := cfg.Limits.Validate(); err != nil {
		return err
	}
	if cfg.ConnectionTimeout < 0 || cfg.StreamIdleTimeout < 0 {
		return errors.New("transport: negative timeout in ServerConfig")
	}
	if cfg.MaxUploadsPerClient < 0 || cfg.MaxUploads < 0 {
		return errors.New("transport: negative upload cap in ServerConfig")
	}
	return nil
}

// NewServer returns a gRPC server with cfg's credentials, limits,
// keepalive enforcement, the interceptor chain (metrics, panic recovery,
// token auth, stream guard) and the health service registered. The caller
// registers the Coordinator service (fedzippb.RegisterCoordinatorServer),
// then calls Serve, and stops it with Shutdown. NewServer panics if
// cfg.Validate fails: call it first where cfg comes from user input.
//
// The stream guard refuses a client-streamed RPC beyond the upload caps
// (MaxUploadsPerClient, MaxUploads) with ResourceExhausted, and fails one
// with DeadlineExceeded when no message arrives for StreamIdleTimeout or
// it falls below UploadMinRate, and with ResourceExhausted when it
// receives more than Limits.MaxUpdateBytes plus framing.
func NewServer(cfg ServerConfig) *grpc.Server {
	if err := cfg.Validate(); err != nil {
		panic(err)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.ConnectionTimeout == 0 {
		cfg.ConnectionTimeout = DefaultConnectionTimeout
	}
	if cfg.StreamIdleTimeout == 0 {
		cfg.StreamIdleTimeout = DefaultStreamIdleTimeout
	}
	if cfg.MaxConcurrentStreams == 0 {
		cfg.MaxConcurrentStreams = DefaultMaxConcurrentStreams
	}
	if cfg.MaxUploadsPerClient == 0 {
		cfg.MaxUploadsPerClient = DefaultMaxUploadsPerClient
	}
	if cfg.MaxUploads == 0 {
		cfg.MaxUploads = DefaultMaxUploads
	}
	switch {
	case cfg.UploadMinRate == 0:
		cfg.UploadMinRate = DefaultUploadMinRate
	case cfg.UploadMinRate < 0:
		cfg.UploadMinRate = 0
	}
	if cfg.Keepalive == (keepalive.ServerParameters{}) {
		cfg.Keepalive = DefaultServerKeepalive
	}
	if cfg.KeepalivePolicy == (keepalive.EnforcementPolicy{}) {
		cfg.KeepalivePolicy = DefaultEnforcementPolicy
	}

	public := IsPublicMethod
	if len(cfg.PublicMethods) > 0 {
		extra := make(map[string]bool, len(cfg.PublicMethods))
		for _, m := range cfg.PublicMethods {
			extra[m] = true
		}
		public = func(m string) bool { return extra[m] || IsPublicMethod(m) }
	}

	var unary []grpc.UnaryServerInterceptor
	var stream []grpc.StreamServerInterceptor
	if cfg.Metrics != nil {
		unary = append(unary, cfg.Metrics.UnaryServerInterceptor())
		stream = append(stream, cfg.Metrics.StreamServerInterceptor())
	}
	unary = append(unary, unaryRecover(cfg.Logger), UnaryAuthInterceptor(cfg.Authenticator, public))
	stream = append(stream, streamRecover(cfg.Logger), StreamAuthInterceptor(cfg.Authenticator, public),
		StreamGuard{Idle: cfg.StreamIdleTimeout, Budget: cfg.Limits.streamBudget(), MinRate: int64(cfg.UploadMinRate),
			MaxPerClient: cfg.MaxUploadsPerClient, MaxTotal: cfg.MaxUploads}.Interceptor())

	opts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(cfg.Limits.maxChunk() + MessageOverhead),
		grpc.MaxConcurrentStreams(cfg.MaxConcurrentStreams),
		grpc.InitialWindowSize(WindowSize),
		grpc.InitialConnWindowSize(WindowSize),
		grpc.MaxHeaderListSize(DefaultMaxHeaderListSize),
		grpc.ConnectionTimeout(cfg.ConnectionTimeout),
		grpc.KeepaliveParams(cfg.Keepalive),
		grpc.KeepaliveEnforcementPolicy(cfg.KeepalivePolicy),
		grpc.ChainUnaryInterceptor(unary...),
		grpc.ChainStreamInterceptor(stream...),
		grpc.StatsHandler(rpcCounter{}),
	}
	switch {
	case cfg.Wire != nil && cfg.TLS != nil:
		opts = append(opts, grpc.Creds(cfg.Wire.creds(credentials.NewTLS(cfg.TLS))))
	case cfg.Wire != nil:
		opts = append(opts, grpc.Creds(cfg.Wire.creds(insecure.NewCredentials())))
	case cfg.TLS != nil:
		opts = append(opts, grpc.Creds(credentials.NewTLS(cfg.TLS)))
	}
	srv := grpc.NewServer(opts...)

	h := cfg.Health
	if h == nil {
		h = health.NewServer()
		h.SetServingStatus("", healthgrpc.HealthCheckResponse_SERVING)
		h.SetServingStatus(fedzippb.Coordinator_ServiceDesc.ServiceName, healthgrpc.HealthCheckResponse_SERVING)
	}
	healthgrpc.RegisterHealthServer(srv, h)
	return srv
}

// WindowSize is the HTTP/2 flow-control window of each stream and of each
// connection the server grants. A fixed window replaces gRPC's
// bandwidth-delay estimation, which starts at 64 KiB and sends window
// updates and pings as it grows: with 1 MiB an update of up to 1 MiB needs
// no window update, which saved 7% of the coordinator's CPU per update in
// BenchmarkIngest (M = 1000, four paired runs). It also bounds the unread
// bytes a connection can make the server buffer to 1 MiB, where the
// estimator may grow to 16 MiB.
const WindowSize = 1 << 20

// Shutdown stops srv gracefully: it stops accepting connections and waits
// for RPCs in flight to finish, for at most timeout; then it stops srv
// forcibly, cancelling the RPCs left (long polls, stalled streams). It
// returns true if the graceful stop completed in time. Handlers that can
// wait long (GetTask) should also watch their node's own shutdown signal.
func Shutdown(srv *grpc.Server, timeout time.Duration) bool {
	done := make(chan struct{})
	go func() {
		srv.GracefulStop()
		close(done)
	}()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
		srv.Stop()
		<-done
		return false
	}
}

// unaryRecover turns a handler panic into codes.Internal.
func unaryRecover(log *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
		defer func() {
			if r := recover(); r != nil {
				err = recovered(log, info.FullMethod, r)
			}
		}()
		return handler(ctx, req)
	}
}

// streamRecover turns a handler panic into codes.Internal.
func streamRecover(log *slog.Logger) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
		defer func() {
			if r := recover(); r != nil {
				err = recovered(log, info.FullMethod, r)
			}
		}()
		return handler(srv, ss)
	}
}

func recovered(log *slog.Logger, method string, r any) error {
	log.Error("transport: handler panicked", "method", method, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
	return errorf(codes.Internal, ErrInternal, "handler failed")
}

// StreamGuardInterceptor guards client-streamed RPCs with an idle timeout
// and a byte budget only: StreamGuard{Idle: idle, Budget: budget}.
func StreamGuardInterceptor(idle time.Duration, budget int64) grpc.StreamServerInterceptor {
	return StreamGuard{Idle: idle, Budget: budget}.Interceptor()
}

// StreamGuard bounds client-streamed RPCs (uploads) in number, time and
// size. NewServer installs one after the auth interceptor, which is what
// makes the client of a stream known (ClientIDFromContext).
type StreamGuard struct {
	// Idle bounds the wait for each message: the RPC fails with
	// DeadlineExceeded (ErrStreamIdle).
	Idle time.Duration
	// Budget bounds the bytes of all messages of one RPC: beyond, it
	// fails with ResourceExhausted (ErrChunkTooLarge).
	Budget int64
	// MinRate, if positive, is the least average rate in bytes per
	// second once Idle has passed: a stream that has received fewer than
	// MinRate × (elapsed − Idle) bytes fails with DeadlineExceeded
	// (ErrStreamSlow). So no stream lives longer than Idle +
	// Budget/MinRate.
	MinRate int64
	// MaxPerClient and MaxTotal, if positive, bound the RPCs open at once
	// per authenticated client and in all; one more is refused before its
	// handler runs with ResourceExhausted (ErrTooManyUploads).
	MaxPerClient, MaxTotal int
}

// Interceptor returns the interceptor that applies g. Each call makes
// its own count of open streams. After a failure every later RecvMsg
// returns the same error; the handler must return, which ends the stream.
//
// Server-streamed RPCs of an authenticated client (downloads) are counted
// apart from uploads, under the same MaxPerClient and MaxTotal
// (ErrTooManyDownloads), and each message must be taken by the client
// within Idle: a SendMsg blocked longer by a client that does not read
// fails with DeadlineExceeded (ErrDownloadStalled), and so do the later
// ones. Other server-streamed RPCs (the health service) pass through.
func (g StreamGuard) Interceptor() grpc.StreamServerInterceptor {
	open := &uploadCount{perClient: make(map[uint64]int), what: "uploads", err: ErrTooManyUploads}
	downloads := &uploadCount{perClient: make(map[uint64]int), what: "downloads", err: ErrTooManyDownloads}
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if !info.IsClientStream {
			id, ok := ClientIDFromContext(ss.Context())
			if !ok || !info.IsServerStream {
				return handler(srv, ss)
			}
			if err := downloads.acquire(id, g.MaxPerClient, g.MaxTotal); err != nil {
				return err
			}
			defer downloads.release(id)
			sg := &sendGuard{ServerStream: ss, idle: g.Idle, minRate: g.MinRate, start: time.Now()}
			defer sg.stop()
			return handler(srv, sg)
		}
		id, _ := ClientIDFromContext(ss.Context())
		if err := open.acquire(id, g.MaxPerClient, g.MaxTotal); err != nil {
			return err
		}
		defer open.release(id)
		gs := &guardStream{ServerStream: ss, idle: g.Idle, budget: g.Budget, minRate: g.MinRate, start: time.Now()}
		defer gs.stop()
		return handler(srv, gs)
	}
}

// uploadCount counts open streams of one kind (what: uploads or
// downloads), per client and in all; err is the sentinel of a refusal.
type uploadCount struct {
	mu        sync.Mutex
	total     int
	perClient map[uint64]int // only clients with open streams
	what      string
	err       error
}

func (c *uploadCount) acquire(id uint64, maxPer, maxTotal int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if maxTotal > 0 && c.total >= maxTotal {
		return errorf(codes.ResourceExhausted, c.err, "the server has %d %s open, its limit", c.total, c.what)
	}
	if maxPer > 0 && c.perClient[id] >= maxPer {
		return errorf(codes.ResourceExhausted, c.err, "client %d has %d %s open, its limit", id, c.perClient[id], c.what)
	}
	c.total++
	c.perClient[id]++
	return nil
}

func (c *uploadCount) release(id uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.total--
	if c.perClient[id]--; c.perClient[id] <= 0 {
		delete(c.perClient, id)
	}
}

// guardStream is a server stream whose RecvMsg is bounded in time and in
// total size. The underlying RecvMsg runs in a goroutine so that a stalled
// client cannot block the handler; when the handler returns, gRPC cancels
// the stream and that goroutine's RecvMsg returns.
type guardStream struct {
	grpc.ServerStream
	idle     time.Duration
	budget   int64
	minRate  int64
	start    time.Time
	received int64
	err      error       // sticky failure
	timer    *time.Timer // reused across RecvMsg calls
}

// wait returns how long the next message may take, and whether the rate
// rule (rather than the idle timeout) sets it.
func (g *guardStream) wait() (time.Duration, bool) {
	w := rateWait(g.idle, g.minRate, g.received, g.start)
	return w, w < g.idle
}

// rateWait is how long a stream that has moved n bytes since start may
// wait for its next message: the idle timeout, or less where the rate rule
// n >= minRate × (elapsed − idle) ends it sooner (it may run until start +
// idle + n/minRate). Before any byte, and without a minimum rate, the idle
// timeout is the rule. A result ≤ 0 means the stream is too slow already.
func rateWait(idle time.Duration, minRate, n int64, start time.Time) time.Duration {
	if minRate <= 0 || n <= 0 {
		return idle
	}
	allowed := idle + time.Duration(n)*time.Second/time.Duration(minRate)
	return min(idle, allowed-time.Since(start))
}

func (g *guardStream) slow() error {
	return errorf(codes.DeadlineExceeded, ErrStreamSlow, "%d bytes in %v, below %d bytes/s after the first %v",
		g.received, time.Since(g.start).Round(time.Millisecond), g.minRate, g.idle)
}

func (g *guardStream) RecvMsg(m any) error {
	if g.err != nil {
		return g.err
	}
	wait, slow := g.wait()
	if wait <= 0 {
		g.err = g.slow()
		return g.err
	}
	err, timedOut := within(&g.timer, wait, func() error { return g.ServerStream.RecvMsg(m) })
	switch {
	case timedOut && slow:
		g.err = g.slow()
		return g.err
	case timedOut:
		g.err = errorf(codes.DeadlineExceeded, ErrStreamIdle, "no message for %v", g.idle)
		return g.err
	case err != nil:
		return err
	}
	if p, ok := m.(proto.Message); ok {
		g.received += int64(proto.Size(p))
	}
	if g.received > g.budget {
		g.err = errorf(codes.ResourceExhausted, ErrChunkTooLarge, "stream exceeds %d bytes", g.budget)
		return g.err
	}
	return nil
}

// within runs op in a goroutine and waits for it at most wait, on the
// timer *t (made on first use, then reset). timedOut reports that wait
// passed first; op then goes on running until gRPC ends the stream, which
// it does when the handler returns on the guard's error.
func within(t **time.Timer, wait time.Duration, op func() error) (err error, timedOut bool) {
	done := make(chan error, 1)
	go func() { done <- op() }()
	if *t == nil {
		*t = time.NewTimer(wait)
	} else {
		(*t).Reset(wait)
	}
	select {
	case err := <-done:
		(*t).Stop()
		return err, false
	case <-(*t).C:
		return nil, true
	}
}

func (g *guardStream) stop() {
	if g.timer != nil {
		g.timer.Stop()
	}
}

// sendGuard is a server stream whose SendMsg must complete within idle,
// and, with minRate, whose client must have taken minRate × (elapsed −
// idle) bytes: a client that stops reading fills its flow-control window,
// and SendMsg then blocks until gRPC cancels the stream. The blocked
// SendMsg runs in a goroutine; when the handler returns on the timeout,
// gRPC ends the stream and that SendMsg returns.
type sendGuard struct {
	grpc.ServerStream
	idle    time.Duration
	minRate int64
	start   time.Time
	sent    int64
	err     error // sticky failure
	timer   *time.Timer
}

func (g *sendGuard) SendMsg(m any) error {
	if g.err != nil {
		return g.err
	}
	if g.idle <= 0 {
		return g.ServerStream.SendMsg(m)
	}
	wait := rateWait(g.idle, g.minRate, g.sent, g.start) // the uploads' rate rule
	if wait <= 0 {
		g.err = g.slow()
		return g.err
	}
	err, timedOut := within(&g.timer, wait, func() error { return g.ServerStream.SendMsg(m) })
	switch {
	case timedOut && wait < g.idle:
		g.err = g.slow()
		return g.err
	case timedOut:
		g.err = errorf(codes.DeadlineExceeded, ErrDownloadStalled, "the client took no message for %v", g.idle)
		return g.err
	}
	if p, ok := m.(proto.Message); ok && err == nil {
		g.sent += int64(proto.Size(p))
	}
	return err
}

func (g *sendGuard) slow() error {
	return errorf(codes.DeadlineExceeded, ErrDownloadStalled, "the client took %d bytes in %v, below %d bytes/s after the first %v",
		g.sent, time.Since(g.start).Round(time.Millisecond), g.minRate, g.idle)
}

func (g *sendGuard) stop() {
	if g.timer != nil {
		g.timer.Stop()
	}
}
