package runspec

import (
	"math"
	"strconv"
	"strings"

	"github.com/fedzip/fedzip/aggregate"
	"github.com/fedzip/fedzip/gradient"
	"github.com/fedzip/fedzip/nn"
)

// SecAgg turns on secure aggregation (SecAgg+, package secagg) with its
// compression: every client of a round sends the values of one shared
// random-k support (secagg.Support, drawn from the round's seed, so no
// indices are sent), in fixed point, masked; the server learns only their
// sum, divides it by the number of survivors (equal weights: secagg hides
// per-client weights) and applies it with the strategy's server step.
// What a client does not send, or clips, joins its error-feedback residual.
// See docs/secagg.md.
type SecAgg struct {
	// Fraction is the fraction of the model's coordinates on the support,
	// in (0, 1] (--secagg-k).
	Fraction float64 `json:"fraction"`
	// Bits is the fixed-point width b, 2..MaxSecAggBits: values are
	// clipped to [-clip, clip] and coded on 2^(b-1)-1 levels either side.
	// The sum of n codes cannot wrap modulo 2^32 while n·2^b <= 2^32
	// (secagg.FixedPoint.Check).
	Bits int `json:"bits"`
	// Clip is the fixed-point range: a positive value is fixed; 0 is
	// automatic, ClipMult times the RMS of the previous round's mean
	// update on its support (DefaultSecAggClip in round 1).
	Clip float64 `json:"clip,omitempty"`
	// Neighbours (k) and Threshold (t) are the protocol's neighbourhood
	// size and threshold; 0 chooses them (secagg.ChooseK).
	Neighbours int `json:"neighbours,omitempty"`
	Threshold  int `json:"threshold,omitempty"`
	// Support is how the round's support is chosen (--secagg-support):
	// "" or "random", random-k from the round seed; "announced" or
	// "announced,explore=F,block=B", the top of the server's estimate from
	// the published aggregates (secagg.Importance) in blocks of B
	// consecutive coordinates (DefaultSecAggBlock), with a fraction F of
	// the blocks (DefaultSecAggExplore) random-k from the round seed.
	// See ParseSecAggSupport.
	Support string `json:"support,omitempty"`
	// DP is the distributed discrete Gaussian noise each client adds
	// (nil: none); see SecAggDP.
	DP *SecAggDP `json:"dp,omitempty"`
	// Local is the clients' local training (--secagg-local): "" or
	// SecAggLocalSGD, SGD on every coordinate (--lr, --momentum,
	// --weight-decay, --prox-mu); SecAggLocalSupportAdam, Adam on the
	// round's support only (nn.Trainer.SupportAdamEpochs at rate --lr,
	// fresh moments for each client and round), so that a client's update
	// is zero off the support and nothing it trains is left in its
	// residual. Omitted from the JSON when "", so that a run committed
	// before the field replays as it was.
	Local string `json:"local,omitempty"`
}

// The clients' local training under secure aggregation (SecAgg.Local).
const (
	SecAggLocalSGD         = "sgd"
	SecAggLocalSupportAdam = "support-adam"
)

// CheckSecAggLocal reports local training that local (SecAgg.Local)
// refuses: an unknown name, or with SecAggLocalSupportAdam, SGD's
// momentum, weight decay or FedProx's proximal term, which Adam on the
// support does not take (its first moment is its momentum; a decay or a
// pull towards the global model on every coordinate would move
// coordinates off the support). It is the run's check and the client's.
func CheckSecAggLocal(local string, opt nn.SGD, proxMu float32) error {
	switch local {
	case "", SecAggLocalSGD:
		return nil
	case SecAggLocalSupportAdam:
	default:
		return invalid("--secagg-local %q: want %s or %s", local, SecAggLocalSGD, SecAggLocalSupportAdam)
	}
	switch {
	case opt.Momentum != 0:
		return invalid("--secagg-local %s with --momentum %v: Adam keeps its own first moment; leave --momentum at 0", local, opt.Momentum)
	case opt.WeightDecay != 0:
		return invalid("--secagg-local %s with --weight-decay %v: the decay would move coordinates off the support; leave it at 0", local, opt.WeightDecay)
	case proxMu != 0:
		return invalid("--secagg-local %s with --prox-mu %v: FedProx's term is for SGD on every coordinate; leave it at 0", local, proxMu)
	}
	return nil
}

