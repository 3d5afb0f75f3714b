package aggregate

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Param describes one key of a strategy spec, for help texts.
type Param struct {
	Key     string // the key, such as "lr"
	Default string // its default value, "" when it has none
	Help    string // a one-line description
}

// strategyParams returns the keys of strategy name, nil for an unknown one.
func strategyParams(name string) ([]Param, bool) {
	mean := Param{"mean", "all", "divide each coordinate by the weight of all updates (all) or of those non-zero there (senders; for sparse updates)"}
	over := Param{"over", "all", "take each coordinate's statistic over all updates (all) or over those non-zero there (senders; for sparse updates)"}
	minSenders := Param{"min-senders", "2", "over=senders: fewest senders for the statistic over them; fewer take it over all updates"}
	adaptive := func(lr string) []Param {
		return []Param{
			{"lr", lr, "server learning rate η"},
			{"beta1", "0.9", "first-moment decay β1, in [0, 1)"},
			{"beta2", "0.99", "second-moment decay β2, in [0, 1)"},
			{"tau", "0.001", "adaptivity τ, > 0"},
			mean,
		}
	}
	switch name {
	case "fedavg":
		return []Param{mean}, true
	case "median":
		return []Param{over, minSenders}, true
	case "fedavgm":
		return []Param{
			{"lr", "1", "server learning rate η"},
			{"momentum", "0.9", "server momentum β, in [0, 1)"},
			{"anneal", "0", "rounds over which lr moves linearly to lr-end (0: lr in every round)"},
			{"lr-end", "1", "with anneal: the server learning rate from round anneal on"},
			mean,
		}, true
	case "fedadam":
		return append(adaptive("0.1"), Param{"bias-correction", "false", "Adam bias correction of η (Flower's variant)"}), true
	case "fedyogi":
		return adaptive("0.01"), true
	case "fedadagrad":
		return []Param{
			{"lr", "0.1", "server learning rate η"},
			{"beta1", "0", "first-moment decay β1, in [0, 1)"},
			{"tau", "0.001", "adaptivity τ, > 0"},
			mean,
		}, true
	case "trimmed-mean":
		return []Param{{"beta", "0.2", "fraction trimmed at each end, in [0, 0.5)"}, over, minSenders}, true
	case "krum", "bulyan":
		return []Param{{"f", "1", "Byzantine updates tolerated"}}, true
	case "signvote":
		return []Param{
			{"lr", ff(DefaultSignVoteLR), "step of each coordinate in the direction of its senders' majority sign"},
			{"weighted", "false", "weigh each vote by the update's weight (example count) instead of 1"},
		}, true
	case "cclip":
		return []Param{
			{"tau", "1", "clipping radius as a multiple of the round's median distance to the center, > 0"},
			{"iters", "3", "clipping steps a round, 1 to 100"},
			{"lr", "1", "server learning rate η"},
			{"reject", "0", "leave out of a step the updates farther than this multiple of the median distance, ≥ 1; 0: clip them all"},
			{"same", "0", "updates with cosine similarity at least this, in (0, 1], count as one; 0: off"},
			{"growth", "0", "cap the median distance at this multiple of the last round's, ≥ 1; 0: off"},
			{"gram", "false", "compute distances (and reputation's scores) from the round's Gram matrix: faster, sparse stays sparse, other bits"},
		}, true
	case "multi-krum":
		return []Param{
			{"f", "1", "Byzantine updates tolerated"},
			{"m", "0", "updates averaged; 0 means clients − f"},
		}, true
	}
	return nil, false
}

