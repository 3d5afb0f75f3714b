package main

import (
	"flag"
	"fmt"
	"math"
	"runtime"
	"slices"
	"strings"

	"github.com/fedzip/fedzip/deliver/pipeline"
	"github.com/fedzip/fedzip/internal/workdir"
	"github.com/fedzip/fedzip/round"
	"github.com/fedzip/fedzip/runspec"
	"github.com/fedzip/fedzip/secagg"
	"github.com/fedzip/fedzip/sim"
)

// simulateFlags are simulate's flags: the run's (runFlags, shared with
// the coordinator) and how the simulator drives it.
type simulateFlags struct {
	runFlags
	// downloadCodecSet says --download-codec was given (runSimulate):
	// otherwise --secagg with a random support downloads seeded syncs.
	downloadCodecSet                   bool
	partition                          string
	clients, evalEvery, workers        int
	evalLast                           int
	alpha, synAlpha, synBeta, target   float64
	metricsOut, saveModel, output      string
	cpuProfile, stateStore             string
	evalGlobal, quiet                  bool
	attack                             string
	attackers, attackScale, attackStd  float64
	backdoorTarget, backdoorTrigger    int
	backdoorFraction                   float64
	dpDelta                            float64
	deliver, deliverRecipe, deliverKey string
	ui, uiToken                        string
	secaggDrop                         float64
	secaggDropStep                     string
	secaggDPNoise, secaggDPClip        float64
	secaggWidth                        int
}

func simulateFlagSet(f *simulateFlags) *flag.FlagSet {
	fs := flag.NewFlagSet("simulate", flag.ContinueOnError)
	addRunFlags(fs, &f.runFlags)
	fs.IntVar(&f.clients, "clients", 100, "number of clients K")
	fs.StringVar(&f.partition, "partition", "iid", "how the data set is split among clients: iid, shards (McMahan's pathological non-IID), dirichlet, or natural (by the clients a file source names: csv client=COL, images layout=client/class; --clients must match)")
	fs.Float64Var(&f.alpha, "alpha", 0.5, "Dirichlet concentration for --partition dirichlet (smaller is more skewed)")
	fs.Float64Var(&f.synAlpha, "synthetic-alpha", 1, "alpha of Synthetic(alpha, beta): how much client models differ")
	fs.Float64Var(&f.synBeta, "synthetic-beta", 1, "beta of Synthetic(alpha, beta): how much client data differ")
	fs.IntVar(&f.evalEvery, "eval-every", 1, "evaluate the global model on the test set every N rounds (0: only after the last)")
	fs.IntVar(&f.evalLast, "eval-last", 0, "also evaluate each of the last N rounds, whatever --eval-every (the robustness tables average the last 10)")
	fs.Float64Var(&f.target, "target", 0, "test accuracy to report rounds and bytes to reach, such as 0.97 (0: none)")
	fs.IntVar(&f.workers, "workers", 0, "clients trained in parallel (0: one per core)")
	fs.BoolVar(&f.evalGlobal, "eval-global", false, "with --download-codec: also evaluate the server's global model every evaluated round (always after the last); the test accuracy is the clients' model")
	fs.Var(workdir.Flag(&f.deliver, "fedzip-model.fzm", nil), "deliver", "after training, compress the global model into this signed device `FILE` (NAME.fzm), signed with the key NAME.key.pem beside it, made once and reused (empty: do not deliver)")
	fs.StringVar(&f.deliverRecipe, "deliver-recipe", pipeline.DefaultRecipe, "compression recipe of the delivered model (see 'fedzip compress -h')")
	fs.StringVar(&f.deliverKey, "deliver-key", "", "ed25519 private key (PEM) to sign the delivered model (default: the key beside the --deliver file, made on first use and reused)")
	fs.StringVar(&f.stateStore, "state-store", "float32", "how clients' error-feedback state is kept between rounds: float32 or float16")
	fs.StringVar(&f.attack, "attack", "none", "Byzantine clients: none, "+strings.Join(sim.AttackKinds, ", ")+" (see --attackers)")
	fs.Float64Var(&f.attackers, "attackers", 0, "fraction of all clients that attack, a seeded subset, in [0, 1]")
	fs.Float64Var(&f.attackScale, "attack-scale", 0, "factor s of the attack: scale sends s·Δ (0: 10), signflip −s·Δ (0: 1), alie mean−s·std of the honest updates (0: the paper's z for the round), ipm −s·mean (0: 0.1), backdoor boosts its update by s (0: selected/attackers of the round, model replacement); minmax and minsum search theirs (see docs/robustness.md)")
	fs.IntVar(&f.backdoorTarget, "backdoor-target", 0, "backdoor: the label its triggered examples are given")
	fs.Float64Var(&f.backdoorFraction, "backdoor-fraction", sim.DefaultPoisonFraction, "backdoor: fraction of an attacker's examples that carry the trigger, in (0, 1]")
	fs.IntVar(&f.backdoorTrigger, "backdoor-trigger", sim.DefaultTrigger, "backdoor: side in pixels of the trigger, a white square in the bottom-right corner of the image")
	fs.Float64Var(&f.attackStd, "attack-stddev", sim.DefaultAttackStddev, "standard deviation of the noise a gaussian attacker sends instead of its update")
	fs.Float64Var(&f.dpDelta, "dp-delta", sim.DefaultDPDelta, "DP-FedAvg: delta at which epsilon is reported")
	fs.StringVar(&f.metricsOut, "metrics-out", "", "write one JSON object per round to this file")
	fs.StringVar(&f.saveModel, "save-model", "", "write the final global model to this file (fedzip model format)")
	fs.StringVar(&f.output, "o", "table", "summary format: table or json")
	fs.BoolVar(&f.quiet, "quiet", false, "print only the summary")
	fs.StringVar(&f.cpuProfile, "cpuprofile", "", "write a CPU profile of the run to this file (go tool pprof)")
	fs.StringVar(&f.ui, "ui", "", "serve the live dashboard at http://ADDR/, e.g. 127.0.0.1:8080, during the run and after it until interrupted (empty: off)")
	holdoutFlag(fs, &f.holdout)
	fs.Float64Var(&f.secaggDrop, "secagg-dropout", 0, "--secagg: probability that a selected client drops out of the protocol, seeded")
	fs.Float64Var(&f.secaggDPNoise, "secagg-dp-noise", 0, "--secagg: distributed DP: noise multiplier z of the discrete Gaussian noise the clients add (0: none; needs --secagg-dp-clip; docs/secagg.md)")
	fs.Float64Var(&f.secaggDPClip, "secagg-dp-clip", 0, "--secagg: distributed DP: L2 norm each client clips its vector on the support to")
	fs.IntVar(&f.secaggWidth, "secagg-width", 0, "--secagg: width m in bits of the masked values (0: the least that holds every sum; narrower wraps a coordinate whose sum leaves the signed m-bit range, counted as secagg_wraps; docs/secagg.md)")
	fs.StringVar(&f.secaggDropStep, "secagg-dropout-step", "random", "--secagg: the step clients drop at: "+strings.Join(sim.SecAggDropSteps, ", "))
	fs.StringVar(&f.uiToken, "ui-token", "", "token the dashboard's data requires; open the page as /?token=TOKEN (empty: none)")
	return fs
}

