package sim

import (
	"context"
	"errors"
	"math"
	"runtime"
	"slices"
	"sync"
	"testing"

	"github.com/fedzip/fedzip/round"
	"github.com/fedzip/fedzip/runspec"
	"github.com/fedzip/fedzip/secagg"
)

func secAggConfig(rounds int) Config {
	cfg := config(rounds, 0.5) // 10 of 20 clients a round
	cfg.Strategy = "fedavg,bound=off"
	cfg.SecAgg = &runspec.SecAgg{Fraction: 0.2, Bits: 12, Clip: 0.05}
	return cfg
}

// TestSecAggSumExact drops 30% of the clients at each step of the
// protocol in turn and checks, in every round, that the sum the server
// recovers is the plain sum of the survivors' fixed-point codes, that the
// survivors are the clients that sent a masked input (those that drop at
// the unmask step are in the sum), and that the first round's model moved
// by exactly the survivors' decoded mean on the support.
func TestSecAggSumExact(t *testing.T) {
	data, model := synthetic(t, 20)
	init := make([]float32, model.NumParams())
	model.Init(init, 1)
	for _, step := range SecAggDropSteps {
		t.Run(step, func(t *testing.T) {
			cfg := secAggConfig(3)
			cfg.EvalEvery = 0
			cfg.SecAggDropout = SecAggDropout{P: 0.3, Step: step}
			var dropped, rounds int
			var first []float32
			cfg.secaggHook = func(r int, selected, survivors []round.ClientID, sum, plain []uint32) {
				rounds++
				if !slices.Equal(sum, plain) {
					t.Errorf("round %d: recovered sum differs from the survivors' plain sum", r)
				}
				dropped += len(selected) - len(survivors)
				if step == "unmask" && len(survivors) != len(selected) {
					t.Errorf("round %d: %d of %d survivors, but clients dropped only after sending their masked input", r, len(survivors), len(selected))
				}
				if r == 1 && first == nil {
					first = make([]float32, len(sum))
					secagg.FixedPoint{Clip: 0.05, Bits: 12}.Decode(first, sum)
					for j := range first {
						first[j] /= float32(len(survivors))
					}
				}
			}
			res, err := Run(context.Background(), cfg, model, init, data, nil)
			if err != nil {
				t.Fatal(err)
			}
			if rounds < 3 {
				t.Fatalf("%d protocol runs for 3 rounds", rounds)
			}
			if step != "unmask" && dropped == 0 {
				t.Fatal("no client dropped at 30% dropout")
			}
			for _, m := range res.Rounds {
				if m.Survivors < 1 || m.Survivors > m.Clients {
					t.Fatalf("round %d: %d survivors of %d", m.Round, m.Survivors, m.Clients)
				}
			}
			// Round 1 from the same init, alone: the model moves by the mean.
			cfg1 := cfg
			cfg1.Round.Rounds = 1
			first = nil
			res1, err := Run(context.Background(), cfg1, model, init, data, nil)
			if err != nil {
				t.Fatal(err)
			}
			idx := make([]int32, len(first))
			secagg.Support(idx, len(init), round.TaskSeed(cfg.TaskSeed^saltSupport, 1, 0))
			moved := 0
			for i := range init {
				want := init[i]
				if j, ok := slices.BinarySearch(idx, int32(i)); ok {
					want += first[j]
				}
				if d := math.Abs(float64(res1.Model[i] - want)); d > 1e-6 {
					t.Fatalf("parameter %d = %v, want init + mean = %v", i, res1.Model[i], want)
				}
				if res1.Model[i] != init[i] {
					moved++
				}
			}
			if moved == 0 || moved > len(idx) {
				t.Fatalf("%d parameters moved, the support has %d", moved, len(idx))
			}
		})
	}
}

// TestSecAggBitIdenticalAcrossWorkers runs secure aggregation with random
// dropouts on 1 and 3 workers, with each support, and requires the same
// model bits and metrics.
func TestSecAggBitIdenticalAcrossWorkers(t *testing.T) {
	for _, sup := range []string{"random", "announced"} {
		t.Run(sup, func(t *testing.T) { secAggBitIdentical(t, sup) })
	}
}