// wrapperParams are the keys every strategy accepts: norm bounding and
// differential privacy.
var wrapperParams = []Param{
	{"bound", "auto", "auto: clip each update's L2 norm and cap its weight at multiples of the round's medians (AutoBound; the default of the mean-based rules); off: neither; a number: clip to this L2 norm (NormBound)"},
	{"bound-median", "2", "bound=auto: clip norms to this multiple of the round's median norm, ≥ 1, or off"},
	{"weight-cap", "2", "bound=auto: cap weights at this multiple of the round's median weight, ≥ 1, or off"},
	{"bound-growth", "off", "bound=auto: cap the round's median norm at this multiple of the last round's, ≥ 1, or off (the default strategy says 2)"},
	{"bucket", "", "average shuffled buckets of this many updates before the rule (Bucketing; for robust rules on non-IID clients)"},
	{"bucket-seed", "0", "seed of the bucket shuffle"},
	{"filter", "", "drop updates whose cosine with the coordinate-wise median is below this, in [-1, 1] (DirectionFilter; before bucket and the rule)"},
	{"filter-max", "0.5", "filter: largest fraction of a round's updates dropped, in [0, 0.5]"},
	{"reputation", "", "exclude clients whose mean agreement score is this many standard errors below everyone's, > 0 (Reputation; stateful, before filter)"},
	{"reputation-min", "3", "reputation: scores a client needs before it can be excluded, ≥ 1"},
	{"reputation-max", "0.5", "reputation: largest fraction of a round's updates excluded, in [0, 0.5]"},
	{"reputation-clients", "0", "reputation: most clients tracked; 0 means 2^20"},
	{"reputation-high", "0", "reputation: also exclude clients whose mean agreement score is this many standard errors above everyone's, > 0 (colluders under a sparsifying codec); 0: off"},
	{"reputation-norm", "0", "reputation: also exclude clients whose update norms average (geometrically) more than this multiple of their rounds' median norm, ≥ 1; 0: off"},
	{"reputation-skip-head", "false", "reputation: score agreement without the model's last layer (its classifier head, whose updates disagree by design on label-skewed data)"},
	{"reputation-norm-robust", "false", "reputation-norm: take the median norms and the line on the example counts over the clients the agreement bars trust, each update's pull on the line bounded (so that the attackers judged do not move the bar)"},
	{"quorum", "", "move a block of coordinates only once at least this many distinct clients, 1..64, have sent it (Quorum, against a backdoor where honest clients send nothing; stateful, outside reputation)"},
	{"quorum-block", "4", "quorum: consecutive coordinates that share one support set, 1..1024"},
	{"quorum-min", "0.5", "quorum: a value counts as sent when at least this fraction of the RMS of its update's non-zero values, in [0, 1]"},
	{"quorum-seed", "0", "quorum: seed of the hash of client IDs"},
	{"quorum-frac", "0", "quorum-by=input: lower the quorum to this fraction of the distinct clients seen while that is below quorum, in [0, 1]"},
	{"quorum-by", "block", "quorum: block (quorum-block consecutive coordinates share a support set) or input (the first dense layer's weights, one set per input feature; other layers unguarded)"},
	{"dp-clip", "", "DP-FedAvg clipping norm C (initial C with dp-adaptive; default 0.1 then)"},
	{"dp-noise", "0", "DP-FedAvg noise multiplier z"},
	{"dp-seed", "0", "seed of the DP noise"},
	{"dp-clients", "0", "expected clients per round m, the mean's denominator; 0 means those received"},
	{"dp-adaptive", "false", "adaptive clipping (Andrew et al. 2021)"},
	{"dp-quantile", "0.5", "adaptive clipping: target unclipped fraction γ"},
	{"dp-clip-lr", "0.2", "adaptive clipping: clip learning rate η_C"},
	{"dp-count-stddev", "", "adaptive clipping: noise on the unclipped count; default dp-clients/20"},
}

// Params returns the keys a spec for strategy name accepts: the strategy's
// own, then the wrapper keys (bound, dp-*) every strategy accepts.
func Params(name string) ([]Param, error) {
	p, ok := strategyParams(name)
	if !ok {
		return nil, fmt.Errorf("%w %q (known: %s)", ErrUnknownStrategy, name, strings.Join(Names(), ", "))
	}
	return append(slices.Clip(p), wrapperParams...), nil
}