// SupportLen is the number of coordinates the simulator puts on a round's
// support for a model of n parameters: Fraction·n rounded, at least 1 and
// at most n (an announced support rounds it to whole blocks). The
// coordinator's announced support takes the same.
func (s SecAgg) SupportLen(n int) int {
	return min(max(int(math.Round(s.Fraction*float64(n))), 1), n)
}

// SecAggSupport is a parsed SecAgg.Support.
type SecAggSupport struct {
	// Announced is true for a support the server announces.
	Announced bool
	// Explore is the fraction of an announced support's blocks drawn at
	// random from the round seed, in [0, 1].
	Explore float64
	// Block is the number of consecutive coordinates in a block of an
	// announced support, 1..MaxSecAggBlock: the server announces blocks.
	Block int
}

// Defaults and bounds of an announced support.
const (
	DefaultSecAggExplore = 0.25
	DefaultSecAggBlock   = 16
	MaxSecAggBlock       = 1 << 16
)

// ParseSecAggSupport parses SecAgg.Support: "" or "random", "announced",
// or "announced," followed by explore=F (F in [0, 1]) and/or block=B
// (B in 1..MaxSecAggBlock), comma-separated.
func ParseSecAggSupport(s string) (SecAggSupport, error) {
	name, rest, opts := strings.Cut(strings.TrimSpace(s), ",")
	switch strings.TrimSpace(name) {
	case "", "random":
		if opts {
			return SecAggSupport{}, invalid("--secagg-support %q: random takes no options", s)
		}
		return SecAggSupport{}, nil
	case "announced":
	default:
		return SecAggSupport{}, invalid("--secagg-support %q: want random or announced[,explore=F]", s)
	}
	sup := SecAggSupport{Announced: true, Explore: DefaultSecAggExplore, Block: DefaultSecAggBlock}
	if !opts {
		return sup, nil
	}
	for _, f := range strings.Split(rest, ",") {
		k, v, _ := strings.Cut(f, "=")
		v = strings.TrimSpace(v)
		switch strings.TrimSpace(k) {
		case "explore":
			x, err := strconv.ParseFloat(v, 64)
			if err != nil || !(x >= 0 && x <= 1) {
				return SecAggSupport{}, invalid("--secagg-support %q: explore=%s: want a fraction in [0, 1]", s, v)
			}
			sup.Explore = x
		case "block":
			b, err := strconv.Atoi(v)
			if err != nil || b < 1 || b > MaxSecAggBlock {
				return SecAggSupport{}, invalid("--secagg-support %q: block=%s: want 1..%d coordinates", s, v, MaxSecAggBlock)
			}
			sup.Block = b
		default:
			return SecAggSupport{}, invalid("--secagg-support %q: unknown option %q (want explore=F or block=B)", s, k)
		}
	}
	return sup, nil
}

// Defaults and bounds of SecAgg.
const (
	DefaultSecAggFraction = 0.01
	DefaultSecAggBits     = 8
	MaxSecAggBits         = 24
	// DefaultSecAggClip is the automatic clip of the first round, before
	// any aggregate gives a scale.
	DefaultSecAggClip = 0.01
	// SecAggClipMult is the automatic clip as a multiple of the RMS of
	// the previous round's mean update on its support.
	SecAggClipMult = 8
)

// validateSecAgg checks s.SecAgg against the rest of the run: the upload
// codec is the secagg one, and the strategy only sees the mean (see
// SecAggNormBound).
func (s Spec) validateSecAgg() error {
	sa := s.SecAgg
	if sa == nil {
		return nil
	}
	switch {
	case !(sa.Fraction > 0 && sa.Fraction <= 1):
		return invalid("--secagg-k %v: want a fraction in (0, 1]", sa.Fraction)
	case sa.Bits < 2 || sa.Bits > MaxSecAggBits:
		return invalid("--secagg-bits %d: want 2..%d", sa.Bits, MaxSecAggBits)
	case !(sa.Clip >= 0) || math.IsInf(sa.Clip, 0):
		return invalid("--secagg-clip %v: want a positive value (0: automatic)", sa.Clip)
	case sa.Neighbours < 0 || sa.Threshold < 0:
		return invalid("--secagg-neighbours %d, --secagg-threshold %d: want 0 (choose) or more", sa.Neighbours, sa.Threshold)
	case (sa.Neighbours == 0) != (sa.Threshold == 0):
		return invalid("--secagg-neighbours and --secagg-threshold: set both or neither")
	case !gradient.IsNone(s.UploadCodec):
		return invalid("--upload-codec %q with --secagg: secure aggregation sends its own random-k fixed-point values (--secagg-k, --secagg-bits)", s.UploadCodec)
	}
	if _, err := ParseSecAggSupport(sa.Support); err != nil {
		return err
	}
	if err := sa.DP.validate(sa.Clip); err != nil {
		return err
	}
	if err := CheckSecAggLocal(sa.Local, s.Optimizer(), float32(s.ProxMu)); err != nil {
		return err
	}
	if sa.Local == SecAggLocalSupportAdam && sa.Clip == 0 {
		// The automatic clip follows the previous round's mean update
		// (DefaultSecAggClip in round 1), which Adam's first moves, about
		// --lr a step on every coordinate of the support, far outgrow:
		// most of the first rounds' values would be clipped.
		return invalid("--secagg-local %s needs a fixed --secagg-clip: the automatic clip follows the previous round's mean update, which Adam's moves of about --lr a step outgrow (0.5 with --lr 0.07 reaches 95%% on the iid 2NN, docs/secagg.md)", sa.Local)
	}
	_, err := SecAggNormBound(s.Strategy)
	return err
}