func secAggBitIdentical(t *testing.T, support string) {
	data, model := synthetic(t, 20)
	init := make([]float32, model.NumParams())
	model.Init(init, 1)
	var ref *Result
	for _, w := range []int{1, 3} {
		cfg := secAggConfig(3)
		cfg.SecAgg.Support = support
		cfg.Strategy = "" // the default AutoBound around FedAvg: nothing to bound
		cfg.SecAgg.Clip = 0
		cfg.Workers = w
		cfg.SecAggDropout = SecAggDropout{P: 0.2}
		res, err := Run(context.Background(), cfg, model, init, data, nil)
		if err != nil {
			t.Fatal(err)
		}
		if ref == nil {
			ref = res
			continue
		}
		for i := range res.Model {
			if math.Float32bits(res.Model[i]) != math.Float32bits(ref.Model[i]) {
				t.Fatalf("%d workers: parameter %d = %v, 1 worker gives %v", w, i, res.Model[i], ref.Model[i])
			}
		}
		for r := range res.Rounds {
			a, b := res.Rounds[r], ref.Rounds[r]
			a.Seconds, a.TrainSeconds, a.EvalSeconds = b.Seconds, b.TrainSeconds, b.EvalSeconds
			if a != b {
				t.Fatalf("%d workers: round %d metrics %+v, 1 worker %+v", w, r+1, a, b)
			}
		}
	}
	if slices.Equal(ref.Model, init) {
		t.Fatal("training did not change the model")
	}
}

// TestSecAggBytes checks the bytes a round counts without dropouts against
// the protocol's message sizes (docs/secagg.md): per client 126 + 113·k up
// for keys and shares (the advert's 32-byte commitment included), 14 + 5 + ⌈m·d/8⌉ for the masked vector packed in
// m bits, 18 + 160·k down, on top of the dense model download.
func TestSecAggBytes(t *testing.T) {
	data, model := synthetic(t, 20)
	init := make([]float32, model.NumParams())
	model.Init(init, 1)
	cfg := secAggConfig(2)
	cfg.SecAgg.Neighbours, cfg.SecAgg.Threshold = 4, 3
	res, err := Run(context.Background(), cfg, model, init, data, nil)
	if err != nil {
		t.Fatal(err)
	}
	n, k := int64(10), int64(4)
	d := int64(math.Round(0.2 * float64(model.NumParams())))
	bits, _, _ := secagg.MaskedWidth(10*2047, 0) // 12-bit codes: 16 bits
	if bits != 16 {
		t.Fatalf("masked values of %d bits", bits)
	}
	for _, m := range res.Rounds {
		if want := n * (126 + 113*k + 14 + 5 + (d*16+7)/8); m.UploadBytes != want {
			t.Errorf("round %d: %d bytes up, want %d", m.Round, m.UploadBytes, want)
		}
		if want := n*(18+160*k) + n*4*int64(model.NumParams()); m.DownloadBytes != want {
			t.Errorf("round %d: %d bytes down, want %d", m.Round, m.DownloadBytes, want)
		}
		if m.Survivors != 10 {
			t.Errorf("round %d: %d survivors without dropouts", m.Round, m.Survivors)
		}
	}
}

// TestSecAggTrains runs a short synthetic training under secure
// aggregation and requires accuracy well above chance (10 classes).
func TestSecAggTrains(t *testing.T) {
	data, model := synthetic(t, 20)
	init := make([]float32, model.NumParams())
	model.Init(init, 1)
	cfg := secAggConfig(15)
	cfg.EvalEvery = 0
	cfg.SecAgg = &runspec.SecAgg{Fraction: 0.3, Bits: 8}
	cfg.Strategy = "fedavgm,lr=3,momentum=0"
	cfg.SecAggDropout = SecAggDropout{P: 0.1}
	res, err := Run(context.Background(), cfg, model, init, data, nil)
	if err != nil {
		t.Fatal(err)
	}
	last := res.Rounds[len(res.Rounds)-1]
	t.Logf("accuracy %.3f after %d rounds", last.TestAccuracy, last.Round)
	if last.TestAccuracy < 0.35 {
		t.Fatalf("accuracy %.3f after %d rounds, want well above chance (0.1)", last.TestAccuracy, last.Round)
	}
}

