package transport

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/fedzip/fedzip/transport/fedzippb"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// fake is a small Coordinator: it registers clients, serves one model,
// stores submitted updates and, when leader is set, acts as a follower.
type fake struct {
	fedzippb.UnimplementedCoordinatorServer

	secret string
	lim    Limits
	hold   time.Duration // GetTask long-poll hold
	leader string        // if set, a follower pointing there
	chunk  int           // Download chunk size

	mu      sync.Mutex
	tokens  map[uint64]string
	nextID  uint64
	model   []byte
	updates map[uint64][]byte
	panicky bool
	// onHeader, if set, sees the header of every upload the handler
	// receives (the stream got past the guard's caps).
	onHeader func(*fedzippb.UpdateHeader)
	// onBytes, if set, sees the message bytes of every Download and
	// Submit that succeeded, once its last message went.
	onBytes func(method string, b *RPCBytes)
}

var (
	_ fedzippb.CoordinatorServer = (*fake)(nil)
	_ Authenticator              = (*fake)(nil)
)

func newFake(lim Limits) *fake {
	return &fake{secret: "open sesame", lim: lim, hold: 50 * time.Millisecond, chunk: 32 << 10,
		tokens: map[uint64]string{}, updates: map[uint64][]byte{}}
}

func (f *fake) Authenticate(_ context.Context, id uint64, token string) error {
	f.mu.Lock()
	want, ok := f.tokens[id]
	f.mu.Unlock()
	if !ok || !EqualSecret(token, want) {
		return errors.New("bad token")
	}
	return nil
}

func (f *fake) Register(_ context.Context, req *fedzippb.RegisterRequest) (*fedzippb.RegisterResponse, error) {
	if err := CheckJoinSecret(req.GetJoinSecret(), f.secret); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.nextID++
	tok := NewToken()
	f.tokens[f.nextID] = tok
	return &fedzippb.RegisterResponse{ClientId: f.nextID, Token: tok}, nil
}

