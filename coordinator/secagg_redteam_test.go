package coordinator

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"math"
	"math/big"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/fedzip/fedzip/client/remote"
	"github.com/fedzip/fedzip/round"
	"github.com/fedzip/fedzip/runspec"
	"github.com/fedzip/fedzip/secagg"
	"github.com/fedzip/fedzip/transport"
	"github.com/fedzip/fedzip/transport/fedzippb"
)

// saSocket opens a solo node of a secure aggregation run with three
// clients a round, serves it on a real socket, registers three clients
// and waits for the round to open. as(r) is the context of client r's
// calls, with its own token.
func saSocket(t *testing.T) (*Node, fedzippb.CoordinatorClient, []*fedzippb.RegisterResponse, View, func(*fedzippb.RegisterResponse) context.Context) {
	t.Helper()
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
	as := func(r *fedzippb.RegisterResponse) context.Context {
		return metadata.AppendToOutgoingContext(context.Background(), transport.AuthorizationKey, "Bearer "+r.GetToken(), transport.ClientIDKey, strconv.FormatUint(r.GetClientId(), 10))
	}
	return node, api, regs, v, as
}

// TestRedteamSecAggStep attacks the SecAggStep RPC of a node on a real
// socket as a registered client of a secure aggregation round: a request
// under another client's ID, a message that speaks for another client, a
// message beyond the server's chunk limit, a step out of order, garbage,
// and a long poll for a round that is not open. Each is refused with its
// code and costs the cluster nothing durable: no Raft log entry.
func TestRedteamSecAggStep(t *testing.T) {
	node, api, regs, v, as := saSocket(t)
	ctx := context.Background()
	mallory, victim := regs[0], regs[1]
	// The victim's real advert, which mallory replays as its own.
	task, err := api.SecAggStep(as(victim), &fedzippb.SecAggStepRequest{ClientId: victim.GetClientId(), Round: uint64(v.Round)})
	if err != nil {
		t.Fatal(err)
	}
	g := graphOf(t, task)
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

// TestRedteamSecAggServerRefusals attacks a secure aggregation round on a
// real socket, at each of its four steps, with messages that decode and
// speak for the attacker but that the protocol's server refuses: an
// advert with another client's keys or one key twice, a share bundle
// that is empty, names a client twice or names the sender itself, masked
// values of another width or count, and an unmask response that reveals
// the wrong secret of a survivor or one owner twice. Each is refused with
// InvalidArgument before the log, so repeating it grows nothing, and the
// round still closes with the three honest messages of every step.
func TestRedteamSecAggServerRefusals(t *testing.T) {
	node, api, regs, v, as := saSocket(t)
	rnd := uint64(v.Round)
	mallory := regs[0]
	poll := func(r *fedzippb.RegisterResponse, step int) *fedzippb.SecAggStepResponse {
		t.Helper()
		for {
			res, err := api.SecAggStep(as(r), &fedzippb.SecAggStepRequest{ClientId: r.GetClientId(), Round: rnd, Step: uint32(step)})
			if status.Code(err) == codes.Unavailable || status.Code(err) == codes.DeadlineExceeded {
				continue // the long poll ended without the step (transport.NoTaskError)
			}
			if err != nil {
				t.Fatalf("client %d, task of step %d: %v", r.GetClientId(), step, err)
			}
			if int(res.GetStep()) == step {
				return res
			}
		}
	}
	send := func(r *fedzippb.RegisterResponse, step int, msg []byte) error {
		_, err := api.SecAggStep(as(r), &fedzippb.SecAggStepRequest{ClientId: r.GetClientId(), Round: rnd, Step: uint32(step), Message: msg})
		return err
	}
	refused := func(step int, name string, msg []byte) {
		t.Helper()
		last := node.Raft().LastIndex()
		for range 3 { // a refusal repeated costs nothing either
			if err := send(mallory, step, msg); status.Code(err) != codes.InvalidArgument {
				t.Errorf("step %d, %s: %v, want InvalidArgument", step, name, err)
			}
		}
		if got := node.Raft().LastIndex(); got != last {
			t.Errorf("step %d, %s: the refused message added %d log entries", step, name, got-last)
		}
	}
	must := func(b []byte, err error) []byte {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	task := poll(mallory, SecAggAdvertise)
	g := graphOf(t, task)
	var err error
	cls := make([]*secagg.Client, len(regs))
	adv := make([]secagg.KeyAdvert, len(regs))
	for i, r := range regs {
		if cls[i], err = secagg.NewClient(g, r.GetClientId(), rand.Reader); err != nil {
			t.Fatal(err)
		}
		if adv[i], err = cls[i].Advertise(); err != nil {
			t.Fatal(err)
		}
	}
	// Step 0: the victim advertises first; mallory takes its keys.
	if err := send(regs[1], SecAggAdvertise, must(adv[1].MarshalBinary())); err != nil {
		t.Fatal(err)
	}
	stolen := adv[1]
	stolen.ID = mallory.GetClientId()
	refused(SecAggAdvertise, "another client's keys", must(stolen.MarshalBinary()))
	half := adv[0]
	half.SPK = adv[1].SPK
	refused(SecAggAdvertise, "another client's mask key", must(half.MarshalBinary()))
	twice := adv[0]
	twice.SPK = twice.CPK
	refused(SecAggAdvertise, "one key twice", must(twice.MarshalBinary()))
	for _, i := range []int{0, 2} {
		if err := send(regs[i], SecAggAdvertise, must(adv[i].MarshalBinary())); err != nil {
			t.Fatal(err)
		}
	}
	// Step 1.
	bundles := make([]secagg.ShareBundle, len(regs))
	for i, r := range regs {
		var l secagg.KeyList
		if err := l.UnmarshalBinary(poll(r, SecAggShare).GetMessage()); err != nil {
			t.Fatal(err)
		}
		if bundles[i], err = cls[i].ShareKeys(l); err != nil {
			t.Fatal(err)
		}
	}
	own := bundles[0]
	refused(SecAggShare, "no shares", must((&secagg.ShareBundle{}).MarshalBinary()))
	dup := secagg.ShareBundle{Shares: []secagg.EncryptedShare{own.Shares[0], own.Shares[0]}}
	refused(SecAggShare, "one neighbour twice", must(dup.MarshalBinary()))
	self := secagg.ShareBundle{Shares: slices.Clone(own.Shares)}
	self.Shares[0].To = mallory.GetClientId()
	refused(SecAggShare, "a share for itself", must(self.MarshalBinary()))
	for i, r := range regs {
		if err := send(r, SecAggShare, must(bundles[i].MarshalBinary())); err != nil {
			t.Fatal(err)
		}
	}
	// Step 2.
	masked := make([][]byte, len(regs))
	for i, r := range regs {
		res := poll(r, SecAggMasked)
		var in secagg.ShareBundle
		if err := in.UnmarshalBinary(res.GetMessage()); err != nil {
			t.Fatal(err)
		}
		y, err := cls[i].MaskInput(make([]uint32, g.Params().D), in)
		if err != nil {
			t.Fatal(err)
		}
		masked[i] = must(remote.PackMasked(y, int(res.GetMaskBits())))
		if i == 0 {
			refused(SecAggMasked, "values one bit wider", must(remote.PackMasked(y, int(res.GetMaskBits())+1)))
			short := secagg.MaskedInput{From: y.From, Y: y.Y[1:]}
			refused(SecAggMasked, "one value short", must(remote.PackMasked(short, int(res.GetMaskBits()))))
		}
	}
	for i, r := range regs {
		if err := send(r, SecAggMasked, masked[i]); err != nil {
			t.Fatal(err)
		}
	}
	// Step 3.
	for i, r := range regs {
		var q secagg.UnmaskRequest
		if err := q.UnmarshalBinary(poll(r, SecAggUnmask).GetMessage()); err != nil {
			t.Fatal(err)
		}
		u, err := cls[i].Unmask(q)
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			wrong := secagg.UnmaskResponse{From: u.From, Shares: slices.Clone(u.Shares)}
			wrong.Shares[0].Kind = secagg.MaskKeyShare // the mask key of a survivor
			refused(SecAggUnmask, "the other secret of a survivor", must(wrong.MarshalBinary()))
			twice := secagg.UnmaskResponse{From: u.From, Shares: []secagg.RevealedShare{u.Shares[0], u.Shares[0]}}
			refused(SecAggUnmask, "one owner twice", must(twice.MarshalBinary()))
		}
		if err := send(r, SecAggUnmask, must(u.MarshalBinary())); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the round to close", func() bool { return node.FSM().View().Round > v.Round })
}

// saToUnmask runs the steps before the unmask step with honest clients
// and returns them.
func saToUnmask(t *testing.T, h *saHarness, o round.Opened, now time.Time) map[round.ClientID]*saPeer {
	t.Helper()
	peers := map[round.ClientID]*saPeer{}
	for step := range SecAggUnmask {
		if e := saStep(t, h, o, now, peers, step, saHonest(t)); e.Abandoned != "" {
			t.Fatalf("step %d: %s", step, e.Abandoned)
		}
	}
	return peers
}

// TestRedteamSecAggBadShare is a survivor that reveals a wrong share (in
// the field, of the right owner and kind, off the polynomial) at the
// unmask step. The coordinator cannot check one share on its own, so the
// message is taken; when the step ends the owner's self-mask seed has
// t+1 shares, and the server finds the t of them that rebuild the seed
// its owner committed to: the round closes on the exact sum, the wrong
// share costs nothing.
func TestRedteamSecAggBadShare(t *testing.T) {
	t0 := time.Unix(1000, 0).UTC()
	h, o := newSAHarness(t, 5, t0)
	var got []uint32
	h.f.saSum = func(_ int, _ []uint64, sum []uint32) { got = slices.Clone(sum) }
	peers := saToUnmask(t, h, o, t0.Add(time.Second))
	if p := h.f.sa.graph.Params(); p.K != 4 || p.T != 3 {
		t.Fatalf("k=%d, t=%d: the test wants t+1 = k shares of each seed", p.K, p.T)
	}
	e := saStep(t, h, o, t0.Add(time.Second), peers, SecAggUnmask, func(i int, c round.ClientID, msg []byte, err error) []byte {
		if err != nil {
			t.Fatal(err)
		}
		if i > 0 {
			return msg
		}
		var u secagg.UnmaskResponse
		if err := u.UnmarshalBinary(msg); err != nil {
			t.Fatal(err)
		}
		if y := &u.Shares[0].Y[0]; *y > 0 {
			*y--
		} else {
			*y = 1
		}
		if msg, err = u.MarshalBinary(); err != nil {
			t.Fatal(err)
		}
		return msg
	})
	if e.Abandoned != "" || e.Closed == nil {
		t.Fatalf("the unmask step with a wrong share ended with %+v", e)
	}
	plain := make([]uint32, len(got))
	for _, id := range o.Selected {
		for j, v := range peers[id].codes {
			plain[j] += v
		}
	}
	if !slices.Equal(got, plain) {
		t.Fatal("with one wrong share among t+1, the recovered sum differs from the plain sum")
	}
}

// lagrangeAt0 is the weight of the first of the coordinates xs in the
// interpolation at 0 over GF(2^61−1): Π x_m / (x_m − x_0), m ≠ 0.
func lagrangeAt0(xs []int64) *big.Int {
	p := new(big.Int).SetUint64(1<<61 - 1)
	num, den := big.NewInt(1), big.NewInt(1)
	for _, x := range xs[1:] {
		num.Mul(num, big.NewInt(x))
		den.Mul(den, big.NewInt(x-xs[0]))
	}
	den.Mod(den, p)
	return num.Mul(num, den.ModInverse(den, p)).Mod(num, p)
}

// TestRedteamSecAggShiftedShare is the attack wire version 2 let through:
// a survivor's self-mask seed has exactly t revealed shares, and one
// holder shifts its share by the inverse of its public Lagrange weight,
// so that the t shares rebuild another in-range seed. The server checks
// the seed against its owner's commitment: the round is abandoned with
// an error naming the owner, never closed on a wrong sum, and nothing of
// it is left (the model, its version and the FSM's state as before the
// round, no protocol state).
func TestRedteamSecAggShiftedShare(t *testing.T) {
	t0 := time.Unix(1000, 0).UTC()
	h, o := newSAHarness(t, 5, t0)
	peers := saToUnmask(t, h, o, t0.Add(time.Second))
	g := h.f.sa.graph
	if p := g.Params(); p.K != 4 || p.T != 3 {
		t.Fatalf("k=%d, t=%d: the test wants the complete graph of 5 with t=3", p.K, p.T)
	}
	before := h.f.ModelHash()
	// Clients 0..3 answer in order and client 4 does not: the owner,
	// client 0, has the shares of 1, 2 and 3, exactly t; 1 shifts its own.
	owner := uint64(o.Selected[0])
	var xs []int64
	for _, c := range o.Selected[1:4] {
		i, _ := g.Index(uint64(c))
		xs = append(xs, int64(i)+1)
	}
	shift := new(big.Int).ModInverse(lagrangeAt0(xs), new(big.Int).SetUint64(1<<61-1)).Uint64()
	e := saStep(t, h, o, t0.Add(time.Second), peers, SecAggUnmask, func(i int, c round.ClientID, msg []byte, err error) []byte {
		if err != nil {
			t.Fatal(err)
		}
		switch i {
		case 4:
			return nil
		case 1:
			var u secagg.UnmaskResponse
			if err := u.UnmarshalBinary(msg); err != nil {
				t.Fatal(err)
			}
			for k := range u.Shares {
				if s := &u.Shares[k]; s.Owner == owner {
					s.Y[0] = (s.Y[0] + shift) % (1<<61 - 1) // the seed's byte 0 plus 1
				}
			}
			if msg, err = u.MarshalBinary(); err != nil {
				t.Fatal(err)
			}
		}
		return msg
	})
	want := "the self-mask seed of client " + strconv.FormatUint(owner, 10) + " rebuilt from 3 shares (t=3) does not match"
	if e.Closed != nil || !strings.Contains(e.Abandoned, secagg.ErrInconsistentShares.Error()) || !strings.Contains(e.Abandoned, want) {
		t.Fatalf("the unmask step with a shifted share ended with %+v", e)
	}
	t.Log(e.Abandoned)
	if v := h.f.View(); v.Phase != round.Idle || v.Version != 0 || h.f.ModelHash() != before || h.f.sa != nil {
		t.Fatalf("after a shifted share: phase %v, version %d, model moved %v, protocol state %v", v.Phase, v.Version, h.f.ModelHash() != before, h.f.sa != nil)
	}
}

// TestSecAggSnapshotVersion2Refused: a snapshot an FSM took in the middle
// of the protocol (here after the masked inputs) restores, and the same
// snapshot with its protocol server state marked as wire version 2 (whose
// adverts carry no commitment) is refused with an error, not misread:
// a round in flight does not survive the upgrade to version 3.
func TestSecAggSnapshotVersion2Refused(t *testing.T) {
	t0 := time.Unix(1000, 0).UTC()
	h, o := newSAHarness(t, 5, t0)
	saToUnmask(t, h, o, t0.Add(time.Second))
	checkRestores(t, h.f)
	s, err := h.f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	snap := s.(*snapshot)
	if snap.SecAgg == nil || snap.SecAgg.Server[0] != 3 {
		t.Fatalf("the snapshot's protocol state: %+v", snap.SecAgg)
	}
	snap.SecAgg.Server[0] = 2
	var buf bytes.Buffer
	if err := snap.Persist(&memSink{Buffer: &buf}); err != nil {
		t.Fatal(err)
	}
	if err := NewFSM().Restore(nopCloser{&buf}); !errors.Is(err, secagg.ErrCorrupt) {
		t.Fatalf("a version-2 protocol state restored: %v", err)
	}
}

// TestRedteamSecAggOutOfRange is a client that masks values beyond its
// fixed-point range: the largest signed m-bit value on every coordinate,
// while the others send zero. The coordinator sees only masked values,
// uniform modulo 2^m, so it cannot refuse them; the sum is read as signed
// m-bit integers, which bounds what one client can add. The test pins that
// bound: the model moves by (2^(m-1)-1)/L·clip/survivors on the support,
// where an honest client adds at most clip/survivors (L = 2^(b-1)-1).
// Not fixed: checking a client's range needs proofs on masked values.
func TestRedteamSecAggOutOfRange(t *testing.T) {
	t0 := time.Unix(1000, 0).UTC()
	h, o := newSAHarness(t, 5, t0)
	before, _ := h.f.Model()
	peers := map[round.ClientID]*saPeer{}
	for step := range 4 {
		saStep(t, h, o, t0.Add(time.Second), peers, step, saHonest(t))
		if step == SecAggAdvertise { // the attacker's codes, before it masks them
			m := h.f.sa.bits
			for j := range peers[o.Selected[0]].codes {
				peers[o.Selected[0]].codes[j] = 1<<(m-1) - 1
			}
		}
	}
	task := saTaskOf(t, h.f, o, peers)
	if v := h.f.View(); v.Version != 1 {
		t.Fatalf("the round did not close: %+v", v.Progress)
	}
	after, _ := h.f.Model()
	var most float64
	for c := range after {
		most = max(most, math.Abs(float64(after[c]-before[c])))
	}
	clip, n := float64(task.Fixed.Clip), float64(len(o.Selected))
	bound := float64(int64(1)<<(task.MaskBits-1)-1) / float64(task.Fixed.Levels()) * clip / n
	if math.Abs(most-bound) > 1e-5 {
		t.Fatalf("one client moved the model by %v, the m-bit bound is %v", most, bound)
	}
	t.Logf("m = %d: one client moved a coordinate by %.4f, %.1f times the %.4f an honest client can", task.MaskBits, most, most/(clip/n), clip/n)
}

// TestRedteamSecAggPlainSubmit is a selected client of a secure
// aggregation round that sends its update in the clear over Submit, as
// in a run without the protocol (which would show the coordinator its
// values, and carries the evaluation report too): the stream is refused
// as soon as its header arrives, and no log entry is added.
func TestRedteamSecAggPlainSubmit(t *testing.T) {
	node, api, regs, v, as := saSocket(t)
	mallory := regs[0]
	last := node.Raft().LastIndex()
	sctx, cancel := context.WithCancel(as(mallory))
	defer cancel()
	stream, err := api.Submit(sctx)
	if err != nil {
		t.Fatal(err)
	}
	h := &fedzippb.UpdateHeader{ClientId: mallory.GetClientId(), Round: uint64(v.Round), ModelVersion: v.Version, Examples: 10, TotalBytes: 8000}
	if err := stream.Send(&fedzippb.UpdateChunk{Header: h}); err != nil {
		t.Fatal(err)
	}
	var resp fedzippb.SubmitResponse
	if err := stream.RecvMsg(&resp); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("a plain update in a secure aggregation round: %v, want FailedPrecondition", err)
	}
	if got := node.Raft().LastIndex(); got != last {
		t.Errorf("the refused update added %d log entries", got-last)
	}
}

// TestRedteamSecAggConcurrentResends is a client that sends its advert
// many times at once, the same bytes and other bytes, before the first
// is committed: each send passes the leader's check while none is in the
// log yet. At most one entry may be added, whatever the attacker's
// concurrency.
func TestRedteamSecAggConcurrentResends(t *testing.T) {
	node, api, regs, v, as := saSocket(t)
	mallory := regs[0]
	task, err := api.SecAggStep(as(mallory), &fedzippb.SecAggStepRequest{ClientId: mallory.GetClientId(), Round: uint64(v.Round)})
	if err != nil {
		t.Fatal(err)
	}
	g := graphOf(t, task)
	const n = 32
	msgs := make([][]byte, n)
	for i := range msgs {
		c, err := secagg.NewClient(g, mallory.GetClientId(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		a, _ := c.Advertise()
		msgs[i], _ = a.MarshalBinary()
		if i%2 == 1 {
			msgs[i] = msgs[i-1] // the same bytes again
		}
	}
	last := node.Raft().LastIndex()
	start := make(chan struct{})
	done := make(chan error, n)
	for _, m := range msgs {
		go func() {
			<-start
			_, err := api.SecAggStep(as(mallory), &fedzippb.SecAggStepRequest{ClientId: mallory.GetClientId(), Round: uint64(v.Round), Message: m})
			done <- err
		}()
	}
	close(start)
	ok := 0
	for range n {
		if err := <-done; err == nil {
			ok++
		}
	}
	if ok == 0 {
		t.Fatal("no advert was taken")
	}
	if got := node.Raft().LastIndex() - last; got > 1 {
		t.Errorf("%d concurrent adverts of one client added %d log entries, want 1", n, got)
	}
}

// TestRedteamSecAggSealedGarbage is a client whose share bundle is well
// formed but whose sealed shares do not open. The coordinator cannot open
// them (they are sealed under keys of the pair), so the bundle is taken;
// each honest neighbour then fails to open its share (secagg.ErrDecrypt)
// and leaves the round, as the protocol has it (a share that does not
// open may be the server's forgery), and the round is abandoned at the
// end of the masked-input step, the model unmoved. Known limit, not fixed:
// one client's message costs the round. Telling a forged share from a
// malicious sender needs signed shares (docs/secagg.md, "Threat model").
func TestRedteamSecAggSealedGarbage(t *testing.T) {
	t0 := time.Unix(1000, 0).UTC()
	h, o := newSAHarness(t, 5, t0)
	peers := map[round.ClientID]*saPeer{}
	mallory := o.Selected[0]
	var e saEnded
	for step := range SecAggUnmask {
		e = saStep(t, h, o, t0.Add(time.Second), peers, step, func(_ int, c round.ClientID, msg []byte, err error) []byte {
			if step == SecAggMasked && c != mallory {
				if !errors.Is(err, secagg.ErrDecrypt) {
					t.Fatalf("client %d opened its shares: %v", c, err)
				}
				return nil // it leaves the round
			}
			if err != nil {
				t.Fatal(err)
			}
			if step != SecAggShare || c != mallory {
				return msg
			}
			var b secagg.ShareBundle
			if err := b.UnmarshalBinary(msg); err != nil {
				t.Fatal(err)
			}
			for i := range b.Shares {
				b.Shares[i].Sealed[0] ^= 1
			}
			if msg, err = b.MarshalBinary(); err != nil {
				t.Fatal(err)
			}
			return msg
		})
	}
	if !strings.Contains(e.Abandoned, secagg.ErrTooFewSurvivors.Error()) {
		t.Fatalf("the masked-input step with one client's garbage shares ended with %+v", e)
	}
	if v := h.f.View(); v.Phase != round.Idle || v.Version != 0 {
		t.Fatalf("after garbage shares: phase %v, version %d", v.Phase, v.Version)
	}
}

// graphOf builds the round's graph from a SecAggStep task, as a client does.
func graphOf(t *testing.T, task *fedzippb.SecAggStepResponse) *secagg.Graph {
	t.Helper()
	g, err := secagg.NewGraph(secagg.Params{Session: task.GetSession(), IDs: task.GetIds(), K: int(task.GetNeighbours()), T: int(task.GetThreshold()),
		D: int(task.GetDim()), GraphSeed: task.GetGraphSeed()})
	if err != nil {
		t.Fatal(err)
	}
	return g
}
