package transport

import (
	"context"
	"errors"
	"io"
	"net"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/fedzip/fedzip/transport/fedzippb"
)

type submitStream = grpc.ClientStreamingClient[fedzippb.UpdateChunk, fedzippb.SubmitResponse]

// stall opens a Submit stream that sends a header announcing total bytes
// with one byte of data, then nothing.
func stall(t *testing.T, ctx context.Context, c fedzippb.CoordinatorClient, id uint64, total uint64) submitStream {
	t.Helper()
	st, err := c.Submit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&fedzippb.UpdateChunk{Header: &fedzippb.UpdateHeader{ClientId: id, TotalBytes: total}, Data: []byte{1}}); err != nil && !errors.Is(err, io.EOF) {
		t.Fatal(err)
	}
	return st
}

// wantRefused waits for st's answer: ResourceExhausted from the caps.
func wantRefused(t *testing.T, st submitStream) {
	t.Helper()
	err := st.RecvMsg(new(fedzippb.SubmitResponse))
	wantCode(t, err, codes.ResourceExhausted)
	if !strings.Contains(err.Error(), ErrTooManyUploads.Error()) {
		t.Fatalf("refused with %v, want the upload cap", err)
	}
}

// TestUploadCaps: a client may hold MaxUploadsPerClient uploads open and
// the server MaxUploads; one more is refused at once with
// ResourceExhausted, not queued, and a slot is free again once a stream
// ends (issue 12, finding 5: 462 stalled upload streams raised memory by
// 860 MB). Real gRPC on 127.0.0.1.
func TestUploadCaps(t *testing.T) {
	f := newFake(testLimits)
	var headers atomic.Int64
	f.onHeader = func(*fedzippb.UpdateHeader) { headers.Add(1) }
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := serve(t, f, lis, ServerConfig{Insecure: true, MaxUploadsPerClient: 2, MaxUploads: 4, StreamIdleTimeout: time.Minute})
	var clients [3]fedzippb.CoordinatorClient
	var ids [3]uint64
	for i := range clients {
		creds := NewTokenCredentials(0, "")
		conn := s.dial(t, ClientConfig{Insecure: true, Credentials: creds})
		ids[i] = register(t, conn, creds)
		clients[i] = fedzippb.NewCoordinatorClient(conn)
	}
	ctx := ctxT(t)
	waitHeaders := func(n int64) {
		t.Helper()
		for headers.Load() < n {
			if ctx.Err() != nil {
				t.Fatalf("%d of %d uploads reached the handler", headers.Load(), n)
			}
			time.Sleep(time.Millisecond)
		}
	}
	aCtx, closeA := context.WithCancel(ctx)
	defer closeA()
	stall(t, aCtx, clients[0], ids[0], 1<<20)
	stall(t, aCtx, clients[0], ids[0], 1<<20)
	waitHeaders(2)
	wantRefused(t, stall(t, ctx, clients[0], ids[0], 1<<20)) // a third of A's
	stall(t, ctx, clients[1], ids[1], 1<<20)
	stall(t, ctx, clients[1], ids[1], 1<<20)
	waitHeaders(4)
	wantRefused(t, stall(t, ctx, clients[2], ids[2], 1<<20)) // a fifth on the server
	if got := s.metrics.Count(codes.ResourceExhausted); got != 2 {
		t.Fatalf("%d refusals counted, want 2", got)
	}
	// A's streams end: their slots serve C.
	closeA()
	for {
		res, err := Upload(ctx, clients[2], &fedzippb.UpdateHeader{ClientId: ids[2]}, []byte("fine"), 0)
		if err == nil && res.GetAccepted() {
			break
		}
		if !errors.Is(err, ErrTooManyUploads) && !strings.Contains(err.Error(), ErrTooManyUploads.Error()) || ctx.Err() != nil {
			t.Fatalf("upload after A's streams ended: %v", err)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestSlowDripCut: a stream that sends a byte just within each idle
// timeout is cut by the minimum rate (issue 12, finding 5: such streams
// lived until the connection aged out). Real gRPC on 127.0.0.1.
func TestSlowDripCut(t *testing.T) {
	f := newFake(testLimits)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	const idle = 200 * time.Millisecond
	s := serve(t, f, lis, ServerConfig{Insecure: true, StreamIdleTimeout: idle, UploadMinRate: 1 << 10})
	creds := NewTokenCredentials(0, "")
	conn := s.dial(t, ClientConfig{Insecure: true, Credentials: creds})
	id := register(t, conn, creds)
	ctx := ctxT(t)
	st := stall(t, ctx, fedzippb.NewCoordinatorClient(conn), id, 1<<20)
	var sent int
	for {
		time.Sleep(idle / 4) // the pace of the drip, not a wait for an event
		if err := st.Send(&fedzippb.UpdateChunk{Data: []byte{2}}); err != nil {
			break // the server ended the call
		}
		if sent++; ctx.Err() != nil {
			t.Fatalf("a stream dripping a byte every %v is still open after %d bytes", idle/4, sent)
		}
	}
	err = st.RecvMsg(new(fedzippb.SubmitResponse))
	wantCode(t, err, codes.DeadlineExceeded)
	if !strings.Contains(err.Error(), ErrStreamSlow.Error()) {
		t.Fatalf("dripping stream ended with %v, want the rate rule", err)
	}
}

// TestRecvAllocatesAsDataArrives: a header announcing a large total with
// one byte of data costs about that byte, not the total (issue 12, finding
// 5: stalled streams each held a buffer of up to 1 MiB).
func TestRecvAllocatesAsDataArrives(t *testing.T) {
	stalled := errors.New("stalled")
	msgs := []*fedzippb.UpdateChunk{{Header: &fedzippb.UpdateHeader{ClientId: 1, TotalBytes: uint64(testLimits.MaxUpdateBytes)}, Data: []byte{1}}}
	recv := func() (*fedzippb.UpdateChunk, error) {
		if len(msgs) == 0 {
			return nil, stalled
		}
		m := msgs[0]
		msgs = msgs[1:]
		return m, nil
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, _, err := RecvUpdate(recv, testLimits, nil)
	runtime.ReadMemStats(&after)
	if !errors.Is(err, stalled) {
		t.Fatal(err)
	}
	if got := after.TotalAlloc - before.TotalAlloc; got > 16<<10 {
		t.Fatalf("a stream that announced %d bytes and sent 1 made the receiver allocate %d bytes", testLimits.MaxUpdateBytes, got)
	}
}