func (f *fake) GetTask(ctx context.Context, req *fedzippb.GetTaskRequest) (*fedzippb.Task, error) {
	if err := CheckClientID(ctx, req.GetClientId()); err != nil {
		return nil, err
	}
	if f.leader != "" {
		return nil, NotLeaderError(ctx, f.leader)
	}
	if req.GetHaveVersion() == 0 {
		return &fedzippb.Task{Round: 1, ModelVersion: 1, UploadCodec: "topk=0.01,bits=8",
			Deadline: timestamppb.New(time.Unix(1700000000, 0)), ModelParams: 1000}, nil
	}
	select {
	case <-time.After(f.hold):
		return nil, NoTaskError()
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (f *fake) Download(req *fedzippb.DownloadRequest, stream grpc.ServerStreamingServer[fedzippb.ModelChunk]) error {
	if err := CheckClientID(stream.Context(), req.GetClientId()); err != nil {
		return err
	}
	if f.leader != "" {
		return NotLeaderError(stream.Context(), f.leader)
	}
	f.mu.Lock()
	model := f.model
	f.mu.Unlock()
	err := SendModel(stream.Send, &fedzippb.ModelHeader{Kind: fedzippb.ModelKind_MODEL_KIND_FULL, Version: 1}, model, f.chunk)
	if err == nil && f.onBytes != nil {
		f.onBytes("download", RPCBytesOf(stream.Context()))
	}
	return err
}

func (f *fake) Submit(stream grpc.ClientStreamingServer[fedzippb.UpdateChunk, fedzippb.SubmitResponse]) error {
	ctx := stream.Context()
	h, data, err := RecvUpdate(stream.Recv, f.lim, func(h *fedzippb.UpdateHeader) error {
		if f.onHeader != nil {
			f.onHeader(h)
		}
		return CheckClientID(ctx, h.GetClientId())
	})
	if err != nil {
		return err
	}
	f.mu.Lock()
	_, dup := f.updates[h.GetClientId()]
	f.updates[h.GetClientId()] = data
	n := len(f.updates)
	f.mu.Unlock()
	err = stream.SendAndClose(&fedzippb.SubmitResponse{Accepted: true, Duplicate: dup, Round: h.GetRound(),
		Received: uint32(n), Selected: 10})
	if err == nil && f.onBytes != nil {
		f.onBytes("submit", RPCBytesOf(ctx))
	}
	return err
}

func (f *fake) ClusterStatus(context.Context, *fedzippb.ClusterStatusRequest) (*fedzippb.ClusterStatusResponse, error) {
	f.mu.Lock()
	p := f.panicky
	f.mu.Unlock()
	if p {
		panic("fake: boom")
	}
	return &fedzippb.ClusterStatusResponse{LeaderAddress: f.leader,
		Nodes: []*fedzippb.NodeStatus{{Id: "n1", Role: "leader", Term: 3}}}, nil
}

// testLimits are small so that refusals cost little.
var testLimits = Limits{MaxModelBytes: 8 << 20, MaxUpdateBytes: 4 << 20, MaxChunk: 64 << 10}

// served is a server under test.
type served struct {
	srv     *grpc.Server
	metrics *Metrics
	lis     net.Listener
	addr    string
	dialer  func(context.Context, string) (net.Conn, error)
}

// serve starts f on lis (bufconn if nil) with cfg filled in.
func serve(t testing.TB, f *fake, lis net.Listener, cfg ServerConfig) *served {
	t.Helper()
	s := &served{metrics: cfg.Metrics}
	if s.metrics == nil {
		s.metrics = new(Metrics)
		cfg.Metrics = s.metrics
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Authenticator == nil {
		cfg.Authenticator = f
	}
	if cfg.Limits == (Limits{}) {
		cfg.Limits = f.lim
	}
	if lis == nil {
		bl := bufconn.Listen(1 << 20)
		lis = bl
		s.addr = "bufconn:0"
		s.dialer = func(ctx context.Context, _ string) (net.Conn, error) { return bl.DialContext(ctx) }
		cfg.Insecure = cfg.TLS == nil
	} else {
		s.addr = lis.Addr().String()
	}
	s.lis = lis
	s.srv = NewServer(cfg)
	fedzippb.RegisterCoordinatorServer(s.srv, f)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.srv.Serve(lis)
	}()
	t.Cleanup(func() {
		Shutdown(s.srv, 5*time.Second)
		<-done
	})
	return s
}

// dial connects to s with creds (may be nil).
func (s *served) dial(t *testing.T, cfg ClientConfig) *grpc.ClientConn {
	t.Helper()
	if s.dialer != nil {
		cfg.Dialer = s.dialer
		cfg.Insecure = cfg.TLS == nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := Dial(ctx, []string{s.addr}, cfg)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// register registers a client on conn and returns its credentials.
func register(t *testing.T, conn *grpc.ClientConn, creds *TokenCredentials) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := fedzippb.NewCoordinatorClient(conn).Register(ctx, &fedzippb.RegisterRequest{JoinSecret: "open sesame", Name: "t"})
	if err != nil {
		t.Fatalf("Register: %v", err)
	}
	if len(resp.GetToken()) != 64 {
		t.Fatalf("token %q is not 32 bytes of hex", resp.GetToken())
	}
	creds.Set(resp.GetClientId(), resp.GetToken())
	return resp.GetClientId()
}

// wantCode fails t unless err has code want.
func wantCode(t *testing.T, err error, want codes.Code) {
	t.Helper()
	if got := status.Code(err); got != want {
		t.Fatalf("got %v (%v), want %v", got, err, want)
	}
}

// testPayload returns n deterministic bytes.
func testPayload(n int, seed byte) []byte {
	b := make([]byte, n)
	x := uint32(seed) + 1
	for i := range b {
		x = x*1664525 + 1013904223
		b[i] = byte(x >> 24)
	}
	return b
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}
