package transport

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"strconv"
	"strings"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/fedzip/fedzip/transport/fedzippb"
)

// Metadata keys of the token scheme.
const (
	// AuthorizationKey carries "Bearer <token>".
	AuthorizationKey = "authorization"
	// ClientIDKey carries the client id in decimal.
	ClientIDKey = "fedzip-client-id"
)

// healthPrefix is the method prefix of the standard gRPC health service.
const healthPrefix = "/grpc.health.v1.Health/"

// Authenticator checks a client's credentials. The coordinator implements
// it over its client registry.
//
// Authenticate is called for every RPC that needs a token, concurrently
// from many goroutines, before the handler runs; it must be fast and must
// not block on the network. It returns nil if token is the token issued to
// clientID. Any other answer refuses the RPC: an error carrying a gRPC
// status (for example codes.Unavailable while the registry is not loaded)
// is passed to the client as is, any other error becomes
// codes.Unauthenticated. Compare tokens with EqualSecret.
type Authenticator interface {
	Authenticate(ctx context.Context, clientID uint64, token string) error
}

// AuthenticatorFunc adapts a function to Authenticator.
type AuthenticatorFunc func(ctx context.Context, clientID uint64, token string) error

// Authenticate calls f.
func (f AuthenticatorFunc) Authenticate(ctx context.Context, clientID uint64, token string) error {
	return f(ctx, clientID, token)
}

// NewToken returns a fresh client token: 32 random bytes in hex.
func NewToken() string {
	var b [32]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b[:])
}

// EqualSecret reports whether a and b are equal, in time independent of
// their contents and of the length of either (both are hashed first).
func EqualSecret(a, b string) bool {
	ha, hb := sha256.Sum256([]byte(a)), sha256.Sum256([]byte(b))
	return subtle.ConstantTimeCompare(ha[:], hb[:]) == 1
}

// BlankSecret reports whether a secret is empty or only white space: no
// secret at all.
func BlankSecret(s string) bool { return strings.TrimSpace(s) == "" }

// CheckJoinSecret returns nil if got equals the configured join secret
// want, compared in constant time, and an Unauthenticated status error
// (ErrUnauthenticated) otherwise. An empty want, or one of only white
// space (anyone guesses it), refuses every registration: a federation
// without a join secret is a misconfiguration.
func CheckJoinSecret(got, want string) error {
	if BlankSecret(want) {
		return errorf(codes.Unauthenticated, ErrUnauthenticated, "no join secret configured; registration refused")
	}
	if !EqualSecret(got, want) {
		return errorf(codes.Unauthenticated, ErrUnauthenticated, "wrong join secret")
	}
	return nil
}

// clientIDKey is the context key of the authenticated client id.
type clientIDKey struct{}

// ContextWithClientID returns ctx carrying id as the authenticated client.
// The auth interceptors call it; tests of handlers may call it too.
func ContextWithClientID(ctx context.Context, id uint64) context.Context {
	return context.WithValue(ctx, clientIDKey{}, id)
}

// ClientIDFromContext returns the client id the auth interceptor
// authenticated for this RPC, and false for RPCs that need no token.
func ClientIDFromContext(ctx context.Context) (uint64, bool) {
	id, ok := ctx.Value(clientIDKey{}).(uint64)
	return id, ok
}

// CheckClientID returns nil if id is the authenticated client of ctx. It
// returns a PermissionDenied status error (ErrPermissionDenied) for
// another id and an Unauthenticated one (ErrUnauthenticated) if ctx has no
// authenticated client. Handlers call it on every client_id they receive.
func CheckClientID(ctx context.Context, id uint64) error {
	got, ok := ClientIDFromContext(ctx)
	if !ok {
		return errorf(codes.Unauthenticated, ErrUnauthenticated, "no authenticated client")
	}
	if got != id {
		return errorf(codes.PermissionDenied, ErrPermissionDenied, "client %d may not act as client %d", got, id)
	}
	return nil
}

// IsPublicMethod reports whether fullMethod ("/pkg.Service/Method") is
// served without a token: Register, ClusterStatus and the gRPC health
// service. TLS and mTLS still apply to them.
func IsPublicMethod(fullMethod string) bool {
	switch fullMethod {
	case fedzippb.Coordinator_Register_FullMethodName, fedzippb.Coordinator_ClusterStatus_FullMethodName:
		return true
	}
	return strings.HasPrefix(fullMethod, healthPrefix)
}