// TestSecAggRefuses checks the runs secure aggregation cannot simulate.
func TestSecAggRefuses(t *testing.T) {
	data, model := synthetic(t, 20)
	init := make([]float32, model.NumParams())
	model.Init(init, 1)
	for name, edit := range map[string]func(*Config){
		"median":          func(c *Config) { c.Strategy = "median" },
		"bound=auto":      func(c *Config) { c.Strategy = "fedavg,bound=auto" },
		"upload codec":    func(c *Config) { c.UploadCodec = "stc" },
		"too many bits":   func(c *Config) { c.SecAgg.Bits = 30 },
		"attack":          func(c *Config) { c.Attack = Attack{Kind: "scale", Fraction: 0.2} },
		"dropout":         func(c *Config) { c.SecAggDropout = SecAggDropout{P: 1} },
		"two per round":   func(c *Config) { c.Round.Fraction = 0.1 },
		"threshold alone": func(c *Config) { c.SecAgg.Threshold = 3 },
		"adam, momentum":  func(c *Config) { c.SecAgg.Local = runspec.SecAggLocalSupportAdam },
		"unknown local":   func(c *Config) { c.SecAgg.Local = "adam"; c.Momentum = 0 },
	} {
		cfg := secAggConfig(1)
		edit(&cfg)
		if _, err := Run(context.Background(), cfg, model, init, data, nil); err == nil {
			t.Errorf("%s: accepted", name)
		} else if name == "median" && !errors.Is(err, runspec.ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
}

// TestSecAggErrorFeedback: what a client's codes carry plus its new
// residual is its update (plus its old residual), whatever it clipped;
// a client whose masked input is not in the sum keeps all of it.
func TestSecAggErrorFeedback(t *testing.T) {
	cfg := secAggConfig(1)
	cfg.SecAgg.Clip = 0.01
	const n = 1000
	s, err := newSecAggRun(cfg, n, 20)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.open(1, 2); err != nil {
		t.Fatal(err)
	}
	delta := make([]float32, n)
	for i := range delta {
		delta[i] = float32(i%7-3) * 0.004 // some beyond the clip
	}
	for i, id := range []round.ClientID{1, 2} {
		s.encode(i, id, 1, slices.Clone(delta))
	}
	s.unsend(1, 2)
	res := make([]float32, n)
	for i, id := range []round.ClientID{1, 2} {
		s.store.Load(id, res, nil)
		if i == 0 {
			secagg.Scatter(res, s.sent[0], s.idx)
		}
		for j := range res {
			if math.Abs(float64(res[j]-delta[j])) > 1e-7 {
				t.Fatalf("client %d: residual + sent at %d = %v, update %v", id, j, res[j], delta[j])
			}
		}
	}
	if slices.Max(s.sent[0]) > 0.01 || slices.Min(s.sent[0]) < -0.01 {
		t.Fatalf("sent values beyond the clip: %v..%v", slices.Min(s.sent[0]), slices.Max(s.sent[0]))
	}
}

// TestSecAggAnnouncedReplay runs secure aggregation with an announced
// support and replays it from what the server publishes only: each
// round's recovered sum. A fresh secagg.Importance fed the published means
// must announce the supports the run used: the model must be the initial
// one plus every round's mean on the replayed support, and each round's
// download must count the announced support's bytes. It fails if the
// support depended on anything the server does not publish, if the
// server and the clients used different supports, or if the bytes were
// not counted.
func TestSecAggAnnouncedReplay(t *testing.T) {
	data, model := synthetic(t, 20)
	init := make([]float32, model.NumParams())
	model.Init(init, 1)
	const rounds = 4
	cfg := secAggConfig(rounds)
	cfg.EvalEvery = 0
	cfg.SecAgg.Support = "announced,explore=0.25,block=4"
	cfg.SecAgg.Neighbours, cfg.SecAgg.Threshold = 4, 3
	sums := map[int][]uint32{}
	surv := map[int]int{}
	cfg.secaggHook = func(r int, selected, survivors []round.ClientID, sum, plain []uint32) {
		sums[r] = slices.Clone(sum)
		surv[r] = len(survivors)
	}
	res, err := Run(context.Background(), cfg, model, init, data, nil)
	if err != nil {
		t.Fatal(err)
	}
	n := len(init)
	k := int(math.Round(0.2 * float64(n)))
	imp := secagg.NewImportance(n)
	want := slices.Clone(init)
	fp := secagg.FixedPoint{Clip: 0.05, Bits: 12}
	differs := 0
	for r := 1; r <= rounds; r++ {
		seed := round.TaskSeed(cfg.TaskSeed^saltSupport, r, 0)
		blocks := int(math.Round(float64(k) / 4))
		idx, top, _ := imp.Announce(seed, 4, blocks, int(math.Round(0.25*float64(blocks))))
		rnd := make([]int32, k)
		secagg.Support(rnd, n, seed)
		if !slices.Equal(idx, rnd) {
			differs++
		}
		mean := make([]float32, len(idx))
		fp.Decode(mean, sums[r])
		for j := range mean {
			mean[j] /= float32(surv[r])
		}
		secagg.Scatter(want, mean, idx)
		imp.Observe(r, idx, mean)
		msg := secagg.AppendAnnounced(nil, top, secagg.NumBlocks(n, 4))
		if got, w := res.Rounds[r-1].DownloadBytes, int64(10*(18+160*4)+10*4*n+10*len(msg)); got != w {
			t.Errorf("round %d: %d bytes down, want %d with the announced support's %d each", r, got, w, len(msg))
		}
	}
	if differs < rounds-1 {
		t.Fatalf("the announced support equals the random one in %d of %d rounds", rounds-differs, rounds)
	}
	for i := range want {
		if d := math.Abs(float64(res.Model[i] - want[i])); d > 1e-5 {
			t.Fatalf("parameter %d = %v, the replay of the published means gives %v", i, res.Model[i], want[i])
		}
	}
}

// TestSecAggWraps runs with masked values narrower than the worst case
// (Config.SecAggWidth) and checks, in every round, that the recovered sum
// is the survivors' plain sum wherever that lies in the signed m-bit range
// and within the range everywhere, that Metrics.SecAggWraps counts
// exactly the coordinates outside it, and that the upload shrinks to m
// bits a value; at the exact width (0) nothing wraps.
func TestSecAggWraps(t *testing.T) {
	data, model := synthetic(t, 20)
	init := make([]float32, model.NumParams())
	model.Init(init, 1)
	run := func(width int) (*Result, []int) {
		cfg := secAggConfig(3)
		cfg.EvalEvery = 0
		cfg.SecAggWidth = width
		m := width
		if m == 0 {
			m = 16 // 12-bit codes from 10 clients
		}
		lo, hi := -(int64(1) << (m - 1)), int64(1)<<(m-1)-1
		var wraps []int
		cfg.secaggHook = func(r int, selected, survivors []round.ClientID, sum, plain []uint32) {
			n := 0
			for j := range sum {
				p, s := int64(int32(plain[j])), int64(int32(sum[j]))
				if s < lo || s > hi {
					t.Fatalf("width %d, round %d: coordinate %d reads %d, outside the range", width, r, j, s)
				}
				if p < lo || p > hi {
					n++
				} else if s != p {
					t.Fatalf("width %d, round %d: coordinate %d reads %d, its sum %d is in range", width, r, j, s, p)
				}
			}
			wraps = append(wraps, n)
		}
		res, err := Run(context.Background(), cfg, model, init, data, nil)
		if err != nil {
			t.Fatal(err)
		}
		return res, wraps
	}
	exact, none := run(0)
	narrow, wraps := run(8)
	total := 0
	for i, m := range narrow.Rounds {
		if m.SecAggWraps != wraps[i] {
			t.Errorf("round %d: secagg_wraps %d, the hook counted %d", m.Round, m.SecAggWraps, wraps[i])
		}
		total += m.SecAggWraps
		d := int64(math.Round(0.2 * float64(model.NumParams())))
		if saved := exact.Rounds[i].UploadBytes - m.UploadBytes; saved != 10*(((16*d+7)/8)-((8*d+7)/8)) {
			t.Errorf("round %d: %d bytes saved, want 10 clients' 8 bits of %d values", m.Round, saved, d)
		}
	}
	if total == 0 {
		t.Fatal("12-bit codes in 8 bits: no coordinate wrapped; the test does not exercise wrapping")
	}
	for i, m := range exact.Rounds {
		if m.SecAggWraps != 0 || none[i] != 0 {
			t.Errorf("round %d at the exact width: %d wraps (hook %d)", m.Round, m.SecAggWraps, none[i])
		}
	}
}

// TestSecAggSupportAdam runs rounds whose clients train with support-adam
// and requires, for each support: every update zero, bit for bit, off the
// round's support (the one the server aggregates, seen in the same
// round's sum) and moving on it; the model learns; and the same bits on
// 1 and 3 workers, at GOMAXPROCS 1 and 4, with dropouts.
func TestSecAggSupportAdam(t *testing.T) {
	data, model := synthetic(t, 20)
	init := make([]float32, model.NumParams())
	model.Init(init, 1)
	for _, sup := range []string{"random", "announced"} {
		t.Run(sup, func(t *testing.T) {
			var ref *Result
			for _, c := range []struct{ workers, procs int }{{1, 1}, {3, 4}} {
				cfg := secAggConfig(4)
				cfg.Momentum = 0
				cfg.SecAgg.Support = sup
				cfg.SecAgg.Local = runspec.SecAggLocalSupportAdam
				cfg.LR = 0.02
				cfg.Workers = c.workers
				cfg.SecAggDropout = SecAggDropout{P: 0.2}
				var mu sync.Mutex
				deltas := map[int][][]float32{}
				cfg.updateHook = func(_ round.ClientID, r int, _ uint64, d []float32) {
					mu.Lock()
					deltas[r] = append(deltas[r], slices.Clone(d))
					mu.Unlock()
				}
				// The support the clients trained on must be the one
				// the protocol aggregates: the round's.
				cfg.secaggHook = func(r int, selected, _ []round.ClientID, _, _ []uint32) {
					mu.Lock()
					defer mu.Unlock()
					if len(deltas[r]) != len(selected) {
						t.Errorf("round %d: %d updates for %d selected clients", r, len(deltas[r]), len(selected))
					}
				}
				prev := runtime.GOMAXPROCS(c.procs)
				res, err := Run(context.Background(), cfg, model, init, data, nil)
				runtime.GOMAXPROCS(prev)
				if err != nil {
					t.Fatal(err)
				}
				for r := 1; r <= 4; r++ {
					on, limit := roundSupport(cfg, len(init), r)
					union := map[int]bool{}
					for _, d := range deltas[r] {
						moved := 0
						for i, v := range d {
							if math.Float32bits(v) == 0 {
								continue
							}
							if on != nil && !on[i] {
								t.Fatalf("round %d: an update moves coordinate %d off the support by %v", r, i, v)
							}
							union[i] = true
							moved++
						}
						if moved == 0 {
							t.Fatalf("round %d: an update moves nothing", r)
						}
					}
					if len(union) > limit {
						t.Fatalf("round %d: the updates move %d coordinates, the support has %d", r, len(union), limit)
					}
				}
				if first, last := res.Rounds[0], res.Rounds[len(res.Rounds)-1]; !(last.TestLoss < first.TestLoss) {
					t.Errorf("test loss %v after round 1, %v after round 4: not learning", first.TestLoss, last.TestLoss)
				}
				if ref == nil {
					ref = res
					continue
				}
				for i := range res.Model {
					if math.Float32bits(res.Model[i]) != math.Float32bits(ref.Model[i]) {
						t.Fatalf("%d workers, GOMAXPROCS %d: parameter %d = %v, 1 worker gives %v", c.workers, c.procs, i, res.Model[i], ref.Model[i])
					}
				}
			}
		})
	}
}

// roundSupport returns round r's random support of a model of n
// parameters as a mask (nil for an announced support, which depends on
// the aggregates) and the support's length (an announced support's
// longest).
func roundSupport(cfg Config, n, r int) ([]bool, int) {
	k := cfg.SecAgg.SupportLen(n)
	sup, _ := runspec.ParseSecAggSupport(cfg.SecAgg.Support)
	if sup.Announced {
		blocks, _ := secagg.AnnouncedBlocks(n, k, sup.Block, sup.Explore)
		return nil, blocks * sup.Block
	}
	idx := make([]int32, k)
	secagg.Support(idx, n, round.TaskSeed(cfg.TaskSeed^saltSupport, r, 0))
	on := make([]bool, n)
	for _, j := range idx {
		on[j] = true
	}
	return on, k
}