// Parse returns the strategy a spec describes. A spec is a name from Names
// followed by comma-separated key=value parameters, such as
//
//	fedadam,lr=0.03,tau=1e-4
//	multi-krum,f=2,m=5
//	trimmed-mean,beta=0.1,bound=10
//	fedavg,dp-clip=1,dp-noise=1.1,dp-clients=10,dp-seed=7
//
// Params lists each strategy's keys and their defaults. A mean-based rule
// (fedavg, fedavgm, fedadam, fedyogi, fedadagrad) without a bound or dp-*
// key is wrapped in AutoBound with the default multiples, so that "fedavg"
// means "fedavg,bound=auto,bound-median=2,weight-cap=2"; bound=off leaves
// it bare, bound=auto puts AutoBound around any rule, and a number wraps
// the rule in NormBound; any dp-* key wraps it in DP, which needs a
// mean-based strategy and clips itself. An empty spec means "fedavg".
// Unknown names, unknown or repeated keys, malformed values and values out
// of range are errors (ErrUnknownStrategy, ErrParam, ErrPrivacy) that name
// the culprit.
func Parse(spec string) (Strategy, error) { return parse(spec, true) }

// ParseLegacy parses a spec as Parse did before AutoBound was the default:
// a spec without a bound key gives the bare rule. It is for replaying a
// coordinator's log written then, which must give the model it gave.
func ParseLegacy(spec string) (Strategy, error) { return parse(spec, false) }

// IsBounded reports whether s bounds its updates' norms (AutoBound,
// NormBound or DP clipping) at its outermost layer, which Parse gives every
// mean-based rule unless its spec says bound=off.
func IsBounded(s Strategy) bool {
	switch b := s.(type) {
	case AutoBound:
		return b.NormMult > 0
	case NormBound, *DP:
		return true
	}
	return false
}

// RobustSpec is what the strategy name "robust" stands for: the
// recommended rule against Byzantine clients, dense or compressed (see
// docs/strategies.md and docs/robustness.md for what it was measured
// against). Clients whose updates keep disagreeing with the others'
// (reputation=2) or keep agreeing with one another far more than honest
// clients do (reputation-high=3: colluders under a sparsifying codec) are
// excluded (Reputation), and so are clients whose updates stay 1.7 times
// larger than their example counts explain (reputation-norm=1.7: label
// flipping on skewed data), judged against the medians and line of the
// clients the agreement bars trust (reputation-norm-robust, so that
// inner-product manipulation's small updates do not move the bar). The
// agreement is scored without the model's last layer
// (reputation-skip-head: on label-skewed data the classifier head's
// updates disagree by design, and a reversed update looks agreeable
// there). The rest are aggregated by centered clipping (CenteredClip) from the last
// round's aggregate, with the radius at the round's median distance to
// the center, updates beyond 4 times it left out, identical updates
// (cosine ≥ 0.99) counted once, and the radius growing at most 2× a round.
// Distances, cosines and scores come from the round's Gram matrix
// (gram=true: one pass over the updates, and sparse updates stay sparse).
const RobustSpec = "cclip,tau=1,iters=3,lr=1,reject=4,same=0.99,growth=2,gram=true,reputation=2,reputation-high=3,reputation-norm=1.7,reputation-norm-robust=true,reputation-skip-head=true"

// RobustSpecV5 is what "robust" expanded to before gram=true was in it,
// computing the same rule by passes over the updates (other rounding); a
// log that committed it replays as it was applied (TestGoldenBits pins
// its bits).
const RobustSpecV5 = "cclip,tau=1,iters=3,lr=1,reject=4,same=0.99,growth=2,reputation=2,reputation-high=3,reputation-norm=1.7,reputation-norm-robust=true,reputation-skip-head=true"

