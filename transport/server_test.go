package transport

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthgrpc "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"

	"github.com/fedzip/fedzip/transport/fedzippb"
)

// Tests on bufconn: the server's behaviour without a network.

func TestAuth(t *testing.T) {
	f := newFake(testLimits)
	s := serve(t, f, nil, ServerConfig{})
	creds := NewTokenCredentials(0, "")
	conn := s.dial(t, ClientConfig{Credentials: creds})
	c := fedzippb.NewCoordinatorClient(conn)
	ctx := ctxT(t)

	// Before registering: no token.
	_, err := c.GetTask(ctx, &fedzippb.GetTaskRequest{ClientId: 1})
	wantCode(t, err, codes.Unauthenticated)

	// Wrong join secret.
	_, err = c.Register(ctx, &fedzippb.RegisterRequest{JoinSecret: "open sesame!"})
	wantCode(t, err, codes.Unauthenticated)

	id := register(t, conn, creds)
	task, err := c.GetTask(ctx, &fedzippb.GetTaskRequest{ClientId: id})
	if err != nil || task.GetRound() != 1 || task.GetDeadline().AsTime().Unix() != 1700000000 {
		t.Fatalf("GetTask = %v, %v", task, err)
	}

	// Long poll that ends without a task.
	_, err = c.GetTask(ctx, &fedzippb.GetTaskRequest{ClientId: id, HaveVersion: 1})
	if !IsNoTask(err) {
		t.Fatalf("long poll: %v, want no task", err)
	}

	// A second client, then impersonation both ways: unary and stream.
	creds2 := NewTokenCredentials(0, "")
	conn2 := s.dial(t, ClientConfig{Credentials: creds2})
	id2 := register(t, conn2, creds2)
	c2 := fedzippb.NewCoordinatorClient(conn2)
	_, err = c2.GetTask(ctx, &fedzippb.GetTaskRequest{ClientId: id})
	wantCode(t, err, codes.PermissionDenied)
	_, err = Upload(ctx, c2, &fedzippb.UpdateHeader{ClientId: id, Round: 1}, []byte("forged"), 0)
	wantCode(t, err, codes.PermissionDenied)
	_, _, err = DownloadModel(ctx, c2, &fedzippb.DownloadRequest{ClientId: id}, testLimits, nil)
	wantCode(t, err, codes.PermissionDenied)

	// Wrong token for a real id; a token of another client; a garbled id.
	for _, bad := range []struct {
		id  uint64
		tok string
	}{{id, NewToken()}, {id, creds2.token}, {id2 + 100, creds2.token}} {
		creds2.Set(bad.id, bad.tok)
		_, err = c2.GetTask(ctx, &fedzippb.GetTaskRequest{ClientId: bad.id})
		wantCode(t, err, codes.Unauthenticated)
		_, err = Upload(ctx, c2, &fedzippb.UpdateHeader{ClientId: bad.id}, []byte("x"), 0)
		wantCode(t, err, codes.Unauthenticated)
	}
	for _, md := range []metadata.MD{
		metadata.Pairs(AuthorizationKey, "Basic abc", ClientIDKey, "1"),
		metadata.Pairs(AuthorizationKey, "Bearer "+creds.token, ClientIDKey, "one"),
		metadata.Pairs(AuthorizationKey, "Bearer "+creds.token),
	} {
		raw := fedzippb.NewCoordinatorClient(s.dial(t, ClientConfig{}))
		_, err = raw.GetTask(metadata.NewOutgoingContext(ctx, md), &fedzippb.GetTaskRequest{ClientId: id})
		wantCode(t, err, codes.Unauthenticated)
	}

	// ClusterStatus and health need no token.
	raw := s.dial(t, ClientConfig{})
	if _, err := fedzippb.NewCoordinatorClient(raw).ClusterStatus(ctx, &fedzippb.ClusterStatusRequest{}); err != nil {
		t.Fatalf("ClusterStatus without token: %v", err)
	}
	if s.metrics.Count(codes.Unauthenticated) < 9 || s.metrics.Count(codes.PermissionDenied) != 3 || s.metrics.Refused() < 12 {
		t.Fatalf("metrics: unauthenticated %d, denied %d, refused %d", s.metrics.Count(codes.Unauthenticated),
			s.metrics.Count(codes.PermissionDenied), s.metrics.Refused())
	}
}

