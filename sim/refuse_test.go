package sim

import (
	"context"
	"errors"
	"math"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/fedzip/fedzip/aggregate"
	"github.com/fedzip/fedzip/client"
	"github.com/fedzip/fedzip/round"
)

// poison returns an update hook with which client bad sends v and −v in
// alternate coordinates in every round (issue 16's ±3e38 client, or a
// diverged one's NaN).
func poison(bad round.ClientID, v float32) func(round.ClientID, int, uint64, []float32) {
	return func(id round.ClientID, _ int, _ uint64, d []float32) {
		if id != bad {
			return
		}
		for i := range d {
			d[i] = v
			if i%2 == 1 {
				d[i] = -v
			}
		}
	}
}

// TestRefusedUpdateDropsClient has one client send values the upload codec
// cannot carry, every round: before, the run stopped at its first update
// ("client 3: gradient: non-finite value"). Now the client is dropped from
// each round it is selected for, counted in Metrics.Refused, sends no bytes,
// and the run ends near the accuracy of a clean run.
func TestRefusedUpdateDropsClient(t *testing.T) {
	data, model := synthetic(t, 20)
	init := make([]float32, model.NumParams())
	model.Init(init, 1)
	const bad = round.ClientID(3)
	for _, tc := range []struct {
		name, codec string
		v           float32
	}{
		{"default codec, ±3e38", "stcw", 3e38},
		{"default codec, NaN", "stcw", float32(math.NaN())},
		{"dense, +Inf", "none", float32(math.Inf(1))},
		{"top-k 8-bit, NaN", "topk=0.1,bits=8", float32(math.NaN())},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := config(8, 0.5)
			cfg.UploadCodec = tc.codec
			clean, err := Run(context.Background(), cfg, model, init, data, nil)
			if err != nil {
				t.Fatal(err)
			}
			var mu sync.Mutex
			var selected []int
			hook := poison(bad, tc.v)
			cfg.updateHook = func(id round.ClientID, r int, seed uint64, d []float32) {
				if id == bad {
					mu.Lock()
					selected = append(selected, r)
					mu.Unlock()
				}
				hook(id, r, seed, d)
			}
			res, err := Run(context.Background(), cfg, model, init, data, nil)
			if err != nil {
				t.Fatalf("the run stopped: %v", err)
			}
			for i, m := range res.Rounds {
				// Refusals change no selection: the rounds select as the
				// clean run's.
				if m.Clients != clean.Rounds[i].Clients {
					t.Fatalf("round %d: %d clients, clean run %d", m.Round, m.Clients, clean.Rounds[i].Clients)
				}
				want := 0
				if slices.Contains(selected, m.Round) {
					want = 1
				}
				if m.Refused != want || m.RefusedAttackers != 0 || m.Aborted != 0 || m.Reported != m.Clients-want {
					t.Errorf("round %d: refused %d (attackers %d, aborted %d), %d of %d reported, want %d refused", m.Round, m.Refused, m.RefusedAttackers, m.Aborted, m.Reported, m.Clients, want)
				}
			}
			if len(selected) == 0 {
				t.Fatal("client 3 was never selected: the test tests nothing")
			}
			for i, x := range res.Model {
				if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
					t.Fatalf("model value %d is %v", i, x)
				}
			}
			got, want := res.Rounds[len(res.Rounds)-1].TestAccuracy, clean.Rounds[len(clean.Rounds)-1].TestAccuracy
			if math.Abs(got-want) > 0.03 {
				t.Errorf("accuracy %.4f, clean run %.4f", got, want)
			}
			t.Logf("refused in rounds %v; accuracy %.4f, clean %.4f", selected, got, want)
		})
	}
}

// TestRefusedBitIdenticalAcrossWorkers: a run with refusals gives the same
// bits on 1, 2 and 5 workers.
func TestRefusedBitIdenticalAcrossWorkers(t *testing.T) {
	data, model := synthetic(t, 20)
	init := make([]float32, model.NumParams())
	model.Init(init, 1)
	var ref *Result
	for _, w := range []int{1, 2, 5} {
		cfg := config(5, 0.5)
		cfg.UploadCodec = "stcw"
		cfg.Workers = w
		cfg.updateHook = poison(3, 3e38)
		res, err := Run(context.Background(), cfg, model, init, data, nil)
		if err != nil {
			t.Fatal(err)
		}
		if ref == nil {
			ref = res
			continue
		}
		requireSameRun(t, w, res, ref)
	}
}

// requireSameRun fails t unless res, run on w workers, has the model bits
// and the metrics (but the times) of ref.
func requireSameRun(t *testing.T, w int, res, ref *Result) {
	t.Helper()
	if !slices.Equal(res.Model, ref.Model) {
		t.Fatalf("%d workers: model differs from 1 worker's", w)
	}
	for i := range res.Rounds {
		a, b := res.Rounds[i], ref.Rounds[i]
		a.Seconds, a.TrainSeconds, a.EvalSeconds = b.Seconds, b.TrainSeconds, b.EvalSeconds
		if a != b {
			t.Fatalf("%d workers, round %d: %+v, want %+v", w, i+1, a, b)
		}
	}
}