// RobustSpecV4 is what "robust" expanded to before reputation-skip-head
// was in it, scoring agreement over the whole model; a log that committed
// it replays as it was applied (TestGoldenBits pins its bits).
const RobustSpecV4 = "cclip,tau=1,iters=3,lr=1,reject=4,same=0.99,growth=2,reputation=2,reputation-high=3,reputation-norm=1.7,reputation-norm-robust=true"

// RobustSpecV3 is what "robust" expanded to before reputation-norm and
// reputation-norm-robust were in it; a log that committed it replays as it
// was applied (TestGoldenBits pins its bits).
const RobustSpecV3 = "cclip,tau=1,iters=3,lr=1,reject=4,same=0.99,growth=2,reputation=2,reputation-high=3"

// RobustSpecV2 is what "robust" expanded to before reputation-high and
// reputation-norm. A log that committed it replays as it was applied: the
// expansion is explicit, and the keys added since are off when absent.
const RobustSpecV2 = "cclip,tau=1,iters=3,lr=1,reject=4,same=0.99,growth=2,reputation=2"

// RobustSpecV1 is what "robust" stood for before RobustSpec was centered
// clipping: a coordinator log committed then names "robust", and replays
// with it (see ExpandRobust).
const RobustSpecV1 = "trimmed-mean,beta=0.2,over=senders,min-senders=2,bucket=2,reputation=2,bound=auto"

// ExpandRobust returns RobustSpec for the spec "robust" and any other spec
// unchanged. A coordinator commits the expansion, so that its log keeps its
// meaning when RobustSpec changes.
func ExpandRobust(spec string) string {
	if strings.TrimSpace(spec) == "robust" {
		return RobustSpec
	}
	return spec
}

func parse(spec string, autoDefault bool) (Strategy, error) {
	if strings.TrimSpace(spec) == "robust" && autoDefault {
		spec = RobustSpec
	}
	fields := strings.Split(spec, ",")
	name := strings.TrimSpace(fields[0])
	if name == "" && len(fields) == 1 {
		name = "fedavg"
	}
	known, ok := strategyParams(name)
	if !ok {
		return nil, fmt.Errorf("%w %q (known: %s)", ErrUnknownStrategy, name, strings.Join(Names(), ", "))
	}
	p := &kv{name: name, vals: map[string]string{}, autoDefault: autoDefault}
	for _, f := range fields[1:] {
		key, val, ok := strings.Cut(f, "=")
		key, val = strings.TrimSpace(key), strings.TrimSpace(val)
		if !ok || key == "" {
			return nil, fmt.Errorf("%w: %s: %q is not key=value", ErrParam, name, strings.TrimSpace(f))
		}
		if _, dup := p.vals[key]; dup {
			return nil, fmt.Errorf("%w: %s: key %q given twice", ErrParam, name, key)
		}
		if !hasKey(known, key) && !hasKey(wrapperParams, key) {
			all, _ := Params(name)
			keys := make([]string, len(all))
			for i, q := range all {
				keys[i] = q.Key
			}
			return nil, fmt.Errorf("%w: %s has no parameter %q (known: %s)", ErrParam, name, key, strings.Join(keys, ", "))
		}
		p.vals[key] = val
	}
	s := p.strategy()
	if s, ok := p.wrap(s); ok && p.err == nil {
		if err := validateStrategy(s); err != nil {
			return nil, fmt.Errorf("%s: %w", spec, err)
		}
		return s, nil
	}
	return nil, p.err
}

func hasKey(ps []Param, key string) bool {
	return slices.ContainsFunc(ps, func(p Param) bool { return p.Key == key })
}

// kv reads typed parameters, keeping the first error.
type kv struct {
	name        string
	vals        map[string]string
	err         error
	autoDefault bool // no bound key means bound=auto for a mean-based rule
}

func (p *kv) has(key string) bool { _, ok := p.vals[key]; return ok }

func (p *kv) fail(key, val, want string) {
	if p.err == nil {
		p.err = fmt.Errorf("%w: %s: %s=%q: want %s", ErrParam, p.name, key, val, want)
	}
}