func TestUploadDownloadRoundTrip(t *testing.T) {
	f := newFake(testLimits)
	f.model = testPayload(5<<20+17, 4)
	s := serve(t, f, nil, ServerConfig{})
	creds := NewTokenCredentials(0, "")
	conn := s.dial(t, ClientConfig{Credentials: creds})
	id := register(t, conn, creds)
	c := fedzippb.NewCoordinatorClient(conn)
	ctx := ctxT(t)

	h, model, err := DownloadModel(ctx, c, &fedzippb.DownloadRequest{ClientId: id}, testLimits, func(h *fedzippb.ModelHeader) error {
		if h.GetKind() != fedzippb.ModelKind_MODEL_KIND_FULL {
			return errors.New("not a full model")
		}
		return nil
	})
	if err != nil || !bytes.Equal(model, f.model) || h.GetVersion() != 1 {
		t.Fatalf("download: %v (%d bytes)", err, len(model))
	}

	update := testPayload(3<<20+5, 5)
	resp, err := Upload(ctx, c, &fedzippb.UpdateHeader{ClientId: id, Round: 1, Examples: 600}, update, 48<<10)
	if err != nil || !resp.GetAccepted() || resp.GetDuplicate() || resp.GetRound() != 1 {
		t.Fatalf("upload: %v, %v", resp, err)
	}
	if !bytes.Equal(f.updates[id], update) {
		t.Fatal("server stored a different update")
	}
	resp, err = Upload(ctx, c, &fedzippb.UpdateHeader{ClientId: id, Round: 1}, update, 48<<10)
	if err != nil || !resp.GetDuplicate() {
		t.Fatalf("resubmission: %v, %v", resp, err)
	}
	if s.metrics.BytesReceived.Load() < 2*int64(len(update)) || s.metrics.BytesSent.Load() < int64(len(f.model)) {
		t.Fatalf("metrics bytes: in %d, out %d", s.metrics.BytesReceived.Load(), s.metrics.BytesSent.Load())
	}

	// The client refuses a model above its limit before reading it.
	small := testLimits
	small.MaxModelBytes = 1 << 20
	_, _, err = DownloadModel(ctx, c, &fedzippb.DownloadRequest{ClientId: id}, small, nil)
	wantCode(t, err, codes.ResourceExhausted)
}

// submitRaw opens a Submit stream and sends msgs, then closes it and
// returns the server's answer.
func submitRaw(ctx context.Context, c fedzippb.CoordinatorClient, msgs ...*fedzippb.UpdateChunk) (*fedzippb.SubmitResponse, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.Submit(ctx)
	if err != nil {
		return nil, err
	}
	for _, m := range msgs {
		if err := stream.Send(m); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return nil, err
		}
	}
	return stream.CloseAndRecv()
}

func TestSubmitRefusals(t *testing.T) {
	f := newFake(testLimits)
	s := serve(t, f, nil, ServerConfig{})
	creds := NewTokenCredentials(0, "")
	conn := s.dial(t, ClientConfig{Credentials: creds})
	id := register(t, conn, creds)
	c := fedzippb.NewCoordinatorClient(conn)
	ctx := ctxT(t)
	data := testPayload(200<<10, 6)
	hdr := func(total int, crc uint32) *fedzippb.UpdateHeader {
		return &fedzippb.UpdateHeader{ClientId: id, Round: 1, TotalBytes: uint64(total), Crc32C: crc}
	}
	crc := Checksum(data[:100<<10])
	for _, tc := range []struct {
		name string
		msgs []*fedzippb.UpdateChunk
		code codes.Code
	}{
		{"total over limit", []*fedzippb.UpdateChunk{{Header: hdr(testLimits.MaxUpdateBytes+1, 0)}}, codes.ResourceExhausted},
		// Above MaxChunk but within gRPC's message limit: refused by RecvUpdate.
		{"chunk over MaxChunk", []*fedzippb.UpdateChunk{{Header: hdr(100<<10, crc), Data: data[:100<<10]}}, codes.ResourceExhausted},
		// Above gRPC's message limit (MaxChunk + MessageOverhead): refused by gRPC.
		{"message over gRPC limit", []*fedzippb.UpdateChunk{{Header: hdr(200<<10, Checksum(data)), Data: data}}, codes.ResourceExhausted},
		{"truncated", []*fedzippb.UpdateChunk{{Header: hdr(100<<10, crc), Data: data[:60<<10]}}, codes.DataLoss},
		{"crc mismatch", []*fedzippb.UpdateChunk{{Header: hdr(100<<10, crc+1), Data: data[:50<<10]}, {Data: data[50<<10 : 100<<10]}}, codes.DataLoss},
		{"no header", []*fedzippb.UpdateChunk{{Data: data[:10]}}, codes.InvalidArgument},
		{"empty", nil, codes.DataLoss},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := submitRaw(ctx, c, tc.msgs...)
			wantCode(t, err, tc.code)
		})
	}
	// The node is still up and accepts a good update.
	if _, err := Upload(ctx, c, &fedzippb.UpdateHeader{ClientId: id, Round: 1}, data, 32<<10); err != nil {
		t.Fatalf("good upload after refusals: %v", err)
	}
}

func TestStreamGuardBudget(t *testing.T) {
	f := newFake(testLimits)
	// The fake's own limit is generous; the guard's budget (from the
	// server's Limits) is what stops this stream.
	f.lim.MaxUpdateBytes = 64 << 20
	s := serve(t, f, nil, ServerConfig{Limits: Limits{MaxModelBytes: 1 << 20, MaxUpdateBytes: 256 << 10, MaxChunk: 64 << 10}})
	creds := NewTokenCredentials(0, "")
	conn := s.dial(t, ClientConfig{Credentials: creds})
	id := register(t, conn, creds)
	_, err := Upload(ctxT(t), fedzippb.NewCoordinatorClient(conn), &fedzippb.UpdateHeader{ClientId: id}, testPayload(1<<20, 7), 32<<10)
	wantCode(t, err, codes.ResourceExhausted)
}