// config returns the simulation the flags describe: the run spec, checked
// as a coordinator checks it (runspec.Spec.Validate) and against the
// number of clients, then the simulator's own flags, checked here.
func (f *simulateFlags) config() (sim.Config, error) {
	if err := f.validate(); err != nil {
		return sim.Config{}, err
	}
	perRound := runspec.Spec{Round: round.Config{Fraction: f.fraction}}.PerRound(f.clients)
	spec, err := f.spec(round.Config{}, perRound)
	if err != nil {
		return sim.Config{}, err
	}
	if f.secagg {
		var dp *runspec.SecAggDP
		if f.secaggDPNoise != 0 || f.secaggDPClip != 0 {
			dp = &runspec.SecAggDP{Noise: f.secaggDPNoise, Clip: f.secaggDPClip}
		}
		if err := f.secAggSpec(&spec, dp); err != nil {
			return sim.Config{}, err
		}
		if !f.downloadCodecSet {
			spec.DownloadCodec = runspec.SecAggDownloadCodec(spec.DownloadCodec, spec.SecAgg)
			if spec.DownloadCodec != "" {
				f.downloadCodec = spec.DownloadCodec // for the summary
			}
			if err := spec.Validate(); err != nil {
				return sim.Config{}, err
			}
		}
		if err := (sim.SecAggDropout{P: f.secaggDrop, Step: f.secaggDropStep}).Validate(); err != nil {
			return sim.Config{}, err
		}
		if _, _, err := secagg.MaskedWidth(0, f.secaggWidth); err != nil {
			return sim.Config{}, fmt.Errorf("--secagg-width %d: %w", f.secaggWidth, err)
		}
	} else if f.secaggDPNoise != 0 || f.secaggDPClip != 0 || f.secaggWidth != 0 {
		return sim.Config{}, fmt.Errorf("--secagg-dp-noise, --secagg-dp-clip and --secagg-width need --secagg")
	}
	if err := spec.CheckClients(f.clients); err != nil {
		return sim.Config{}, err
	}
	workers := f.workers
	if workers == 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	return sim.Config{Spec: spec, Workers: workers, EvalEvery: f.evalEvery, EvalLast: f.evalLast, StateStore: f.stateStore, EvalGlobal: f.evalGlobal,
		Attack: f.attackConfig(), DPDelta: f.dpDelta, SecAggDropout: sim.SecAggDropout{P: f.secaggDrop, Step: f.secaggDropStep},
		SecAggWidth: f.secaggWidth}, nil
}