func (p *kv) float(key string, def float64) float64 {
	v, ok := p.vals[key]
	if !ok {
		return def
	}
	x, err := strconv.ParseFloat(v, 64)
	if err != nil {
		p.fail(key, v, "a number")
		return def
	}
	return x
}

func (p *kv) int(key string, def int) int {
	v, ok := p.vals[key]
	if !ok {
		return def
	}
	x, err := strconv.Atoi(v)
	if err != nil {
		p.fail(key, v, "an integer")
		return def
	}
	return x
}

func (p *kv) uint64(key string, def uint64) uint64 {
	v, ok := p.vals[key]
	if !ok {
		return def
	}
	x, err := strconv.ParseUint(v, 0, 64)
	if err != nil {
		p.fail(key, v, "an unsigned integer")
		return def
	}
	return x
}

func (p *kv) bool(key string, def bool) bool {
	v, ok := p.vals[key]
	if !ok {
		return def
	}
	x, err := strconv.ParseBool(v)
	if err != nil {
		p.fail(key, v, "true or false")
		return def
	}
	return x
}

// mult reads a multiple that may be "off" (0).
func (p *kv) mult(key string, def float64) float64 {
	if p.vals[key] == "off" {
		return 0
	}
	return p.float(key, def)
}

// isMeanBased reports whether the rule name weighs and averages updates,
// which AutoBound guards by default.
func isMeanBased(name string) bool {
	switch name {
	case "fedavg", "fedavgm", "fedadam", "fedyogi", "fedadagrad":
		return true
	}
	return false
}

// senders reads the over and min-senders keys of median and
// trimmed-mean; min-senders defaults to DefaultMinSenders with
// over=senders.
func (p *kv) senders() (MeanOver, int) {
	over := p.over()
	ms := p.int("min-senders", 0)
	if over == MeanSenders && ms == 0 {
		ms = DefaultMinSenders
	}
	return over, ms
}

// over reads the over key of median and trimmed-mean.
func (p *kv) over() MeanOver {
	v, ok := p.vals["over"]
	if !ok {
		return MeanAll
	}
	m, ok := parseMeanOver(v)
	if !ok {
		p.fail("over", v, "all or senders")
	}
	return m
}

func (p *kv) meanOver() MeanOver {
	v, ok := p.vals["mean"]
	if !ok {
		return MeanAll
	}
	m, ok := parseMeanOver(v)
	if !ok {
		p.fail("mean", v, "all or senders")
	}
	return m
}

func (p *kv) strategy() Strategy {
	switch p.name {
	case "fedavg":
		return FedAvg{Mean: p.meanOver()}
	case "fedavgm":
		s := NewFedAvgM()
		s.LR, s.Momentum = p.float("lr", s.LR), p.float("momentum", s.Momentum)
		s.Anneal = p.int("anneal", 0)
		if s.Anneal != 0 || p.has("lr-end") {
			s.LREnd = p.float("lr-end", 1)
		}
		s.Mean = p.meanOver()
		return s
	case "fedadam":
		s := NewFedAdam()
		s.LR, s.Beta1, s.Beta2, s.Tau = p.float("lr", s.LR), p.float("beta1", s.Beta1), p.float("beta2", s.Beta2), p.float("tau", s.Tau)
		s.BiasCorrection = p.bool("bias-correction", false)
		s.Mean = p.meanOver()
		return s
	case "fedyogi":
		s := NewFedYogi()
		s.LR, s.Beta1, s.Beta2, s.Tau = p.float("lr", s.LR), p.float("beta1", s.Beta1), p.float("beta2", s.Beta2), p.float("tau", s.Tau)
		s.Mean = p.meanOver()
		return s
	case "fedadagrad":
		s := NewFedAdagrad()
		s.LR, s.Beta1, s.Tau = p.float("lr", s.LR), p.float("beta1", s.Beta1), p.float("tau", s.Tau)
		s.Mean = p.meanOver()
		return s
	case "median":
		over, ms := p.senders()
		return Median{Over: over, MinSenders: ms}
	case "trimmed-mean":
		over, ms := p.senders()
		return TrimmedMean{Beta: p.float("beta", 0.2), Over: over, MinSenders: ms}
	case "krum":
		return Krum{F: p.int("f", 1)}
	case "multi-krum":
		return MultiKrum{F: p.int("f", 1), M: p.int("m", 0)}
	case "bulyan":
		return Bulyan{F: p.int("f", 1)}
	case "signvote":
		return SignVote{LR: p.float("lr", DefaultSignVoteLR), Weighted: p.bool("weighted", false)}
	case "cclip":
		s := NewCenteredClip()
		s.Tau, s.Iters, s.LR = p.float("tau", s.Tau), p.int("iters", s.Iters), p.float("lr", s.LR)
		s.Reject, s.Same, s.Growth = p.float("reject", 0), p.float("same", 0), p.float("growth", 0)
		s.Gram = p.bool("gram", false)
		return s
	}
	panic("aggregate: strategy without a constructor: " + p.name)
}

