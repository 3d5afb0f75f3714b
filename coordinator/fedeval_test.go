package coordinator

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/fedzip/fedzip/round"
	"github.com/fedzip/fedzip/transport"
	"github.com/fedzip/fedzip/transport/fedzippb"
)

// TestSubmitEvalEncoding: a submit with a report has its own type byte
// and round-trips; a submit without one encodes as it always did, so that
// old logs replay the same.
func TestSubmitEvalEncoding(t *testing.T) {
	plain := command{Type: cmdSubmit, Now: 4, Round: 1, Client: 2, Examples: 3, TrainLoss: 0.5, Payload: []byte{1, 2, 3}}
	if b := plain.encode(); b[0] != byte(cmdSubmit) {
		t.Fatalf("a plain submit is encoded with type %d", b[0])
	}
	with := plain
	with.Eval = &round.EvalReport{Examples: 9, Loss: 0.25, Accuracy: 0.75}
	b := with.encode()
	if b[0] != byte(cmdSubmitEval) || !bytes.Equal(b[1:len(plain.encode())], plain.encode()[1:]) {
		t.Fatalf("a submit with a report encodes as %x", b)
	}
	d, err := decodeCommand(b)
	if err != nil || d.Type != cmdSubmit || d.Eval == nil || *d.Eval != *with.Eval || !bytes.Equal(d.encode(), b) {
		t.Fatalf("decoded %+v, %v", d, err)
	}
	if _, err := decodeCommand(b[:len(b)-1]); err == nil {
		t.Fatal("a truncated report decoded")
	}
	if d, err := decodeCommand(plain.encode()); err != nil || d.Eval != nil {
		t.Fatalf("a plain submit decoded with a report: %+v, %v", d, err)
	}
}

