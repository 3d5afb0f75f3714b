package remote

import (
	"context"
	crand "crypto/rand"
	"errors"
	"fmt"
	"math"
	"path/filepath"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fedzip/fedzip/gradient"
	"github.com/fedzip/fedzip/runspec"
	"github.com/fedzip/fedzip/secagg"
	"github.com/fedzip/fedzip/transport"
	"github.com/fedzip/fedzip/transport/fedzippb"
)

// errSecAggOut means the coordinator no longer takes this client's part
// in the round's protocol (it missed a step, or the round moved on).
var errSecAggOut = errors.New("client: out of the round's secure aggregation")

// secAggFile holds the client's error-feedback residual under secure
// aggregation.
const secAggFile = "secagg-residual.bin"

// maxGraphEntries bounds the round's graph a client builds: secagg.NewGraph
// holds k neighbours of each of the n clients (4·n·k bytes) and takes
// n·k steps. Without it a coordinator's task of secagg.MaxClients IDs on
// the complete graph (a few hundred kilobytes on the wire) made the client
// allocate 16 GiB. The bound, 2^24 entries (64 MiB), takes the default
// graph of secagg.RoundKT up to secagg.MaxClients clients (4.3 million
// entries) and the complete graph up to 4,096.
const maxGraphEntries = 1 << 24

// secAggPeer is the client's side of one secure aggregation round: its
// protocol peer (keys from crypto/rand; secagg.Peer resends an answer
// byte for byte when a step is asked again after a lost answer or a
// failover), and its update's codes on the round's support.
type secAggPeer struct {
	*secagg.Peer
	idx   []int32
	codes []uint32
	sent  []float32
}

// saPlan is a round's protocol as the client's advertise step (step 0)
// describes it, checked: its step-0 task, the round's support and the
// session bound to it, the graph and the fixed point.
type saPlan struct {
	res     *fedzippb.SecAggStepResponse
	idx     []int32
	session uint64
	graph   *secagg.Graph
	fp      secagg.FixedPoint
}

// secAggPlan checks the parameters of the round res describes for a model
// of n parameters, rebuilds its support (taskSupport) and builds its
// graph. Every refusal wraps ErrTaskRefused.
func secAggPlan(res *fedzippb.SecAggStepResponse, n int) (*saPlan, error) {
	d := int(res.GetDim())
	if d < 1 || d > n {
		return nil, fmt.Errorf("%w: a support of %d coordinates for a model of %d", ErrTaskRefused, d, n)
	}
	fp := secagg.FixedPoint{Clip: float32(res.GetClip()), Bits: int(res.GetBits())}
	if !(fp.Clip > 0) || math.IsInf(float64(fp.Clip), 0) || fp.Bits < 2 || fp.Bits > 24 || res.GetMaskBits() < 1 || res.GetMaskBits() > 32 {
		return nil, fmt.Errorf("%w: fixed point clip %v, %d bits, %d-bit masked values", ErrTaskRefused, res.GetClip(), res.GetBits(), res.GetMaskBits())
	}
	if nb := res.GetNormBound(); !(nb >= 0) || math.IsInf(nb, 0) {
		return nil, fmt.Errorf("%w: norm bound %v", ErrTaskRefused, nb)
	}
	idx, session, err := taskSupport(res, n)
	if err != nil {
		return nil, err
	}
	if n, k := len(res.GetIds()), int(res.GetNeighbours()); k > 0 && n > maxGraphEntries/k {
		return nil, fmt.Errorf("%w: a graph of %d clients of %d neighbours, beyond %d entries", ErrTaskRefused, n, k, maxGraphEntries)
	}
	g, err := secagg.NewGraph(secagg.Params{Session: session, IDs: res.GetIds(), K: int(res.GetNeighbours()), T: int(res.GetThreshold()),
		D: d, GraphSeed: res.GetGraphSeed()})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrTaskRefused, err)
	}
	return &saPlan{res: res, idx: idx, session: session, graph: g, fp: fp}, nil
}

// newSecAggPeer starts the round res describes: it checks the
// parameters, builds the graph (secAggPlan) and the protocol client, and
// encodes delta on the support with the residual (secagg.EncodeUpdate),
// which it updates.
func newSecAggPeer(res *fedzippb.SecAggStepResponse, id uint64, delta, residual []float32, taskSeed uint64) (*secAggPeer, error) {
	pl, err := secAggPlan(res, len(delta))
	if err != nil {
		return nil, err
	}
	return startSecAggPeer(pl, id, delta, residual, taskSeed)
}