// validate checks the flags that are the simulator's, not the run's.
func (f *simulateFlags) validate() error {
	oneOf := func(name, v string, allowed ...string) error {
		if slices.Contains(allowed, v) {
			return nil
		}
		return fmt.Errorf("--%s %q: want one of %s", name, v, strings.Join(allowed, ", "))
	}
	for _, c := range []struct {
		name, v string
		allowed []string
	}{
		{"partition", f.partition, []string{"iid", "shards", "dirichlet", "natural"}},
		{"o", f.output, []string{"table", "json"}},
		{"state-store", f.stateStore, []string{"float32", "float16"}},
		{"attack", f.attack, append([]string{"none"}, sim.AttackKinds...)},
	} {
		if err := oneOf(c.name, c.v, c.allowed...); err != nil {
			return err
		}
	}
	switch {
	case f.clients < 1 || f.clients > 1_000_000:
		return fmt.Errorf("--clients %d: want 1..1000000", f.clients)
	case f.rounds < 1:
		return fmt.Errorf("--rounds %d: want 1..%d", f.rounds, runspec.MaxRounds)
	case !(f.alpha > 0) || f.alpha > 1e6:
		return fmt.Errorf("--alpha %v: want a positive value", f.alpha)
	case f.evalLast < 0:
		return fmt.Errorf("--eval-last %d: want 0 or more", f.evalLast)
	case f.evalEvery < 0:
		return fmt.Errorf("--eval-every %d: want 0 or more", f.evalEvery)
	case f.workers < 0:
		return fmt.Errorf("--workers %d: want 0 or more", f.workers)
	case !(f.target >= 0 && f.target <= 1):
		return fmt.Errorf("--target %v: want an accuracy in [0, 1]", f.target)
	case !(f.synAlpha >= 0) || !(f.synBeta >= 0):
		return fmt.Errorf("--synthetic-alpha and --synthetic-beta must be non-negative")
	case !(f.attackers >= 0 && f.attackers <= 1):
		return fmt.Errorf("--attackers %v: want a fraction in [0, 1]", f.attackers)
	case f.attack == "none" && f.attackers > 0:
		return fmt.Errorf("--attackers %v without --attack: want --attack %s", f.attackers, strings.Join(sim.AttackKinds, "|"))
	case f.attack != "none" && f.attackers == 0:
		return fmt.Errorf("--attack %s needs --attackers FRACTION > 0", f.attack)
	case f.attack != "none" && math.Round(f.attackers*float64(f.clients)) == 0:
		return fmt.Errorf("--attackers %v of %d clients rounds to no attacker", f.attackers, f.clients)
	case !(f.attackScale >= 0 && f.attackScale <= 1e6):
		return fmt.Errorf("--attack-scale %v: want a value in [0, 1e6]", f.attackScale)
	case !(f.attackStd > 0 && f.attackStd <= 1e6):
		return fmt.Errorf("--attack-stddev %v: want a value in (0, 1e6]", f.attackStd)
	case f.attackScale > 0 && (f.attack == "minmax" || f.attack == "minsum"):
		return fmt.Errorf("--attack-scale %v: --attack %s searches its own factor", f.attackScale, f.attack)
	case f.backdoorTarget < 0 || f.backdoorTarget > 255:
		return fmt.Errorf("--backdoor-target %d: want a label in 0..255 (and below the number of classes)", f.backdoorTarget)
	case !(f.backdoorFraction > 0 && f.backdoorFraction <= 1):
		return fmt.Errorf("--backdoor-fraction %v: want a fraction in (0, 1]", f.backdoorFraction)
	case f.backdoorTrigger < 1 || f.backdoorTrigger > sim.MaxTrigger:
		return fmt.Errorf("--backdoor-trigger %d: want a side of 1..%d pixels", f.backdoorTrigger, sim.MaxTrigger)
	case !(f.dpDelta > 0 && f.dpDelta < 1):
		return fmt.Errorf("--dp-delta %v: want a value in (0, 1)", f.dpDelta)
	}
	return nil
}

// attackConfig returns the simulator's attack for the flags.
func (f *simulateFlags) attackConfig() sim.Attack {
	if f.attack == "none" {
		return sim.Attack{}
	}
	return sim.Attack{Kind: f.attack, Fraction: f.attackers, Scale: f.attackScale, Stddev: f.attackStd, Seed: f.seed,
		Target: f.backdoorTarget, PoisonFraction: f.backdoorFraction, Trigger: f.backdoorTrigger}
}

func (f *simulateFlags) partitionLabel() string {
	switch {
	case f.dataset == "synthetic" || f.partition == "natural":
		return "natural split"
	case f.partition == "dirichlet":
		return fmt.Sprintf("dirichlet alpha=%g", f.alpha)
	}
	return f.partition
}
