package transport

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/fedzip/fedzip/transport/fedzippb"
)

// stallParams is the model of BenchmarkStalledUploads: the 2NN on MNIST,
// whose uncompressed update is the 797 KB of issue 12's finding 5.
const stallParams = 199210

// BenchmarkStalledUploads opens 1,000 stalled Submit streams, each on its
// own TCP connection to 127.0.0.1 and each after a header announcing a
// 797 KB update and one byte of it, and reports how much the server's
// memory grew (heap and goroutine stacks, after a GC): MB in all and
// KB/stream accepted. The streams come from another process (this test
// binary re-executed as TestStallLoadGen), so that only the server's
// memory is measured. Cases: 1,000 clients with the caps lifted (the cost
// of a stalled stream itself), 1,000 clients with the default caps, and
// one client opening 1,000 (its cap refuses all but two).
//
//	go test -run x -bench StalledUploads -benchtime 1x ./transport/
func BenchmarkStalledUploads(b *testing.B) {
	for _, tc := range []struct {
		name              string
		clients, streams  int // clients, and streams per client
		maxUploads, perCl int
	}{
		{"clients=1000/caps=off", 1000, 1, 1 << 20, 1 << 20},
		{"clients=1000/caps=default", 1000, 1, 0, 0},
		{"clients=1/streams=1000", 1, 1000, 0, 0},
	} {
		b.Run(tc.name, func(b *testing.B) {
			for b.Loop() {
				benchStalled(b, tc.clients, tc.streams, tc.maxUploads, tc.perCl)
			}
		})
	}
}

func benchStalled(b *testing.B, clients, streams, maxUploads, perClient int) {
	f := newFake(LimitsFor(stallParams, 0))
	for id := uint64(1); id <= uint64(clients); id++ {
		f.tokens[id] = stallToken(id)
	}
	var headers atomic.Int64
	f.onHeader = func(*fedzippb.UpdateHeader) { headers.Add(1) }
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	s := serve(b, f, lis, ServerConfig{Insecure: true, MaxUploads: maxUploads, MaxUploadsPerClient: perClient,
		StreamIdleTimeout: 10 * time.Minute, Logger: nil})
	before := memInUse()
	gen := exec.Command(os.Args[0], "-test.run=^TestStallLoadGen$", "-test.count=1")
	gen.Env = append(os.Environ(), fmt.Sprintf("FEDZIP_STALL=%s,%d,%d", s.addr, clients, streams))
	gen.Stderr = os.Stderr
	in, err := gen.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	out, err := gen.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := gen.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		in.Close()
		gen.Wait()
	}()
	lines := bufio.NewScanner(out)
	for lines.Scan() && !strings.HasPrefix(lines.Text(), "ready") {
	}
	// Every stream is either in its handler (its header arrived) or
	// refused by a cap.
	total := int64(clients * streams)
	deadline := time.Now().Add(time.Minute)
	for headers.Load()+s.metrics.Count(codes.ResourceExhausted) < total {
		if time.Now().After(deadline) {
			b.Fatalf("%d streams accepted and %d refused of %d", headers.Load(), s.metrics.Count(codes.ResourceExhausted), total)
		}
		time.Sleep(10 * time.Millisecond)
	}
	grown := memInUse() - before
	accepted := headers.Load()
	b.ReportMetric(float64(grown)/1e6, "MB")
	b.ReportMetric(float64(grown)/1e3/float64(max(accepted, 1)), "KB/stream")
	b.ReportMetric(float64(accepted), "accepted")
	b.ReportMetric(float64(s.metrics.Count(codes.ResourceExhausted)), "refused")
}

// memInUse is the server process's heap and stack memory in use after a
// collection.
func memInUse() int64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapInuse + m.StackInuse)
}

func stallToken(id uint64) string { return fmt.Sprintf("stall-token-%d", id) }

// TestStallLoadGen is BenchmarkStalledUploads' client process; it does
// nothing unless FEDZIP_STALL=addr,clients,streams is set. It opens
// streams Submit streams for each of clients clients (IDs 1..clients),
// each on its own connection, sends each a header and one byte, prints
// "ready", and holds them until its stdin closes.
func TestStallLoadGen(t *testing.T) {
	env := os.Getenv("FEDZIP_STALL")
	if env == "" {
		t.Skip("the client process of BenchmarkStalledUploads")
	}
	parts := strings.Split(env, ",")
	if len(parts) != 3 {
		t.Fatalf("FEDZIP_STALL=%q", env)
	}
	addr := parts[0]
	clients, _ := strconv.Atoi(parts[1])
	streams, _ := strconv.Atoi(parts[2])
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var conns []*grpc.ClientConn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	var wg sync.WaitGroup
	for id := uint64(1); id <= uint64(clients); id++ {
		for range streams {
			conn, err := Dial(ctx, []string{addr}, ClientConfig{Insecure: true, Credentials: NewTokenCredentials(id, stallToken(id))})
			if err != nil {
				t.Fatal(err)
			}
			conns = append(conns, conn)
			st, err := fedzippb.NewCoordinatorClient(conn).Submit(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if err := st.Send(&fedzippb.UpdateChunk{Header: &fedzippb.UpdateHeader{ClientId: id, TotalBytes: 4 * stallParams}, Data: []byte{1}}); err != nil && err != io.EOF {
				t.Fatal(err)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				st.RecvMsg(new(fedzippb.SubmitResponse)) // refused, or cut when stdin closes
			}()
		}
	}
	fmt.Println("ready")
	io.Copy(io.Discard, os.Stdin)
	cancel()
	wg.Wait()
}