// startSecAggPeer starts the round pl describes, as newSecAggPeer.
func startSecAggPeer(pl *saPlan, id uint64, delta, residual []float32, taskSeed uint64) (*secAggPeer, error) {
	if len(pl.idx) > len(delta) {
		panic(fmt.Sprintf("remote: a plan of %d coordinates for an update of %d", len(pl.idx), len(delta)))
	}
	c, err := secagg.NewClient(pl.graph, id, crand.Reader)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrTaskRefused, err)
	}
	d, m := len(pl.idx), int(pl.res.GetMaskBits())
	p := &secAggPeer{Peer: secagg.NewPeer(c, func(y secagg.MaskedInput) ([]byte, error) { return PackMasked(y, m) }),
		idx: pl.idx, codes: make([]uint32, d), sent: make([]float32, d)}
	secagg.EncodeUpdate(p.codes, p.sent, residual, delta, p.idx, pl.fp, pl.res.GetNormBound(), taskSeed, nil)
	return p, nil
}

// checkSecAggLocal reports, with an error wrapping ErrTaskRefused, a
// task's secagg_local that the client does not run: a value other than
// "", runspec.SecAggLocalSGD and runspec.SecAggLocalSupportAdam, one
// without secagg, or support-adam with SGD's momentum, weight decay or
// proximal term (runspec.CheckSecAggLocal). It returns whether the task
// trains with support-adam.
func checkSecAggLocal(t *fedzippb.Task) (adam bool, err error) {
	local := t.GetSecaggLocal()
	switch local {
	case "", runspec.SecAggLocalSGD:
		return false, nil
	case runspec.SecAggLocalSupportAdam:
	default:
		return false, fmt.Errorf("%w: secagg_local %.32q: want %q, %q or none", ErrTaskRefused, local, runspec.SecAggLocalSGD, runspec.SecAggLocalSupportAdam)
	}
	if !t.GetSecagg() {
		return false, fmt.Errorf("%w: secagg_local %q without secure aggregation", ErrTaskRefused, local)
	}
	tk := taskOf(t)
	if err := runspec.CheckSecAggLocal(local, tk.Optimizer, tk.ProxMu); err != nil {
		return false, fmt.Errorf("%w: %w", ErrTaskRefused, err)
	}
	return true, nil
}

// secAggFirst asks, for a task with secagg_local support-adam, for the
// round's advertise step before the client trains, and returns it checked
// (secAggPlan, for a model of n parameters): the client trains on its
// support, and secAggRound answers the step-0 task it holds, with no
// second request that could be answered otherwise. A client out of the
// round's protocol leaves it, as secAggRound does, and a step-0 task it
// refuses refuses the task (runner.refuse); pl is then nil and err what
// the runtime returns (nil after leaving).
func (r *runner) secAggFirst(ctx context.Context, task *fedzippb.Task, key taskKey, n int) (pl *saPlan, err error) {
	rnd := task.GetRound()
	res, err := r.secAggCall(ctx, &fedzippb.SecAggStepRequest{ClientId: r.st.ClientID, Round: rnd, Step: saAdvertise})
	if errors.Is(err, errSecAggOut) {
		return nil, r.leaveSecAgg(rnd, err)
	}
	if err != nil {
		return nil, err
	}
	if res.GetRound() != rnd || res.GetStep() != saAdvertise {
		return nil, r.leaveSecAgg(rnd, fmt.Errorf("%w: the round is at step %d", errSecAggOut, res.GetStep()))
	}
	if pl, err = secAggPlan(res, n); err != nil {
		return nil, r.refuse(key, err)
	}
	return pl, nil
}

// saAdvertise is the protocol's first step (SecAggStepRequest.step 0):
// the client advertises its keys. With secagg_local support-adam its task
// carries the support the client trains on.
const saAdvertise = 0

// leaveSecAgg logs that the client is out of round rnd's protocol for why
// and records the round as its last.
func (r *runner) leaveSecAgg(rnd uint64, why error) error {
	r.log.Warn("out of the round's secure aggregation", "round", rnd, "err", why)
	r.st.LastRound = rnd
	return r.save()
}

// taskSupport returns the round's support of dim coordinates of a model
// of n parameters and the session to run the protocol under: the random
// support from support_seed under the task's session, or with an
// announced support (announce_block > 0), the support rebuilt from the
// announcement, which is bounded before it is decoded, and the session
// bound to it (secagg.Announcement.Support).
func taskSupport(res *fedzippb.SecAggStepResponse, n int) ([]int32, uint64, error) {
	d := int(res.GetDim())
	if d < 1 || d > n {
		return nil, 0, fmt.Errorf("%w: a support of %d coordinates for a model of %d", ErrTaskRefused, d, n)
	}
	if res.GetAnnounceBlock() == 0 {
		idx := make([]int32, d)
		secagg.Support(idx, n, res.GetSupportSeed())
		return idx, res.GetSession(), nil
	}
	a := secagg.Announcement{Msg: res.GetAnnounced(), Block: int(min(res.GetAnnounceBlock(), secagg.MaxDim+1)),
		Blocks: int(min(res.GetAnnounceBlocks(), secagg.MaxDim+1)), Explore: int(min(res.GetAnnounceExplore(), secagg.MaxDim+1))}
	idx, session, err := a.Support(n, res.GetSession(), res.GetSupportSeed())
	if err != nil {
		return nil, 0, fmt.Errorf("%w: %w", ErrTaskRefused, err)
	}
	if len(idx) != d {
		return nil, 0, fmt.Errorf("%w: an announced support of %d coordinates, the task says %d", ErrTaskRefused, len(idx), d)
	}
	return idx, session, nil
}