// TestRefusedClearsCodecState: a client whose update cannot be encoded
// even from a cleared state keeps a cleared error-feedback state, as the
// client runtime does, and sends nothing; its next update encodes from
// zero.
func TestRefusedClearsCodecState(t *testing.T) {
	_, model := synthetic(t, 4)
	n := model.NumParams()
	cfg := config(1, 1)
	cfg.UploadCodec = "stcw"
	p := newPool(context.Background(), 1, model, 10)
	defer p.stop()
	if err := p.setCodec(cfg, n); err != nil {
		t.Fatal(err)
	}
	sl := <-p.bufs
	defer func() { p.bufs <- sl }()
	w := p.all[0]
	d := make([]float32, n)
	for i := range d {
		d[i] = float32(i%5) * 0.01
	}
	if _, _, err := p.encode(w, &sl.sc, 1, aggregate.Update{Weight: 1, Delta: slices.Clone(d)}, 1, 7); err != nil {
		t.Fatal(err)
	}
	res := make([]float32, len(w.res))
	vel := make([]float32, len(w.vel))
	p.store.Load(1, res, vel)
	if !slices.ContainsFunc(res, func(x float32) bool { return x != 0 }) {
		t.Fatal("the first update left no residual: the test tests nothing")
	}
	nan := make([]float32, n)
	nan[3] = float32(math.NaN())
	_, wire, err := p.encode(w, &sl.sc, 1, aggregate.Update{Weight: 1, Delta: nan}, 2, 7)
	if !errors.Is(err, errRefused) || wire != 0 {
		t.Fatalf("NaN update: %d bytes, %v; want 0 bytes and errRefused", wire, err)
	}
	p.store.Load(1, res, vel)
	if slices.ContainsFunc(res, func(x float32) bool { return x != 0 }) || slices.ContainsFunc(vel, func(x float32) bool { return x != 0 }) {
		t.Fatal("a refused update left the client's error-feedback state as it was: the runtime clears it")
	}
}

// TestRefusalOrSimulatorFault: only errRefused drops a client; any other
// error of a client's job (the simulator's own fault) stops the round, and
// so does a refusal where nobody takes refusals (refuse nil).
func TestRefusalOrSimulatorFault(t *testing.T) {
	_, model := synthetic(t, 4)
	p := newPool(context.Background(), 2, model, 10)
	defer p.stop()
	ids := []round.ClientID{1, 2, 3, 4}
	job := func(fail error) func(*worker, *slot, round.ClientID) (aggregate.Update, client.Result, int, error) {
		return func(_ *worker, sl *slot, id round.ClientID) (aggregate.Update, client.Result, int, error) {
			if id == 2 {
				return aggregate.Update{}, client.Result{}, 17, fail
			}
			return aggregate.Update{Weight: 1, Delta: sl.buf}, client.Result{Examples: 1}, 5, nil
		}
	}
	var mu sync.Mutex
	var got []string
	submit := func(id round.ClientID, _ aggregate.Update, _ client.Result, wire int) error {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, "submit "+string(rune('0'+id)))
		return nil
	}
	refuse := func(id round.ClientID, wire int, err error) error {
		got = append(got, "refuse "+string(rune('0'+id)))
		if wire != 17 || !strings.Contains(err.Error(), "client 2") {
			t.Errorf("refusal of client %d: %d bytes, %v", id, wire, err)
		}
		return nil
	}
	refusal := refusedIf(errors.New("x: "+aggregate.ErrNonFinite.Error()), aggregate.ErrNonFinite)
	if errors.Is(refusal, errRefused) {
		t.Fatal("refusedIf wrapped an error that is not one of its causes")
	}
	refusal = refusedIf(aggregate.ErrNonFinite, aggregate.ErrNonFinite)
	if err := p.streamRefusing(ids, job(refusal), submit, refuse); err != nil {
		t.Fatal(err)
	}
	if want := []string{"submit 1", "refuse 2", "submit 3", "submit 4"}; !slices.Equal(got, want) {
		t.Fatalf("delivered %v, want %v", got, want)
	}
	fault := errors.New("its own update names round 3 of run x")
	if err := p.streamRefusing(ids, job(fault), submit, refuse); !errors.Is(err, fault) {
		t.Fatalf("a simulator fault gave %v", err)
	}
	if err := p.stream(ids, job(refusal), submit); !errors.Is(err, errRefused) {
		t.Fatalf("a refusal without a refuse func gave %v", err)
	}
}

// TestRefusedRoundAborted: when refusals leave fewer updates than the round
// needs, the round is aborted and opened again with a fresh selection, as a
// coordinator does; when every attempt is refused, the run stops after
// maxAborted attempts instead of looping.
func TestRefusedRoundAborted(t *testing.T) {
	data, model := synthetic(t, 20)
	init := make([]float32, model.NumParams())
	model.Init(init, 1)
	cfg := config(3, 0.5)
	var mu sync.Mutex
	calls := 0
	// Every client of round 2's first attempt (10 selected) sends NaN.
	cfg.updateHook = func(id round.ClientID, r int, _ uint64, d []float32) {
		mu.Lock()
		defer mu.Unlock()
		if r != 2 {
			return
		}
		if calls++; calls <= 10 {
			d[0] = float32(math.NaN())
		}
	}
	res, err := Run(context.Background(), cfg, model, init, data, nil)
	if err != nil {
		t.Fatal(err)
	}
	if m := res.Rounds[1]; m.Aborted != 1 || m.Refused != 10 || m.Round != 2 || len(res.Rounds) != 3 {
		t.Fatalf("round 2: aborted %d, refused %d (rounds %d)", m.Aborted, m.Refused, len(res.Rounds))
	}
	if res.Rounds[1].DenseUploadBytes != 2*res.Rounds[0].DenseUploadBytes {
		t.Errorf("round 2's dense bytes %d do not count its aborted attempt (round 1: %d)", res.Rounds[1].DenseUploadBytes, res.Rounds[0].DenseUploadBytes)
	}

	cfg.updateHook = func(id round.ClientID, r int, _ uint64, d []float32) {
		if r >= 2 {
			d[0] = float32(math.NaN())
		}
	}
	_, err = Run(context.Background(), cfg, model, init, data, nil)
	if err == nil || !strings.Contains(err.Error(), "round 2 aborted 10 times") {
		t.Fatalf("every update refused: %v", err)
	}
}