// wrap applies the wrapper keys, innermost first: bucket, filter,
// reputation, quorum, then bound or dp-*.
func (p *kv) wrap(s Strategy) (Strategy, bool) {
	if p.has("bucket") {
		s = Bucketing{Inner: s, S: p.int("bucket", 0), Seed: p.uint64("bucket-seed", 0)}
	} else if p.has("bucket-seed") {
		p.err = fmt.Errorf("%w: %s: bucket-seed needs bucket", ErrParam, p.name)
		return nil, false
	}
	if p.has("filter") {
		s = DirectionFilter{Inner: s, Threshold: p.float("filter", 0), MaxDrop: p.float("filter-max", DefaultFilterMaxDrop)}
	} else if p.has("filter-max") {
		p.err = fmt.Errorf("%w: %s: filter-max needs filter", ErrParam, p.name)
		return nil, false
	}
	if p.has("reputation") {
		s = &Reputation{Inner: s, Z: p.float("reputation", 0), MinRounds: p.int("reputation-min", DefaultReputationMinRounds),
			MaxDrop: p.float("reputation-max", DefaultReputationMaxDrop), MaxClients: p.int("reputation-clients", 0),
			High: p.float("reputation-high", 0), Norm: p.float("reputation-norm", 0), NormRobust: p.bool("reputation-norm-robust", false),
			SkipHead: p.bool("reputation-skip-head", false)}
	} else if p.has("reputation-min") || p.has("reputation-max") || p.has("reputation-clients") || p.has("reputation-high") || p.has("reputation-norm") || p.has("reputation-norm-robust") || p.has("reputation-skip-head") {
		p.err = fmt.Errorf("%w: %s: reputation-min, reputation-max, reputation-clients, reputation-high, reputation-norm, reputation-norm-robust and reputation-skip-head need reputation", ErrParam, p.name)
		return nil, false
	}
	if p.has("quorum") {
		blk := p.int("quorum-block", DefaultQuorumBlock)
		if blk == 0 {
			blk = -1 // refused by Validate: 0 is the struct's default only
		}
		byInput := false
		switch by := p.vals["quorum-by"]; by {
		case "", "block":
		case "input":
			if p.has("quorum-block") {
				p.err = fmt.Errorf("%w: %s: quorum-block does not apply to quorum-by=input", ErrParam, p.name)
				return nil, false
			}
			byInput, blk = true, DefaultQuorumBlock
		default:
			p.fail("quorum-by", by, "block or input")
			return nil, false
		}
		s = &Quorum{Inner: s, Q: p.int("quorum", 0), Block: blk, Min: p.float("quorum-min", DefaultQuorumMin), Seed: p.uint64("quorum-seed", 0),
			ByInput: byInput, Frac: p.float("quorum-frac", 0)}
	} else if p.has("quorum-block") || p.has("quorum-min") || p.has("quorum-seed") || p.has("quorum-by") || p.has("quorum-frac") {
		p.err = fmt.Errorf("%w: %s: quorum-block, quorum-min, quorum-seed, quorum-by and quorum-frac need quorum", ErrParam, p.name)
		return nil, false
	}
	isDP := false
	for _, w := range wrapperParams {
		if strings.HasPrefix(w.Key, "dp-") && p.has(w.Key) {
			isDP = true
		}
	}
	if isDP && p.has("quorum") {
		p.err = fmt.Errorf("%w: %s: quorum and dp-* do not combine", ErrParam, p.name)
		return nil, false
	}
	bound, hasBound := p.vals["bound"]
	if hasBound && isDP {
		p.err = fmt.Errorf("%w: %s: bound and dp-* both clip updates; use dp-clip alone", ErrParam, p.name)
		return nil, false
	}
	auto := bound == "auto" || (!hasBound && !isDP && p.autoDefault && isMeanBased(p.name))
	if !auto && (p.has("bound-median") || p.has("weight-cap") || p.has("bound-growth")) {
		p.err = fmt.Errorf("%w: %s: bound-median, weight-cap and bound-growth need bound=auto", ErrParam, p.name)
		return nil, false
	}
	switch {
	case auto:
		b := NewAutoBound(s)
		b.NormMult, b.WeightMult, b.Growth = p.mult("bound-median", DefaultNormMult), p.mult("weight-cap", DefaultWeightMult), p.mult("bound-growth", 0)
		return b, true
	case bound == "off":
		return s, true
	case hasBound:
		return NormBound{Inner: s, Bound: p.float("bound", 0)}, true
	}
	if !isDP {
		return s, true
	}
	d := &DP{
		Inner:           s,
		Clip:            p.float("dp-clip", 0),
		NoiseMultiplier: p.float("dp-noise", 0),
		ExpectedClients: p.int("dp-clients", 0),
		Seed:            p.uint64("dp-seed", 0),
	}
	adaptiveKeys := p.has("dp-quantile") || p.has("dp-clip-lr") || p.has("dp-count-stddev")
	if p.bool("dp-adaptive", adaptiveKeys) {
		d.Adaptive = &AdaptiveClip{
			Quantile:    p.float("dp-quantile", 0),
			LR:          p.float("dp-clip-lr", 0),
			CountStddev: p.float("dp-count-stddev", 0),
		}
	} else if adaptiveKeys {
		p.err = fmt.Errorf("%w: %s: dp-quantile, dp-clip-lr and dp-count-stddev need dp-adaptive=true", ErrParam, p.name)
	}
	return d, true
}