func TestStalledStream(t *testing.T) {
	f := newFake(testLimits)
	// Three uploads of one client at once: two stalled, one served. The
	// rate rule is off: with it, the half stream's few bytes allow it
	// idle + a few ms, and whether the idle timer or the rate rule ends it
	// depends on when its header arrived. TestSlowDripCut holds the rate
	// rule; this test holds the idle guard.
	s := serve(t, f, nil, ServerConfig{StreamIdleTimeout: 100 * time.Millisecond, MaxUploadsPerClient: 3, UploadMinRate: -1})
	creds := NewTokenCredentials(0, "")
	conn := s.dial(t, ClientConfig{Credentials: creds})
	id := register(t, conn, creds)
	c := fedzippb.NewCoordinatorClient(conn)
	ctx := ctxT(t)

	// Sends nothing at all.
	stalled, err := c.Submit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Sends a header, then nothing.
	half, err := c.Submit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := half.Send(&fedzippb.UpdateChunk{Header: &fedzippb.UpdateHeader{ClientId: id, TotalBytes: 100}, Data: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	// Meanwhile others are served.
	if _, err := Upload(ctx, c, &fedzippb.UpdateHeader{ClientId: id}, []byte("fine"), 0); err != nil {
		t.Fatalf("upload beside stalled streams: %v", err)
	}
	for _, st := range []grpc.ClientStreamingClient[fedzippb.UpdateChunk, fedzippb.SubmitResponse]{stalled, half} {
		err := st.RecvMsg(new(fedzippb.SubmitResponse))
		wantCode(t, err, codes.DeadlineExceeded)
		if !strings.Contains(err.Error(), ErrStreamIdle.Error()) {
			t.Fatalf("stalled stream ended with %v, want the idle guard", err)
		}
	}
}

func TestHealthAndPanic(t *testing.T) {
	f := newFake(testLimits)
	s := serve(t, f, nil, ServerConfig{})
	conn := s.dial(t, ClientConfig{})
	ctx := ctxT(t)
	hc := healthgrpc.NewHealthClient(conn)
	for _, svc := range []string{"", "fedzip.v1.Coordinator"} {
		resp, err := hc.Check(ctx, &healthgrpc.HealthCheckRequest{Service: svc})
		if err != nil || resp.GetStatus() != healthgrpc.HealthCheckResponse_SERVING {
			t.Fatalf("health %q: %v, %v", svc, resp, err)
		}
	}
	f.mu.Lock()
	f.panicky = true
	f.mu.Unlock()
	c := fedzippb.NewCoordinatorClient(conn)
	_, err := c.ClusterStatus(ctx, &fedzippb.ClusterStatusRequest{})
	wantCode(t, err, codes.Internal)
	if _, err := hc.Check(ctx, &healthgrpc.HealthCheckRequest{}); err != nil {
		t.Fatalf("server down after a panic: %v", err)
	}
}

func TestLeaderRedirect(t *testing.T) {
	// Locally.
	err := NotLeaderError(context.Background(), "10.0.0.2:7443")
	if addr, ok := LeaderFromError(err); !ok || addr != "10.0.0.2:7443" || !errors.Is(err, ErrNotLeader) {
		t.Fatalf("LeaderFromError(local) = %q, %v", addr, ok)
	}
	if _, ok := LeaderFromError(NotLeaderError(context.Background(), "")); ok {
		t.Fatal("leader found in an error without one")
	}
	if _, ok := LeaderFromError(errors.New("other")); ok {
		t.Fatal("leader found in a plain error")
	}

	// Over gRPC, unary and streaming, in the detail and the trailer.
	f := newFake(testLimits)
	f.leader = "10.0.0.3:7443"
	s := serve(t, f, nil, ServerConfig{})
	creds := NewTokenCredentials(0, "")
	conn := s.dial(t, ClientConfig{Credentials: creds})
	id := register(t, conn, creds)
	c := fedzippb.NewCoordinatorClient(conn)
	ctx := ctxT(t)
	var tr metadata.MD
	_, err = c.GetTask(ctx, &fedzippb.GetTaskRequest{ClientId: id}, grpc.Trailer(&tr))
	wantCode(t, err, codes.Unavailable)
	if addr, ok := LeaderFromError(err); !ok || addr != f.leader {
		t.Fatalf("LeaderFromError(unary) = %q, %v from %v", addr, ok, err)
	}
	if got := tr.Get(LeaderKey); len(got) != 1 || got[0] != f.leader {
		t.Fatalf("trailer %s = %v", LeaderKey, got)
	}
	_, _, err = DownloadModel(ctx, c, &fedzippb.DownloadRequest{ClientId: id}, testLimits, nil)
	if addr, ok := LeaderFromError(err); !ok || addr != f.leader {
		t.Fatalf("LeaderFromError(stream) = %q, %v from %v", addr, ok, err)
	}
}