// secAggDefaultStrategy is what the default strategy stands for under
// secure aggregation: its server step, without the keys that need each
// update (the bound by the round's medians, a quorum).
const secAggDefaultStrategy = "fedavgm,lr=3,momentum=0,anneal=200"

// SecAggStrategy returns the strategy a run with secure aggregation uses
// for strategy: the default strategy's server step alone for
// DefaultStrategy, strategy itself otherwise (which SecAggNormBound may
// refuse).
func SecAggStrategy(strategy string) string {
	if strategy == DefaultStrategy {
		return secAggDefaultStrategy
	}
	return strategy
}

// SecAggNormBound checks that strategy can run on masked inputs and
// returns the norm bound its clients apply to their own updates (0:
// none). The server sees only the round's sum, so only the mean-based
// rules that read nothing but the mean are allowed: fedavg, fedavgm,
// fedadam, fedyogi, fedadagrad, with mean=all. Rules that inspect each
// update (median, trimmed-mean, krum, bulyan, multi-krum, cclip, signvote)
// and the wrappers that do (bound=auto written out, filter, bucket,
// reputation, quorum, server-side DP) are refused. bound=N moves to the
// clients: each clips its update to L2 norm N before encoding. The
// implicit default bound (AutoBound around a mean-based rule) has nothing
// to bound, since every survivor is credited with the same mean.
func SecAggNormBound(strategy string) (float64, error) {
	st, err := aggregate.Parse(strategy)
	if err != nil {
		return 0, invalid("--strategy %q: %w", strategy, err)
	}
	if hasKey(strategy, "bound", "auto") || hasKey(strategy, "bound-median", "") || hasKey(strategy, "weight-cap", "") || hasKey(strategy, "bound-growth", "") {
		return 0, invalid("--strategy %q with --secagg: bound=auto (and its bound-median, weight-cap, bound-growth) needs each update's norm, which masking hides; use bound=N (each client clips its own update) or bound=off", strategy)
	}
	inner, bound := st, 0.0
	switch b := st.(type) {
	case aggregate.AutoBound:
		inner = b.Inner
	case aggregate.NormBound:
		inner, bound = b.Inner, b.Bound
	}
	ok := false
	switch r := inner.(type) {
	case nil:
		ok = true
	case aggregate.FedAvg:
		ok = r.Mean == aggregate.MeanAll
	case *aggregate.FedAvgM:
		ok = r.Mean == aggregate.MeanAll
	case *aggregate.FedAdam:
		ok = r.Mean == aggregate.MeanAll
	case *aggregate.FedYogi:
		ok = r.Mean == aggregate.MeanAll
	case *aggregate.FedAdagrad:
		ok = r.Mean == aggregate.MeanAll
	}
	if !ok {
		return 0, invalid("--strategy %q with --secagg: the server sees only the round's sum; use a mean-based rule (fedavg, fedavgm, fedadam, fedyogi, fedadagrad) with mean=all and no filter, bucket, reputation, quorum or dp-* key", strategy)
	}
	return bound, nil
}

// hasKey reports whether a strategy spec sets key to val (to any value if
// val is "").
func hasKey(spec, key, val string) bool {
	for _, f := range strings.Split(spec, ",")[1:] {
		k, v, _ := strings.Cut(f, "=")
		if strings.TrimSpace(k) == key && (val == "" || strings.TrimSpace(v) == val) {
			return true
		}
	}
	return false
}