// TestFederatedEvalRefusesLiars runs a single-node coordinator (Raft on
// an on-disk log, gRPC on 127.0.0.1) with federated evaluation every 2
// rounds. In round 1 a selected client's report with accuracy 2, a NaN
// loss, more examples than it declared or 2⁴⁰ examples, and an outsider's
// report, are refused before the log: the Raft log does not grow and the
// round counts nothing. A second, different report is refused too. The
// round closes with the weighted mean of the two honest reports, computed
// here by hand. Round 2 does not evaluate: its task says so, and a report
// is refused.
func TestFederatedEvalRefusesLiars(t *testing.T) {
	run := testRun(0)
	run.Round.PerRound, run.Round.MinClients, run.Round.Deadline = 2, 2, 0
	run.FedEvalEvery = 2
	node, err := Open(Config{ID: "n1", Dir: filepath.Join(t.TempDir(), "n1"), RaftAddr: "127.0.0.1:0", Bootstrap: true, Run: run,
		JoinSecret: "s3cret", Tick: 10 * time.Millisecond, Raft: fastRaft})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { node.Close() })
	waitFor(t, "init", func() bool { return node.IsLeader() && node.FSM().Progress().Initialised })
	api, _ := serveGRPC(t, node)
	ctx := context.Background()
	const declared = 50
	type who struct {
		id  round.ClientID
		ctx context.Context
	}
	var all []who
	for _, name := range []string{"a", "b", "c"} {
		res, err := api.Register(ctx, &fedzippb.RegisterRequest{JoinSecret: "s3cret", Name: name, Capabilities: &fedzippb.Capabilities{Examples: declared}})
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, who{round.ClientID(res.GetClientId()), metadata.AppendToOutgoingContext(ctx, transport.AuthorizationKey, "Bearer "+res.GetToken(),
			transport.ClientIDKey, strconv.FormatUint(res.GetClientId(), 10))})
	}
	openRound := func(r int) View {
		var v View
		waitFor(t, "round "+strconv.Itoa(r), func() bool {
			for _, c := range all {
				node.touch(c.id)
			}
			v = node.FSM().View()
			return v.Phase == round.Collecting && v.Round == r
		})
		return v
	}
	v := openRound(1)
	var sel, out []who
	for _, c := range all {
		if node.FSM().Awaits(c.id) {
			sel = append(sel, c)
		} else {
			out = append(out, c)
		}
	}
	if len(sel) != 2 || len(out) != 1 {
		t.Fatalf("selected %v of %v", v.Selected, all)
	}
	delta := make([]float32, node.FSM().Params())
	for i := range delta {
		delta[i] = 0.001
	}
	payload := clientPayload(t, node.FSM(), 1, delta)
	submit := func(c who, r int, e *fedzippb.EvalReport) (*fedzippb.SubmitResponse, error) {
		h := &fedzippb.UpdateHeader{ClientId: uint64(c.id), Round: uint64(r), ModelVersion: uint64(r - 1), Examples: 10, Eval: e}
		return transport.Upload(c.ctx, api, h, payload, 0)
	}
	honest := [2]*fedzippb.EvalReport{{Examples: 20, Loss: 0.5, Accuracy: 0.75}, {Examples: 30, Loss: 1.5, Accuracy: 0.25}}
	for _, tc := range []struct {
		what string
		e    *fedzippb.EvalReport
	}{
		{"accuracy 2", &fedzippb.EvalReport{Examples: 20, Loss: 0.5, Accuracy: 2}},
		{"accuracy 1e9", &fedzippb.EvalReport{Examples: 20, Loss: 0.5, Accuracy: 1e9}},
		{"loss NaN", &fedzippb.EvalReport{Examples: 20, Loss: math.NaN(), Accuracy: 0.5}},
		{"negative loss", &fedzippb.EvalReport{Examples: 20, Loss: -1, Accuracy: 0.5}},
		{"no examples", &fedzippb.EvalReport{Loss: 0.5, Accuracy: 0.5}},
		{"more examples than declared", &fedzippb.EvalReport{Examples: declared + 1, Loss: 0.5, Accuracy: 0.5}},
		{"2^40 examples", &fedzippb.EvalReport{Examples: 1 << 40, Loss: 0.5, Accuracy: 0.5}},
	} {
		checkRefused(t, node, tc.what, func() error { _, err := submit(sel[0], 1, tc.e); return err }, codes.InvalidArgument, 0)
	}
	checkRefused(t, node, "a client the round did not select", func() error { _, err := submit(out[0], 1, honest[0]); return err }, codes.FailedPrecondition, 0)
	if _, err := submit(sel[0], 1, honest[0]); err != nil {
		t.Fatal(err)
	}
	checkRefused(t, node, "a second, different report", func() error { _, err := submit(sel[0], 1, honest[1]); return err }, codes.FailedPrecondition, 1)
	checkRefused(t, node, "the update again without its report", func() error { _, err := submit(sel[0], 1, nil); return err }, codes.FailedPrecondition, 1)
	if res, err := submit(sel[0], 1, honest[0]); err != nil || !res.GetDuplicate() {
		t.Fatalf("the same report again: %v, %v", res, err)
	}
	if _, err := submit(sel[1], 1, honest[1]); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "round 1 to close", func() bool { return node.FSM().Progress().Version >= 1 })
	got := node.FSM().Progress().LastClosed.Eval
	want := round.EvalSummary{Version: 0, Reports: 2, Examples: 50, Loss: (20*0.5 + 30*1.5) / 50.0, Accuracy: (20*0.75 + 30*0.25) / 50.0}
	if got == nil || *got != want {
		t.Fatalf("round 1's evaluation %+v, want %+v", got, want)
	}

	v = openRound(2)
	if tm := taskMessage(Task{Round: v.Round, Config: v.Config}, 10); tm.GetEvaluate() {
		t.Fatal("round 2's task asks for an evaluation")
	}
	if tm := taskMessage(Task{Round: 3, Config: v.Config}, 10); !tm.GetEvaluate() {
		t.Fatal("round 3's task does not ask for an evaluation")
	}
	var s2 who
	for _, c := range all {
		if node.FSM().Awaits(c.id) {
			s2 = c
		}
	}
	payload = clientPayload(t, node.FSM(), 2, delta)
	checkRefused(t, node, "a report in a round that does not evaluate", func() error { _, err := submit(s2, 2, honest[0]); return err }, codes.InvalidArgument, 0)
	if _, err := submit(s2, 2, nil); err != nil {
		t.Fatalf("the update without a report: %v", err)
	}
}

// checkRefused runs submit, which must fail with want, and requires that
// the Raft log did not grow and the open round still counts received
// updates.
func checkRefused(t *testing.T, node *Node, what string, submit func() error, want codes.Code, received int) {
	t.Helper()
	before := node.Raft().LastIndex()
	if err := submit(); status.Code(err) != want {
		t.Fatalf("%s: %v, want %v", what, err, want)
	}
	if after := node.Raft().LastIndex(); after != before {
		t.Fatalf("%s: the refusal cost Raft entries %d..%d", what, before+1, after)
	}
	if p := node.FSM().Progress(); p.Received != received {
		t.Fatalf("%s: the round counts %d updates, want %d", what, p.Received, received)
	}
}