// authenticate checks the token metadata of an incoming RPC and returns
// ctx with the client id.
func authenticate(ctx context.Context, a Authenticator) (context.Context, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	auth := md.Get(AuthorizationKey)
	ids := md.Get(ClientIDKey)
	if len(auth) != 1 || len(ids) != 1 {
		return nil, errorf(codes.Unauthenticated, ErrUnauthenticated, "missing %s or %s metadata", AuthorizationKey, ClientIDKey)
	}
	scheme, token, ok := strings.Cut(auth[0], " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || token == "" {
		return nil, errorf(codes.Unauthenticated, ErrUnauthenticated, "%s is not a Bearer token", AuthorizationKey)
	}
	id, err := strconv.ParseUint(ids[0], 10, 64)
	if err != nil {
		return nil, errorf(codes.Unauthenticated, ErrUnauthenticated, "bad %s", ClientIDKey)
	}
	if err := a.Authenticate(ctx, id, token); err != nil {
		if st, ok := status.FromError(err); ok && st.Code() != codes.OK && st.Code() != codes.Unknown {
			return nil, err
		}
		return nil, errorf(codes.Unauthenticated, ErrUnauthenticated, "invalid token for client %d", id)
	}
	return ContextWithClientID(ctx, id), nil
}

// UnaryAuthInterceptor checks the token of every unary RPC for which
// public returns false (IsPublicMethod if public is nil) and puts the
// authenticated client id into the handler's context.
func UnaryAuthInterceptor(a Authenticator, public func(fullMethod string) bool) grpc.UnaryServerInterceptor {
	if public == nil {
		public = IsPublicMethod
	}
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if public(info.FullMethod) {
			return handler(ctx, req)
		}
		ctx, err := authenticate(ctx, a)
		if err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

// StreamAuthInterceptor is UnaryAuthInterceptor for streaming RPCs.
func StreamAuthInterceptor(a Authenticator, public func(fullMethod string) bool) grpc.StreamServerInterceptor {
	if public == nil {
		public = IsPublicMethod
	}
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if public(info.FullMethod) {
			return handler(srv, ss)
		}
		ctx, err := authenticate(ss.Context(), a)
		if err != nil {
			return err
		}
		return handler(srv, &contextStream{ServerStream: ss, ctx: ctx})
	}
}

// contextStream replaces a server stream's context.
type contextStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *contextStream) Context() context.Context { return s.ctx }

// TokenCredentials are a client's per-RPC credentials: they attach the
// token metadata to every call. Before Register has issued a token, they
// attach nothing (Register needs none). Safe for concurrent use; Set may
// be called at any time, for example after Register on the same
// connection.
type TokenCredentials struct {
	mu    sync.RWMutex
	id    uint64
	token string
}

// NewTokenCredentials returns credentials for clientID and token; both
// may be zero and set later.
func NewTokenCredentials(clientID uint64, token string) *TokenCredentials {
	return &TokenCredentials{id: clientID, token: token}
}

// Set replaces the client id and token.
func (c *TokenCredentials) Set(clientID uint64, token string) {
	c.mu.Lock()
	c.id, c.token = clientID, token
	c.mu.Unlock()
}

// Get returns the client id and token.
func (c *TokenCredentials) Get() (clientID uint64, token string) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.id, c.token
}

// metadata returns the token metadata, nil if no token is set.
func (c *TokenCredentials) metadata() map[string]string {
	id, token := c.Get()
	if token == "" {
		return nil
	}
	return map[string]string{
		AuthorizationKey: "Bearer " + token,
		ClientIDKey:      strconv.FormatUint(id, 10),
	}
}

// perRPC adapts TokenCredentials to credentials.PerRPCCredentials for one
// connection: it requires transport security when the connection has TLS.
type perRPC struct {
	c      *TokenCredentials
	secure bool
}

func (p perRPC) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return p.c.metadata(), nil
}

func (p perRPC) RequireTransportSecurity() bool { return p.secure }
