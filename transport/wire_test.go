package transport

import (
	"context"
	"sync"
	"testing"

	"google.golang.org/grpc/stats"
	"google.golang.org/protobuf/proto"

	"github.com/fedzip/fedzip/transport/fedzippb"
)

// TestByteCounts: over a real socket, in clear text and over TLS, a
// download's and an upload's RPC bytes are exactly their messages with
// gRPC's 5-byte prefix, both ways; and the wire counter, below TLS, sees
// at least those plus an HTTP/2 frame header per 16 KiB (and with TLS a
// record's 22 bytes more).
func TestByteCounts(t *testing.T) {
	for _, useTLS := range []bool{false, true} {
		name := map[bool]string{false: "clear text", true: "tls"}[useTLS]
		t.Run(name, func(t *testing.T) {
			f := newFake(testLimits)
			f.model = testPayload(300<<10+7, 4)
			var mu sync.Mutex
			seen := map[string][2]int64{} // in, out
			f.onBytes = func(m string, b *RPCBytes) {
				mu.Lock()
				defer mu.Unlock()
				if b == nil {
					t.Errorf("%s: no byte counter in the RPC's context", m)
					return
				}
				seen[m] = [2]int64{b.In.Load(), b.Out.Load()}
			}
			wire := new(WireCounter)
			cfg := ServerConfig{Wire: wire, Insecure: !useTLS}
			client := ClientConfig{Insecure: !useTLS}
			if useTLS {
				files := devCerts(t)
				var err error
				if cfg.TLS, err = ServerTLSConfig(files.ServerCert, files.ServerKey, files.CA); err != nil {
					t.Fatal(err)
				}
				if client.TLS, err = ClientTLSConfig(files.CA, files.ClientCert, files.ClientKey); err != nil {
					t.Fatal(err)
				}
			}
			s := serve(t, f, listen(t), cfg)
			creds := NewTokenCredentials(0, "")
			client.Credentials = creds
			conn := s.dial(t, client)
			id := register(t, conn, creds)
			c := fedzippb.NewCoordinatorClient(conn)
			ctx := ctxT(t)
			req := &fedzippb.DownloadRequest{ClientId: id}
			if _, _, err := DownloadModel(ctx, c, req, testLimits, nil); err != nil {
				t.Fatal(err)
			}
			update := testPayload(100<<10+3, 5)
			uh := &fedzippb.UpdateHeader{ClientId: id, Round: 1, Examples: 60}
			resp, err := Upload(ctx, c, uh, update, 48<<10)
			if err != nil {
				t.Fatal(err)
			}

			// What the messages are, as the server sent and received them.
			var down, up int64
			if err := SendModel(func(m *fedzippb.ModelChunk) error { down += int64(proto.Size(m)) + 5; return nil },
				&fedzippb.ModelHeader{Kind: fedzippb.ModelKind_MODEL_KIND_FULL, Version: 1}, f.model, f.chunk); err != nil {
				t.Fatal(err)
			}
			if err := SendUpdate(func(m *fedzippb.UpdateChunk) error { up += int64(proto.Size(m)) + 5; return nil }, uh, update, 48<<10); err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			d, u := seen["download"], seen["submit"]
			mu.Unlock()
			if got, want := d[0], int64(proto.Size(req))+5; got != want {
				t.Errorf("download in: %d bytes, want the request's %d", got, want)
			}
			if got := d[1]; got != down || got <= int64(len(f.model)) {
				t.Errorf("download out: %d bytes, want the messages' %d (model %d)", got, down, len(f.model))
			}
			if got := u[0]; got != up || got <= int64(len(update)) {
				t.Errorf("upload in: %d bytes, want the messages' %d (update %d)", got, up, len(update))
			}
			if got, want := u[1], int64(proto.Size(resp))+5; got != want {
				t.Errorf("upload out: %d bytes, want the response's %d", got, want)
			}
			perFrame := int64(9)
			if useTLS {
				perFrame += 22
			}
			in, out := wire.Bytes()
			if min := d[1] + perFrame*int64(len(f.model)>>14); out < min {
				t.Errorf("wire out %d bytes, want at least %d", out, min)
			}
			if min := u[0] + perFrame*int64(len(update)>>14); in < min {
				t.Errorf("wire in %d bytes, want at least %d", in, min)
			}
			t.Logf("%s: model %d B: rpc %d B, update %d B: rpc %d B; wire in %d B, out %d B", name, len(f.model), d[1], len(update), u[0], in, out)
		})
	}
}

// BenchmarkRPCCounter is what counting costs an upload of ten chunks: the
// RPC's tag and twelve payload events (header, ten chunks, the
// acknowledgment) with the events gRPC sends besides.
func BenchmarkRPCCounter(b *testing.B) {
	var h rpcCounter
	in, out := &stats.InPayload{WireLength: 32<<10 + 20}, &stats.OutPayload{WireLength: 12}
	begin, end := &stats.Begin{}, &stats.End{}
	b.ReportAllocs()
	for b.Loop() {
		ctx := h.TagRPC(context.Background(), &stats.RPCTagInfo{FullMethodName: fedzippb.Coordinator_Submit_FullMethodName})
		h.HandleRPC(ctx, begin)
		for range 11 {
			h.HandleRPC(ctx, in)
		}
		h.HandleRPC(ctx, out)
		h.HandleRPC(ctx, end)
	}
}