// TestEvalReportBytes measures what a report adds: to the update's
// header on the wire, and to its Raft entry. A separate evaluate-only
// task would cost a model download per evaluating client instead.
func TestEvalReportBytes(t *testing.T) {
	h := &fedzippb.UpdateHeader{ClientId: 7, Round: 120, ModelVersion: 119, Examples: 540, TotalBytes: 4000, Crc32C: 0xdeadbeef, TrainLoss: 0.3}
	plain := proto.Size(h)
	h.Eval = &fedzippb.EvalReport{Examples: 60, Loss: 0.2345, Accuracy: 0.95}
	wire := proto.Size(h) - plain
	c := command{Type: cmdSubmit, Now: time.Now().UnixNano(), Round: 120, Client: 7, Examples: 540, TrainLoss: 0.3, Payload: make([]byte, 4000)}
	before := len(c.encode())
	c.Eval = &round.EvalReport{Examples: 60, Loss: 0.2345, Accuracy: 0.95}
	entry := len(c.encode()) - before
	t.Logf("a report adds %d bytes to the update header and %d bytes to its Raft entry", wire, entry)
	if wire > 32 || entry > 32 {
		t.Fatalf("a report costs %d bytes on the wire, %d in the log", wire, entry)
	}
}

// TestEvalReportsSurviveSnapshots: a replica restored from a snapshot
// taken mid-round holds the reports accepted before it, and closes the
// round with the same evaluation as a replica that applied the whole log.
func TestEvalReportsSurviveSnapshots(t *testing.T) {
	cfg := strings.Replace(fuzzRunConfig, `"upload_codec":"none"`, `"upload_codec":"none","fed_eval_every":1`, 1)
	log := []command{
		{Type: cmdInit, Now: 1, Config: []byte(cfg)},
		{Type: cmdRegister, Now: 2, Name: "a", TokenHash: []byte{1}, Examples: 5},
		{Type: cmdRegister, Now: 2, Name: "b", TokenHash: []byte{2}, Examples: 9},
		{Type: cmdOpen, Now: 3, Candidates: []round.ClientID{1, 2}},
		{Type: cmdSubmit, Now: 4, Round: 1, Client: 2, Examples: 9, Payload: fuzzUpdate(0.5), Eval: &round.EvalReport{Examples: 9, Loss: 0.75, Accuracy: 2.0 / 3}},
		{Type: cmdSubmit, Now: 5, Round: 1, Client: 1, Examples: 5, Payload: fuzzUpdate(0.25), Eval: &round.EvalReport{Examples: 5, Loss: 1.25, Accuracy: 0.2}},
		{Type: cmdClose, Now: 6},
	}
	apply := func(f *FSM, from int, cmds []command) {
		for i, c := range cmds {
			if err, ok := f.Apply(&raft.Log{Index: uint64(from + i + 1), Type: raft.LogCommand, Data: c.encode()}).(error); ok {
				t.Fatalf("%s: %v", c.Type, err)
			}
		}
	}
	whole := NewFSM()
	apply(whole, 0, log)
	want := round.AggregateEval(0, []round.EvalReport{*log[5].Eval, *log[4].Eval}) // selection order: client 1, then 2
	if got := whole.Progress().LastClosed.Eval; got == nil || *got != want {
		t.Fatalf("evaluation %+v, want %+v", got, want)
	}
	half := NewFSM()
	apply(half, 0, log[:5])
	s, err := half.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := s.Persist(&memSink{Buffer: &buf}); err != nil {
		t.Fatal(err)
	}
	restored := NewFSM()
	if err := restored.Restore(io.NopCloser(&buf)); err != nil {
		t.Fatal(err)
	}
	apply(restored, 5, log[5:])
	if got := restored.Progress().LastClosed.Eval; got == nil || *got != want {
		t.Fatalf("restored: evaluation %+v, want %+v", got, want)
	}
	// A report for more examples than declared is refused on apply too,
	// and changes nothing.
	liar := NewFSM()
	apply(liar, 0, log[:4])
	before := stateBytes(t, liar)
	bad := log[5]
	bad.Eval = &round.EvalReport{Examples: 6, Loss: 1, Accuracy: 0.5}
	if err, ok := liar.Apply(&raft.Log{Index: 5, Type: raft.LogCommand, Data: bad.encode()}).(error); !ok || !errors.Is(err, round.ErrBadEval) {
		t.Fatalf("a report beyond the declared examples applied: %v", err)
	}
	if !bytes.Equal(before, stateBytes(t, liar)) {
		t.Fatal("a refused report changed the state")
	}
}
