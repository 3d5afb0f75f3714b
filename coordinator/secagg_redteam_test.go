package coordinator

import (
	"context"
	"crypto/rand"
	"strconv"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/fedzip/fedzip/round"
	"github.com/fedzip/fedzip/runspec"
	"github.com/fedzip/fedzip/secagg"
	"github.com/fedzip/fedzip/transport"
	"github.com/fedzip/fedzip/transport/fedzippb"
)

// TestRedteamSecAggStep attacks the SecAggStep RPC of a node on a real
// socket as a registered client of a secure aggregation round: a request
// under another client's ID, a message that speaks for another client, a
// message beyond the server's chunk limit, a step out of order, garbage,
// and a long poll for a round that is not open. Each is refused with its
// code and costs the cluster nothing durable: no Raft log entry.
func TestRedteamSecAggStep(t *testing.T) {
	run := testRun(0)
	run.Round.PerRound, run.Round.MinClients, run.Round.Deadline = 3, 3, 4*time.Minute
	run.SecAgg = &runspec.SecAgg{Fraction: 0.5, Bits: 8, Clip: 1}
	node := openSolo(t, Config{OpenRegistration: true, Run: run})
	api, _ := serveGRPC(t, node)
	ctx := context.Background()
	var regs []*fedzippb.RegisterResponse
	for i := range 3 {
		res, err := api.Register(ctx, &fedzippb.RegisterRequest{Name: strconv.Itoa(i)})
		if err != nil {
			t.Fatal(err)
		}
		regs = append(regs, res)
	}
	var v View
	waitFor(t, "a secure aggregation round", func() bool {
		for _, r := range regs {
			node.touch(round.ClientID(r.GetClientId()))
		}
		v = node.FSM().View()
		return v.Phase == round.Collecting
	})
	mallory, victim := regs[0], regs[1]
	as := func(r *fedzippb.RegisterResponse) context.Context {
		return metadata.AppendToOutgoingContext(ctx, transport.AuthorizationKey, "Bearer "+r.GetToken(), transport.ClientIDKey, strconv.FormatUint(r.GetClientId(), 10))
	}
	// The victim's real advert, which mallory replays as its own.
	task, err := api.SecAggStep(as(victim), &fedzippb.SecAggStepRequest{ClientId: victim.GetClientId(), Round: uint64(v.Round)})
	if err != nil {
		t.Fatal(err)
	}
	g, err := secagg.NewGraph(secagg.Params{Session: task.GetSession(), IDs: task.GetIds(), K: int(task.GetNeighbours()), T: int(task.GetThreshold()),
		D: int(task.GetDim()), GraphSeed: task.GetGraphSeed()})
	if err != nil {
		t.Fatal(err)
	}
	vc, err := secagg.NewClient(g, victim.GetClientId(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	adv, _ := vc.Advertise()
	advBytes, _ := adv.MarshalBinary()
	masked, _ := (&secagg.MaskedInput{From: mallory.GetClientId()}).MarshalBinary()
	last := node.Raft().LastIndex()
	for _, tc := range []struct {
		name string
		ctx  context.Context
		req  *fedzippb.SecAggStepRequest
		want codes.Code
	}{
		{"another client's ID", as(mallory), &fedzippb.SecAggStepRequest{ClientId: victim.GetClientId(), Round: uint64(v.Round), Message: advBytes}, codes.PermissionDenied},
		{"a message for another client", as(mallory), &fedzippb.SecAggStepRequest{ClientId: mallory.GetClientId(), Round: uint64(v.Round), Message: advBytes}, codes.InvalidArgument},
		{"beyond the chunk limit", as(mallory), &fedzippb.SecAggStepRequest{ClientId: mallory.GetClientId(), Round: uint64(v.Round), Message: make([]byte, 4<<20)}, codes.ResourceExhausted},
		{"beyond the step's bound", as(mallory), &fedzippb.SecAggStepRequest{ClientId: mallory.GetClientId(), Round: uint64(v.Round), Message: make([]byte, 4096)}, codes.InvalidArgument},
		{"a step out of order", as(mallory), &fedzippb.SecAggStepRequest{ClientId: mallory.GetClientId(), Round: uint64(v.Round), Step: SecAggMasked, Message: masked}, codes.FailedPrecondition},
		{"garbage", as(mallory), &fedzippb.SecAggStepRequest{ClientId: mallory.GetClientId(), Round: uint64(v.Round), Message: []byte{1, 2, 3}}, codes.InvalidArgument},
		{"no such step", as(mallory), &fedzippb.SecAggStepRequest{ClientId: mallory.GetClientId(), Round: uint64(v.Round), Step: 9}, codes.InvalidArgument},
		{"another round", as(mallory), &fedzippb.SecAggStepRequest{ClientId: mallory.GetClientId(), Round: uint64(v.Round) + 1}, codes.FailedPrecondition},
		{"no token", ctx, &fedzippb.SecAggStepRequest{ClientId: mallory.GetClientId(), Round: uint64(v.Round)}, codes.Unauthenticated},
	} {
		_, err := api.SecAggStep(tc.ctx, tc.req)
		if status.Code(err) != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	if got := node.Raft().LastIndex(); got != last {
		t.Errorf("the refused requests added %d log entries", got-last)
	}
	// The victim's own advert still goes through, once: nothing the
	// attacker sent took its place.
	if _, err := api.SecAggStep(as(victim), &fedzippb.SecAggStepRequest{ClientId: victim.GetClientId(), Round: uint64(v.Round), Message: advBytes}); err != nil {
		t.Fatalf("the victim's advert: %v", err)
	}
}