// validateStrategy calls s.Validate when s has one.
func validateStrategy(s Strategy) error {
	if v, ok := s.(interface{ Validate() error }); ok {
		return v.Validate()
	}
	return nil
}

// Spec returns a spec that Parse turns into a strategy configured as s
// (without its server state): s.String() when s has one, else s.Name(),
// with ",bound=off" when s is a mean-based rule without a bound, which
// Parse would otherwise wrap in AutoBound.
func Spec(s Strategy) string {
	spec := innerSpec(s)
	if bareMean(s) {
		spec += ",bound=off"
	}
	return spec
}

// Unbounded reports whether s is a mean-based rule (under any bucket,
// filter and reputation wrappers) that bounds neither the norm nor the
// weight of an update: one client can then move the model arbitrarily far
// (its spec says bound=off).
func Unbounded(s Strategy) bool { return bareMean(s) }

// innerSpec is the spec of s as a wrapper's inner strategy: without the
// ",bound=off" of Spec, which the outermost layer decides.
func innerSpec(s Strategy) string {
	if st, ok := s.(fmt.Stringer); ok {
		return st.String()
	}
	return s.Name()
}

// bareMean reports whether s, under any Bucketing, DirectionFilter,
// Reputation and Quorum wrappers, is a mean-based rule with no bound around it.
func bareMean(s Strategy) bool {
	for {
		switch w := s.(type) {
		case Bucketing:
			s = w.Inner
		case DirectionFilter:
			s = w.inner()
		case *Reputation:
			s = w.inner()
		case *Quorum:
			s = w.inner()
		case AutoBound, NormBound, *DP:
			return false
		case nil:
			return true // FedAvg
		default:
			return isMeanBased(s.Name())
		}
	}
}

