package coordinator

import (
	"context"
	"encoding/binary"
	"math"
	"net"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	"github.com/fedzip/fedzip/client/remote"
	"github.com/fedzip/fedzip/gradient"
	"github.com/fedzip/fedzip/round"
	"github.com/fedzip/fedzip/transport"
	"github.com/fedzip/fedzip/transport/fedzippb"
)

// TestServiceRefusesBadInput drives the real gRPC service (over bufconn)
// with bad uploads. Each gets its status code, the node stays up, and the
// update accepted before them is still counted after them.
func TestServiceRefusesBadInput(t *testing.T) {
	run := testRun(0)
	run.UploadCodec, run.ProxMu = "topk1", 0.01
	nodes := inmemCluster(t, 1, run)
	node := leaderOf(t, nodes)
	waitFor(t, "init", func() bool { return node.FSM().View().Initialised })
	model, _ := node.FSM().Model()
	n := len(model)
	svc := NewService(node, transport.LimitsFor(n, 0))
	svc.LongPoll = 200 * time.Millisecond
	srv := transport.NewServer(transport.ServerConfig{Insecure: true, Authenticator: svc, Limits: svc.Limits, PublicMethods: ClusterMethods})
	fedzippb.RegisterCoordinatorServer(srv, svc)
	lis := bufconn.Listen(1 << 20)
	go srv.Serve(lis)
	defer transport.Shutdown(srv, time.Second)
	dial := func(creds *transport.TokenCredentials) fedzippb.CoordinatorClient {
		conn, err := transport.Dial(context.Background(), []string{"bufnet:0"}, transport.ClientConfig{Insecure: true, Credentials: creds,
			Dialer: func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return fedzippb.NewCoordinatorClient(conn)
	}
	ctx := context.Background()
	anon := dial(nil)
	if _, err := anon.Register(ctx, &fedzippb.RegisterRequest{JoinSecret: "wrong"}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("wrong join secret: %v", err)
	}
	type cl struct {
		id  uint64
		api fedzippb.CoordinatorClient
	}
	var clients []cl
	for i := 0; i < 4; i++ {
		res, err := anon.Register(ctx, &fedzippb.RegisterRequest{JoinSecret: "s3cret", Name: "c", Capabilities: &fedzippb.Capabilities{Examples: 10}})
		if err != nil {
			t.Fatal(err)
		}
		clients = append(clients, cl{res.GetClientId(), dial(transport.NewTokenCredentials(res.GetClientId(), res.GetToken()))})
	}
	var task *fedzippb.Task
	var me cl
	waitFor(t, "a task", func() bool {
		for _, c := range clients {
			tk, err := c.api.GetTask(ctx, &fedzippb.GetTaskRequest{ClientId: c.id})
			if err == nil && !tk.GetDone() {
				task, me = tk, c
				return true
			}
		}
		return false
	})
	if task.GetProxMu() != 0.01 || task.GetLr() != run.LR || task.GetModelParams() != uint64(n) {
		t.Fatalf("task carries prox mu %v, lr %v, %d params; want %v, %v, %d", task.GetProxMu(), task.GetLr(), task.GetModelParams(), 0.01, run.LR, n)
	}
	spec, _ := gradient.ParseSpec("topk1")
	enc, _ := gradient.NewEncoder(spec, n)
	runID, err := remote.TaskRun(task)
	if err != nil || runID.IsZero() || runID != node.FSM().RunID() {
		t.Fatalf("task names run %v (%v), the run is %v", runID, err, node.FSM().RunID())
	}
	enc.SetRun(runID)
	delta := make([]float32, n)
	for i := range delta {
		delta[i] = float32(i%7) * 1e-3
	}
	good, _, err := enc.Encode(nil, delta, int(task.GetRound()), 1)
	if err != nil {
		t.Fatal(err)
	}
	hdr := func() *fedzippb.UpdateHeader {
		return &fedzippb.UpdateHeader{ClientId: me.id, Round: task.GetRound(), ModelVersion: task.GetModelVersion(), Examples: 10}
	}
	flipped := append([]byte(nil), good...)
	flipped[len(flipped)/2] ^= 0x40
	nan := make([]byte, 0, 4*n)
	for i := 0; i < n; i++ {
		v := float32(0)
		if i == 3 {
			v = float32(math.NaN())
		}
		nan = binary.LittleEndian.AppendUint32(nan, math.Float32bits(v))
	}
	other := clients[0]
	if other.id == me.id {
		other = clients[1]
	}
	cases := []struct {
		name string
		api  fedzippb.CoordinatorClient
		h    *fedzippb.UpdateHeader
		body []byte
		want codes.Code
	}{
		{"garbage", me.api, hdr(), []byte("not an update at all"), codes.InvalidArgument},
		{"bit flip", me.api, hdr(), flipped, codes.InvalidArgument},
		{"NaN (dense)", me.api, hdr(), nan, codes.InvalidArgument},
		{"model version that does not exist", me.api, func() *fedzippb.UpdateHeader { h := hdr(); h.ModelVersion = 999; return h }(), good, codes.FailedPrecondition},
		{"another round", me.api, func() *fedzippb.UpdateHeader { h := hdr(); h.Round = 77; return h }(), good, codes.FailedPrecondition},
		{"impersonation", other.api, hdr(), good, codes.PermissionDenied},
		{"no token", anon, hdr(), good, codes.Unauthenticated},
	}
	sel := node.FSM().View().Selected
	for _, c := range clients {
		if !slices.Contains(sel, round.ClientID(c.id)) {
			h := hdr()
			h.ClientId = c.id
			cases = append(cases, struct {
				name string
				api  fedzippb.CoordinatorClient
				h    *fedzippb.UpdateHeader
				body []byte
				want codes.Code
			}{"not selected", c.api, h, good, codes.FailedPrecondition})
			break
		}
	}
	for _, tc := range cases {
		_, err := transport.Upload(ctx, tc.api, tc.h, tc.body, 0)
		if status.Code(err) != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	if _, err := transport.Upload(ctx, me.api, hdr(), good, 0); err != nil {
		t.Fatal(err)
	}
	// Other bytes after the accepted ones conflict with them.
	delta[0] = 1
	changed, _, err := enc.Encode(nil, delta, int(task.GetRound()), 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := transport.Upload(ctx, me.api, hdr(), changed, 0); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("a different update after the accepted one: %v", err)
	}
	// A replay of the accepted update is acknowledged as a duplicate.
	res, err := transport.Upload(ctx, me.api, hdr(), good, 0)
	if err != nil || !res.GetDuplicate() {
		t.Fatalf("replay: %v %v", res, err)
	}
	if got := node.FSM().View().Received; got != 1 {
		t.Fatalf("%d updates counted after the bad ones, want the 1 accepted", got)
	}
	if _, err := me.api.Download(ctx, &fedzippb.DownloadRequest{ClientId: me.id, WantVersion: 42}); err == nil {
		// Download is a stream: the error arrives on Recv.
		s, _ := me.api.Download(ctx, &fedzippb.DownloadRequest{ClientId: me.id, WantVersion: 42})
		if _, err := s.Recv(); status.Code(err) != codes.FailedPrecondition {
			t.Fatalf("download of a missing version: %v", err)
		}
	}
}