// PackMasked encodes a masked-input step message as SecAggStep carries
// it: the secagg.MaskedInput header without values, then the low m bits
// of each masked value (gradient.AppendMasked), m being the round's
// mask_bits.
func PackMasked(y secagg.MaskedInput, m int) ([]byte, error) {
	hdr, err := (&secagg.MaskedInput{From: y.From}).MarshalBinary()
	if err != nil {
		return nil, err
	}
	return gradient.AppendMasked(hdr, y.Y, m), nil
}

// secAggRound takes part in the secure aggregation of task's round with
// the update delta: for each step it waits for the step's task, answers
// it, and sends the answer until the coordinator acknowledges it. What
// the codes do not carry stays in the residual (secagg-residual.bin); if
// the client drops out before its masked input is acknowledged, what it
// counted as sent goes back into the residual too. Once the masked input
// is acknowledged it counts as sent, even should the coordinator later
// abandon the round (a client cannot tell), and only then is the residual
// less it written: a client killed before leaves the residual the round
// started from. first, if not nil, is the
// advertise step asked for before training (secAggFirst, support-adam):
// step 0 answers it, and asks for no other.
func (r *runner) secAggRound(ctx context.Context, task *fedzippb.Task, delta []float32, first *saPlan) error {
	id, rnd := r.st.ClientID, task.GetRound()
	path := filepath.Join(r.cfg.StateDir, secAggFile)
	residual := make([]float32, len(delta))
	loadFloats(path, residual)
	var p *secAggPeer
	masked := false
	out := func(why error) error {
		if p != nil && !masked {
			secagg.Scatter(residual, p.sent, p.idx)
			if err := saveFloats(path, residual); err != nil {
				return err
			}
		}
		return r.leaveSecAgg(rnd, why)
	}
	for step := 0; step <= 3; step++ {
		var res *fedzippb.SecAggStepResponse
		if step == saAdvertise && first != nil {
			res = first.res // asked for before training (secAggFirst)
		} else {
			var err error
			res, err = r.secAggCall(ctx, &fedzippb.SecAggStepRequest{ClientId: id, Round: rnd, Step: uint32(step)})
			if errors.Is(err, errSecAggOut) {
				return out(err)
			}
			if err != nil {
				return err
			}
			if res.GetRound() != rnd || res.GetStep() != uint32(step) {
				return out(fmt.Errorf("%w: the round is at step %d", errSecAggOut, res.GetStep()))
			}
		}
		if p == nil {
			var err error
			if first != nil {
				p, err = startSecAggPeer(first, id, delta, residual, task.GetTaskSeed())
			} else {
				p, err = newSecAggPeer(res, id, delta, residual, task.GetTaskSeed())
			}
			if err != nil {
				return err
			}
			// The residual less what is sent is saved once the masked
			// input is taken (step 2), not before: a client killed
			// earlier restarts from the residual the round started from.
		}
		msg, err := p.Answer(step, res.GetMessage(), p.codes)
		if err != nil {
			// Too few neighbours left, or a message that does not
			// open: this client aborts the round.
			return out(err)
		}
		if !res.GetAnswered() {
			_, err = r.secAggCall(ctx, &fedzippb.SecAggStepRequest{ClientId: id, Round: rnd, Step: uint32(step), Message: msg})
			if errors.Is(err, errSecAggOut) {
				return out(err)
			}
			if err != nil {
				return err
			}
		}
		if step == 2 {
			masked = true
			if err := saveFloats(path, residual); err != nil {
				return err
			}
		}
		r.sum.Bytes += int64(len(msg))
	}
	r.log.Info("secure aggregation round done", "round", rnd)
	r.sum.Rounds = append(r.sum.Rounds, int(rnd))
	r.st.LastRound = rnd
	return r.save()
}

// secAggCall calls SecAggStep until it succeeds, following redirects and
// backing off on network errors; a long poll that ends without the step
// is asked again. A refusal (FailedPrecondition, InvalidArgument, NotFound)
// is errSecAggOut.
func (r *runner) secAggCall(ctx context.Context, req *fedzippb.SecAggStepRequest) (*fedzippb.SecAggStepResponse, error) {
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if r.conn == nil {
			if err := r.dial(ctx); err != nil {
				if e := r.retry(ctx, err); e != nil {
					return nil, e
				}
				continue
			}
		}
		res, err := r.api.SecAggStep(ctx, req)
		if err == nil {
			r.backoff, r.redirected = 0, false
			return res, nil
		}
		if transport.IsNoTask(err) {
			continue
		}
		switch status.Code(err) {
		case codes.FailedPrecondition, codes.InvalidArgument, codes.NotFound:
			return nil, fmt.Errorf("%w: %w", errSecAggOut, err)
		}
		if e := r.retry(ctx, err); e != nil {
			return nil, e
		}
	}
}