func ff(x float64) string { return strconv.FormatFloat(x, 'g', -1, 64) }

// meanKey returns ",mean=V" for a MeanOver other than the default.
func meanKey(m MeanOver) string {
	if m == MeanAll {
		return ""
	}
	return ",mean=" + m.String()
}

// String returns the spec of s.
func (s *FedAvgM) String() string {
	anneal := ""
	if s.Anneal != 0 || s.LREnd != 0 {
		anneal = ",anneal=" + strconv.Itoa(s.Anneal) + ",lr-end=" + ff(s.LREnd)
	}
	return "fedavgm,lr=" + ff(s.LR) + ",momentum=" + ff(s.Momentum) + anneal + meanKey(s.Mean)
}

// String returns the spec of s.
func (s *FedAdam) String() string {
	spec := "fedadam,lr=" + ff(s.LR) + ",beta1=" + ff(s.Beta1) + ",beta2=" + ff(s.Beta2) + ",tau=" + ff(s.Tau)
	if s.BiasCorrection {
		spec += ",bias-correction=true"
	}
	return spec + meanKey(s.Mean)
}

// String returns the spec of s.
func (s *FedYogi) String() string {
	return "fedyogi,lr=" + ff(s.LR) + ",beta1=" + ff(s.Beta1) + ",beta2=" + ff(s.Beta2) + ",tau=" + ff(s.Tau) + meanKey(s.Mean)
}

// String returns the spec of s.
func (s *FedAdagrad) String() string {
	return "fedadagrad,lr=" + ff(s.LR) + ",beta1=" + ff(s.Beta1) + ",tau=" + ff(s.Tau) + meanKey(s.Mean)
}

// String returns the spec of m: "median", or with the senders' keys.
func (m Median) String() string { return "median" + overKeys(m.Over, m.MinSenders) }

// String returns the spec of t.
func (t TrimmedMean) String() string {
	return "trimmed-mean,beta=" + ff(t.Beta) + overKeys(t.Over, t.MinSenders)
}

// overKeys returns ",over=senders,min-senders=M" for MeanSenders.
func overKeys(over MeanOver, minSenders int) string {
	if over == MeanAll {
		return ""
	}
	return ",over=" + over.String() + ",min-senders=" + strconv.Itoa(cmp.Or(minSenders, DefaultMinSenders))
}

// String returns the spec of s.
func (s Krum) String() string { return "krum,f=" + strconv.Itoa(s.F) }

// String returns the spec of s.
func (s MultiKrum) String() string {
	return "multi-krum,f=" + strconv.Itoa(s.F) + ",m=" + strconv.Itoa(s.M)
}

// String returns the spec of s.
func (s Bulyan) String() string { return "bulyan,f=" + strconv.Itoa(s.F) }

// String returns the spec of b.
func (b NormBound) String() string { return innerSpec(b.inner()) + ",bound=" + ff(b.Bound) }

// String returns the spec of d's configuration.
func (d *DP) String() string {
	spec := innerSpec(d.inner()) + ",dp-clip=" + ff(d.Clip) + ",dp-noise=" + ff(d.NoiseMultiplier) +
		",dp-seed=" + strconv.FormatUint(d.Seed, 10) + ",dp-clients=" + strconv.Itoa(d.ExpectedClients)
	if a := d.Adaptive; a != nil {
		spec += ",dp-adaptive=true,dp-quantile=" + ff(a.Quantile) + ",dp-clip-lr=" + ff(a.LR) + ",dp-count-stddev=" + ff(a.CountStddev)
	}
	return spec
}
