package aggregate

import (
	"fmt"
	"math"
	"slices"
	"strconv"
)

// Reputation excludes the clients whose updates keep disagreeing with the
// others', round after round, before its inner strategy aggregates the
// rest. It targets Byzantine clients that are the same clients every round
// (a compromised device, a poisoned data silo) on heterogeneous data, where
// a single round cannot tell a reversed update from an honest client with
// unusual data, but the disagreement of an attacker repeats while an
// honest client's varies.
//
// Each round, every update u_i gets an agreement score: its cosine
// similarity with the sum of the other updates of the round, each clipped
// to the round's median L2 norm (so no update weighs more than a typical
// one), leaving out the updates of clients already excluded:
//
//	s_i = cos(u_i, Σ_{j≠i, j trusted} min(1, m/‖u_j‖)·u_j),   m the median norm
//
// The server keeps, per client, the number n_c and sum of its scores, and
// over all clients the mean μ and standard deviation σ of every score seen.
// A client is excluded in a round when it has at least MinRounds scores,
// this round's included, and its mean lies Z standard errors below the
// population's:
//
//	(mean_c − μ)·√n_c / σ < −Z
//
// A client whose mean falls back above the bar is trusted again.
//
// Two more bars, off unless set, are for attacks the agreement score
// misses. High excludes a client whose mean lies High standard errors
// above the population's: colluders that send one crafted update through
// their own error-feedback encoders upload different sparse vectors (so
// CenteredClip's Same does not group them) that still agree with one
// another far more than honest clients' do. Norm excludes a client whose
// updates' L2 norms average, geometrically, more than Norm times what the
// trusted updates give for its example count (Update.Weight, which it
// trusts): a client training on flipped labels on skewed data keeps a
// high loss, hence large updates, in a direction the agreement score
// finds ordinary. Norm also excludes honest clients whose updates stay
// larger than their example counts explain, which costs clean accuracy;
// and attackers with small updates (inner-product manipulation) make
// honest updates look large against the rounds' medians and the line,
// unless NormRobust, which takes both over the clients the agreement
// bars trust. With either set, the population statistics are
// those of the trusted updates only (as of the previous rounds), so that
// excluded colluders' scores do not move the bars. Excluded
// clients' updates are still scored, but left out of the reference and of
// the aggregate. At most ⌊MaxDrop·k⌋ of a round's k updates are excluded,
// and never so many that fewer than MinUpdates(Inner) remain: the lowest
// z go first (ties: the client added last). Updates without a client
// identity (Update.ClientKnown false) are scored into the population but
// never excluded; round.Machine sets the identity of every submission.
//
// Breakdown: the per-round reference is a sum of norm-clipped updates,
// so b attackers among k move it by at most b·m, and while the trusted
// honest updates agree more with one another than with the attackers the
// attackers' scores stay lower; once excluded they leave the reference.
// Exclusion only removes updates, so Inner sees at most as many Byzantine
// updates as without it, among at least k − ⌊MaxDrop·k⌋, and its
// own breakdown applies to those. What it does not do: attackers that
// change identity (Sybils, fresh clients) are scored from zero each time,
// and attackers whose updates agree with the others (small, aligned
// perturbations) keep a good score and are left to Inner. An honest
// client whose data differs persistently from everyone else's can be
// excluded too; Excluded reports who was left out each round.
//
// Deterministic: scores are summed in coordinate order with four partial
// sums combined in a fixed order, the state is a table sorted by client
// ID (no map iteration), and it changes only when Apply succeeds.
//
// Cost: 4nk bytes for k dense updates of n parameters (8 bytes a
// coordinate sent for sparse ones; none behind AutoBound, whose copies it
// keeps and hands on to Inner without another) and 8n for the reference
// (16 KB for dense updates, scored a block at a time); time
// O(nk + C) per round for C clients tracked (the table is copied so that a
// failed Apply leaves it unchanged; lookups are binary searches). State: 24 bytes
// per client seen (32 with High or Norm), at most MaxClients clients (clients beyond are scored
// into the population but not tracked, hence never excluded); serialised
// by MarshalBinary.
type Reputation struct {
	// Inner aggregates the updates of trusted clients; nil means FedAvg.
	Inner Strategy
	// Z is the number of standard errors below the population mean at
	// which a client is excluded, positive.
	Z float64
	// MinRounds is the number of scores a client needs before it can be
	// excluded, at least 1.
	MinRounds int
	// MaxDrop is the largest fraction of a round's updates excluded, in
	// [0, 0.5].
	MaxDrop float64
	// MaxClients bounds the clients tracked, at least 1; 0 means
	// DefaultReputationClients.
	MaxClients int
	// High, positive, also excludes a client whose mean score lies more
	// than High standard errors above the population's: colluders whose
	// updates agree with one another more than honest clients' do (under a
	// sparsifying codec, where their uploads are not identical). 0 is off.
	High float64
	// Norm, ≥ 1, also excludes a client whose updates' L2 norms average,
	// geometrically, more than Norm times what the trusted updates' norms
	// give for its example count: its mean log2 ratio to its rounds'
	// median norm (each clamped to ±4) against the least-squares line of
	// those ratios on log2 of the weights (the slope clamped to [0, 1]).
	// It is for a client that keeps sending updates larger than its
	// examples explain, such as one training on flipped labels. 0 is off.
	Norm float64
	// NormRobust makes the Norm test robust to the attackers it judges.
	// Without it, attackers with small updates (inner-product
	// manipulation) lower the rounds' median norms, so that honest
	// updates look large, and pull the line down while they are trusted;
	// and honest clients the Norm bar excludes leave the line, which
	// lowers it further. With it, each round's median norm is that of the
	// updates of clients the agreement bars (Z, High) trust, the line is
	// fitted on those updates too (whatever the Norm bar says of them),
	// and each enters it clamped to within normBand of the line as of the
	// previous rounds, so that no update pulls it by more. It needs Norm.
	NormRobust bool
	// SkipHead scores agreement without the model's last layer (its last
	// weight matrix and what follows it: the classifier head), given by
	// SetShapes. On label-skewed data the head's updates disagree by
	// design: each client raises its own classes' logits and lowers the
	// others', so a client with rare classes disagrees with everyone, and
	// a reversed update (sign flipping) lowers its classes as the others
	// do and looks agreeable there. The layers below learn features that
	// the classes share, where an honest update agrees with the others
	// and a reversed one does not. A model whose shapes name no weight
	// matrix before its last one is scored whole, and so is a round with
	// a sparse update: top-k updates pick different body coordinates, so
	// that two of them overlap in few body coordinates, while they all
	// pick in the head, and on seed 2 of docs/robustness.md's grid the
	// body alone lost to sign flipping with a sparsifying codec (stcg)
	// where the whole model held. Apply fails when the shapes were not
	// set or do not match the updates.
	SkipHead bool

	// body is the number of leading parameters SkipHead scores (0: all),
	// and total the parameter count of the shapes it came from.
	body, total int
	shaped      bool

	st reputationState
}

// Defaults of Reputation's parameters in Parse.
const (
	DefaultReputationMinRounds = 3
	DefaultReputationMaxDrop   = 0.5
	DefaultReputationClients   = 1 << 20
)

type clientScore struct {
	id   uint64
	n    uint64
	sum  float64
	lsum float64 // with Norm: sum of log2(norm / round's median norm), clamped to ±maxLogNorm
	wsum float64 // and of log2 of its weight, clamped to [0, maxLogWeight]
}

// maxLogNorm bounds each round's log2 norm ratio in Reputation's Norm
// test, and maxLogWeight the log2 of a weight. normBand is how far, in
// log2, an update's ratio enters the line of NormRobust from the line as
// of the previous rounds (a factor √2).
const (
	maxLogNorm   = 4
	maxLogWeight = 64
	normBand     = 0.5
)

// normFit holds the sums of the least-squares line of the trusted
// updates' log2 norm ratios (y) on the log2 of their weights (x), which
// Reputation's Norm test judges a client's mean against.
type normFit struct {
	n            uint64
	x, y, xy, xx float64
}

// add adds the point (x, y).
func (f *normFit) add(x, y float64) {
	f.n++
	f.x, f.y, f.xy, f.xx = f.x+x, f.y+y, f.xy+float64(x*y), f.xx+float64(x*x)
}

// expected returns the line's y at x: the population's mean y plus its
// slope, clamped to [0, 1], times x minus the mean x; the mean y alone
// while the weights do not vary.
func (f *normFit) expected(x float64) float64 {
	if f.n == 0 {
		return 0
	}
	n := float64(f.n)
	mx, my := f.x/n, f.y/n
	vx := f.xx/n - mx*mx
	if !(vx > 1e-12) {
		return my
	}
	b := max(0, min(1, (f.xy/n-mx*my)/vx))
	return my + b*(x-mx)
}

type reputationState struct {
	clients []clientScore // sorted by id
	n       uint64        // scores seen
	sum     float64       // their sum
	sumSq   float64       // and sum of squares
	fit     normFit       // with Norm
}

func (r *Reputation) inner() Strategy {
	if r.Inner == nil {
		return FedAvg{}
	}
	return r.Inner
}

func (r *Reputation) maxClients() int {
	if r.MaxClients == 0 {
		return DefaultReputationClients
	}
	return r.MaxClients
}

// Name returns the inner strategy's name.
func (r *Reputation) Name() string { return r.inner().Name() }

// String returns a spec Parse accepts.
func (r *Reputation) String() string {
	s := innerSpec(r.inner()) + ",reputation=" + ff(r.Z) + ",reputation-min=" + strconv.Itoa(r.MinRounds) +
		",reputation-max=" + ff(r.MaxDrop)
	if r.MaxClients != 0 {
		s += ",reputation-clients=" + strconv.Itoa(r.MaxClients)
	}
	if r.High != 0 {
		s += ",reputation-high=" + ff(r.High)
	}
	if r.Norm != 0 {
		s += ",reputation-norm=" + ff(r.Norm)
	}
	if r.NormRobust {
		s += ",reputation-norm-robust=true"
	}
	if r.SkipHead {
		s += ",reputation-skip-head=true"
	}
	return s
}

// SetShapes records the model's tensor shapes, in parameter order, for
// SkipHead: the head starts at the last tensor of two or more dimensions
// (a weight matrix or kernel), and the body is every parameter before it.
func (r *Reputation) SetShapes(shapes [][]int) error {
	total, body := 0, 0
	for _, sh := range shapes {
		size := 1
		for _, d := range sh {
			if d <= 0 || size > math.MaxInt32/d {
				return fmt.Errorf("%w: reputation: tensor of shape %v", ErrShape, sh)
			}
			size *= d
		}
		if len(sh) >= 2 {
			body = total
		}
		if total > math.MaxInt32-size {
			return fmt.Errorf("%w: reputation: more than 2^31 parameters", ErrShape)
		}
		total += size
	}
	r.body, r.total, r.shaped = body, total, true
	return nil
}

// scored returns the updates whose agreement Apply scores and how many
// parameters each has: ups themselves, or with SkipHead, in a round of
// dense updates, their first r.body parameters (views, not copies).
func (r *Reputation) scored(ups []Update, n int) ([]Update, int, error) {
	if !r.SkipHead {
		return ups, n, nil
	}
	if !r.shaped {
		return nil, 0, fmt.Errorf("%w: reputation-skip-head: the model's shapes were not set (SetShapes)", ErrShape)
	}
	if r.total != n {
		return nil, 0, fmt.Errorf("%w: reputation-skip-head: shapes of %d parameters, updates of %d", ErrShape, r.total, n)
	}
	if r.body == 0 || slices.ContainsFunc(ups, Update.IsSparse) {
		return ups, n, nil
	}
	out := make([]Update, len(ups))
	for i, u := range ups {
		out[i] = Update{Delta: u.Delta[:r.body], Weight: u.Weight}
	}
	return out, r.body, nil
}

// MinUpdates returns the inner strategy's minimum.
func (r *Reputation) MinUpdates() int { return MinUpdates(r.inner()) }

// Validate reports parameters out of range or a bad inner strategy.
func (r *Reputation) Validate() error {
	if err := positive("reputation", r.Z); err != nil {
		return err
	}
	if r.MinRounds < 1 || r.MinRounds > maxClients {
		return fmt.Errorf("%w: reputation-min %d, want 1 ≤ reputation-min ≤ %d", ErrParam, r.MinRounds, maxClients)
	}
	if !(r.MaxDrop >= 0 && r.MaxDrop <= 0.5) {
		return fmt.Errorf("%w: reputation-max %v, want 0 ≤ reputation-max ≤ 0.5", ErrParam, r.MaxDrop)
	}
	if !(r.High == 0 || (r.High > 0 && r.High <= 1e6)) {
		return fmt.Errorf("%w: reputation-high %v, want 0 (off) or in (0, 1e6]", ErrParam, r.High)
	}
	if !(r.Norm == 0 || (r.Norm >= 1 && r.Norm <= 1e6)) {
		return fmt.Errorf("%w: reputation-norm %v, want 0 (off) or in [1, 1e6]", ErrParam, r.Norm)
	}
	if r.NormRobust && r.Norm == 0 {
		return fmt.Errorf("%w: reputation-norm-robust needs reputation-norm", ErrParam)
	}
	if r.MaxClients < 0 || r.MaxClients > maxClients {
		return fmt.Errorf("%w: reputation-clients %d, want 0 ≤ reputation-clients ≤ %d", ErrParam, r.MaxClients, maxClients)
	}
	if len(r.st.clients) > r.maxClients() {
		return fmt.Errorf("%w: %d clients tracked, at most %d", ErrState, len(r.st.clients), r.maxClients())
	}
	if _, ok := r.Inner.(*Reputation); ok {
		return fmt.Errorf("%w: Reputation inside Reputation", ErrParam)
	}
	return validateStrategy(r.inner())
}

// Begin starts a round.
func (r *Reputation) Begin(n int) Accumulator {
	if err := r.Validate(); err != nil {
		return errAcc{err}
	}
	return &reputationAcc{r: r, n: n}
}

// Tracked returns, for each client the state holds, its number of scores
// and their mean, sorted by client ID.
func (r *Reputation) Tracked() (ids []uint64, counts []uint64, means []float64) {
	for _, c := range r.st.clients {
		ids, counts, means = append(ids, c.id), append(counts, c.n), append(means, c.sum/float64(c.n))
	}
	return ids, counts, means
}

// find returns the position of id in the sorted table and whether it is
// there.
func (st *reputationState) find(id uint64) (int, bool) {
	return slices.BinarySearchFunc(st.clients, id, func(c clientScore, id uint64) int {
		switch {
		case c.id < id:
			return -1
		case c.id > id:
			return 1
		}
		return 0
	})
}

// z returns the standard score of a client's mean, or +Inf when it cannot
// be judged yet.
func (st *reputationState) z(c clientScore, minRounds int) float64 {
	if c.n < uint64(minRounds) || st.n < 2 {
		return math.Inf(1)
	}
	mu := st.sum / float64(st.n)
	v := st.sumSq/float64(st.n) - mu*mu
	if !(v > 0) {
		return math.Inf(1)
	}
	return (c.sum/float64(c.n) - mu) * math.Sqrt(float64(c.n)) / math.Sqrt(v)
}

// extended reports whether r uses High or Norm, whose state the old
// format does not hold.
func (r *Reputation) extended() bool { return r.High != 0 || r.Norm != 0 }

// margin returns how far client c is inside every bar of r: negative when
// it is to be excluded (its z below −Z, above High, or its mean log2 norm
// ratio above log2 Norm), the lowest first.
func (r *Reputation) margin(st *reputationState, c clientScore) float64 {
	if c.n < uint64(r.MinRounds) {
		return math.Inf(1)
	}
	m := math.Inf(1)
	if z := st.z(c, r.MinRounds); !math.IsInf(z, 1) {
		m = z + r.Z
		if r.High > 0 {
			m = min(m, r.High-z)
		}
	}
	if r.Norm > 0 {
		n := float64(c.n)
		m = min(m, portableLog2(r.Norm)-(c.lsum/n-st.fit.expected(c.wsum/n)))
	}
	return m
}

// agreementSuspect reports whether client c is to be excluded by st's
// agreement bars alone (Z and High), as NormRobust's median and line
// leave out.
func (r *Reputation) agreementSuspect(st *reputationState, c clientScore) bool {
	z := st.z(c, r.MinRounds)
	return !math.IsInf(z, 1) && (z < -r.Z || (r.High > 0 && z > r.High))
}

// suspect reports whether client c is to be excluded by st.
func (r *Reputation) suspect(st *reputationState, c clientScore) bool {
	if !r.extended() {
		return st.z(c, r.MinRounds) < -r.Z
	}
	return r.margin(st, c) < 0
}

type reputationAcc struct {
	r        *Reputation
	n        int
	ups      []Update  // validated, kept or copied (see keeper)
	sqs      []float64 // dot32 of each dense update with itself, or −1
	pooled   []bool    // whether Add copied the update into a pooled row
	excluded []int
	scores   []float64
	applied  bool
}

func (a *reputationAcc) Add(u Update) error {
	if a.applied {
		return ErrApplied
	}
	// One pass checks u, copies it (a dense one into a pooled row, given
	// back after Apply) and sums its squares.
	c, _, sq, err := keepWithNorm(u, a.n)
	if err != nil {
		return err
	}
	if err := a.addKeptSq(c, sq); err != nil {
		return err
	}
	a.pooled[len(a.pooled)-1] = !c.IsSparse()
	return nil
}

func (a *reputationAcc) addKept(u Update) error { return a.addKeptSq(u, -1) }

func (a *reputationAcc) addKeptSq(u Update, sq float64) error {
	if a.applied {
		return ErrApplied
	}
	a.ups = append(a.ups, u)
	a.sqs = append(a.sqs, sq)
	a.pooled = append(a.pooled, false) // the caller's: it gives the rows back
	return nil
}

func (a *reputationAcc) Count() int { return len(a.ups) }

func (a *reputationAcc) Excluded() []int { return a.excluded }

// Scores returns each update's agreement score, in Add order, after Apply.
func (a *reputationAcc) Scores() []float64 { return a.scores }

func (a *reputationAcc) Apply(global []float32) error {
	if a.applied {
		return ErrApplied
	}
	k := len(a.ups)
	if k == 0 {
		return ErrNoUpdates
	}
	if len(global) != a.n {
		return fmt.Errorf("%w: global model has %d values, round has %d", ErrShape, len(global), a.n)
	}
	r := a.r
	minKeep := MinUpdates(r.inner())
	if k < minKeep {
		return fmt.Errorf("%w: %d updates, at least %d needed", ErrTooFewUpdates, k, minKeep)
	}
	// Trust as of the previous rounds decides the reference.
	trusted := make([]bool, k)
	for i, u := range a.ups {
		trusted[i] = true
		if u.ClientKnown {
			if p, ok := r.st.find(u.Client); ok && r.suspect(&r.st, r.st.clients[p]) {
				trusted[i] = false
			}
		}
	}
	if !slices.Contains(trusted, true) {
		for i := range trusted {
			trusted[i] = true
		}
	}
	sc, scn, err := r.scored(a.ups, a.n)
	if err != nil {
		return err
	}
	sqs := a.sqs
	if scn != a.n {
		sqs = nil // the sums of squares are of whole updates
	}
	var scores []float64
	var gram *gramMat // with an inner rule that wants it: the kept updates' share goes to it
	if wantsGram(r.inner()) && gramFits(a.ups, a.n) {
		// One Gram matrix gives the scores, the norms and the inner
		// rule's distances; scored is a's updates or their bodies.
		split := 0
		if scn != a.n {
			split = scn
		}
		whole, body := roundGram(a.ups, a.n, split)
		gram, sqs = whole, whole.diag()
		if body != nil {
			scores = agreementScoresGram(body, trusted)
		} else {
			scores = agreementScoresGram(whole, trusted)
		}
	} else {
		scores = agreementScores(sc, sqs, trusted, scn)
	}
	// With NormRobust, the updates the norm ratios and the line are
	// taken over: those of the clients the agreement bars trust.
	var fitted []bool
	if r.NormRobust {
		fitted = make([]bool, k)
		for i, u := range a.ups {
			fitted[i] = true
			if u.ClientKnown {
				if p, ok := r.st.find(u.Client); ok && r.agreementSuspect(&r.st, r.st.clients[p]) {
					fitted[i] = false
				}
			}
		}
	}
	var lnorms, lweights []float64
	if r.Norm > 0 {
		if gram == nil {
			sqs = a.sqs
		}
		lnorms = logNormRatios(a.ups, sqs, fitted, a.n)
		lweights = make([]float64, k)
		for i, u := range a.ups {
			lweights[i] = 0
			if u.Weight > 1 {
				lweights[i] = min(maxLogWeight, portableLog2(u.Weight))
			}
		}
	}

	// The new state, committed only if Inner succeeds.
	st := reputationState{clients: slices.Clone(r.st.clients), n: r.st.n, sum: r.st.sum, sumSq: r.st.sumSq, fit: r.st.fit}
	for i, u := range a.ups {
		s := scores[i]
		// With High or Norm the population is that of the trusted
		// updates only, so that excluded colluders' high scores do not
		// raise the bar that honest clients are judged by.
		if !r.extended() || trusted[i] {
			st.n++
			st.sum += s
			st.sumSq += s * s
			if lnorms != nil && fitted == nil {
				st.fit.add(lweights[i], lnorms[i])
			}
		}
		if fitted != nil && fitted[i] {
			// Clamped to the band around the line as of the previous
			// rounds (none while it is empty), and to ±maxLogNorm.
			x, y := lweights[i], lnorms[i]
			if r.st.fit.n > 0 {
				e := r.st.fit.expected(x)
				y = max(-maxLogNorm, min(maxLogNorm, max(e-normBand, min(e+normBand, y))))
			}
			st.fit.add(x, y)
		}
		if !u.ClientKnown {
			continue
		}
		p, ok := st.find(u.Client)
		if !ok {
			if len(st.clients) >= r.maxClients() {
				continue
			}
			st.clients = slices.Insert(st.clients, p, clientScore{id: u.Client})
		}
		st.clients[p].n++
		st.clients[p].sum += s
		if lnorms != nil {
			st.clients[p].lsum += lnorms[i]
			st.clients[p].wsum += lweights[i]
		}
	}
	// Each update's client's z (or, with High or Norm, its margin inside
	// every bar): the lowest below the bar are dropped.
	z := make([]float64, k)
	for i, u := range a.ups {
		z[i] = math.Inf(1)
		if p, ok := st.find(u.Client); u.ClientKnown && ok {
			if r.extended() {
				z[i] = r.margin(&st, st.clients[p])
			} else {
				z[i] = st.z(st.clients[p], r.MinRounds)
			}
		}
	}
	bar := -r.Z
	if r.extended() {
		bar = 0
	}
	drop := dropSet(z, bar, min(int(r.MaxDrop*float64(k)), k-minKeep))

	excluded, err := applyExcludingKept(r.inner(), a.n, a.ups, drop, global, gram)
	if err != nil {
		return err
	}
	r.st = st
	// Nobody reads the rows any more: the inner accumulator is done with
	// them (as AutoBound also relies on).
	for i, u := range a.ups {
		if a.pooled[i] {
			putRow(u.Delta)
		}
	}
	a.applied, a.excluded, a.scores, a.ups, a.pooled = true, excluded, scores, nil, nil
	return nil
}

// applyExcludingKept aggregates the updates not dropped with inner, handing
// them over (see keeper) without their identities, and returns the
// positions left out, by drop or by inner (see applyExcluding).
func applyExcludingKept(inner Strategy, n int, ups []Update, drop []bool, global []float32, gram *gramMat) ([]int, error) {
	acc := inner.Begin(n)
	var excluded, kept []int
	for i, u := range ups {
		if drop[i] {
			excluded = append(excluded, i)
			continue
		}
		u.Client, u.ClientKnown = 0, false
		if err := addKeptTo(acc, u); err != nil {
			return nil, fmt.Errorf("update %d: %w", i, err)
		}
		kept = append(kept, i)
	}
	if gs, ok := acc.(interface{ setGram(*gramMat) }); ok && gram != nil {
		gs.setGram(gram.sub(kept))
	}
	return applyKept(acc, global, kept, excluded)
}

// agreementScores returns, for each update, its cosine similarity with the
// sum of the other trusted updates clipped to the median norm. A zero
// update, or a zero reference, scores 0. sqs, when not nil, holds
// dot32(u, u) of each dense update, or −1 where it is to be computed. Sparse updates give the bits of
// their dense form: the sums skip only zero terms, which add nothing.
func agreementScores(ups []Update, sqs []float64, trusted []bool, n int) []float64 {
	k := len(ups)
	norms := make([]float64, k)
	for i, u := range ups {
		if sqs != nil && sqs[i] >= 0 {
			norms[i] = math.Sqrt(sqs[i])
		} else if u.IsSparse() {
			norms[i] = math.Sqrt(sparseDot(u.Indices, u.Values, u.Values, n))
		} else {
			norms[i] = math.Sqrt(dot32(u.Delta, u.Delta))
		}
	}
	clip := clipToMedian(norms)
	if dense := !slices.ContainsFunc(ups, Update.IsSparse); dense {
		return agreementScoresDense(ups, trusted, norms, clip, n)
	}
	ref := make([]float64, n)
	for i, u := range ups {
		if !trusted[i] {
			continue
		}
		c := clip[i]
		if u.IsSparse() {
			for j, v := range u.Values {
				ref[u.Indices[j]] += float64(c * float64(v))
			}
			continue
		}
		for j, v := range u.Delta[:len(ref)] {
			ref[j] += float64(c * float64(v))
		}
	}
	refSq := dot64(ref, ref)
	scores := make([]float64, k)
	for i, u := range ups {
		if norms[i] == 0 {
			continue
		}
		var d float64
		if u.IsSparse() {
			d = sparseDot3264(u.Indices, u.Values, ref)
		} else {
			d = dot3264(u.Delta, ref)
		}
		scores[i] = agreementScore(d, refSq, norms[i], clip[i], trusted[i])
	}
	return scores
}

// clipToMedian returns each norm's clip factor to the median norm (the
// mean of the middle two for an even count): min(1, m/norm).
func clipToMedian(norms []float64) []float64 {
	k := len(norms)
	sorted := slices.Clone(norms)
	slices.Sort(sorted)
	m := sorted[k/2]
	if k%2 == 0 {
		m = (sorted[k/2-1] + sorted[k/2]) / 2
	}
	clip := make([]float64, k)
	for i, x := range norms {
		clip[i] = 1
		if x > m {
			clip[i] = m / x
		}
	}
	return clip
}

// agreementScoresDense is agreementScores for dense updates, bit for bit,
// in one pass over them: the reference is summed a block of coordinates
// at a time, and its square and its products with the updates are taken
// over the block while it is in cache, each partial sum getting its terms
// in the order dot64 and dot3264 give them.
func agreementScoresDense(ups []Update, trusted []bool, norms, clip []float64, n int) []float64 {
	k := len(ups)
	const block = 2048 // a multiple of 4
	var ref [block]float64
	var refLanes [4]float64
	dots := make([][4]float64, k)
	n4 := n &^ 3
	for c0 := 0; c0 < n; c0 += block {
		c1 := min(c0+block, n)
		r := ref[:c1-c0]
		clear(r)
		for i, u := range ups {
			if !trusted[i] {
				continue
			}
			c := clip[i]
			for j, v := range u.Delta[c0:c1] {
				r[j] += float64(c * float64(v))
			}
		}
		m := min(c1, n4) - c0 // the terms that go to lane j mod 4
		dot64Lanes(r[:m], r[:m], &refLanes)
		for j := m; j < len(r); j++ {
			refLanes[0] += float64(r[j] * r[j])
		}
		for i, u := range ups {
			if norms[i] == 0 {
				continue
			}
			a := u.Delta[c0:c1]
			dot3264Lanes(a[:m], r[:m], &dots[i])
			for j := m; j < len(r); j++ {
				dots[i][0] += float64(float64(a[j]) * r[j])
			}
		}
	}
	refSq := (refLanes[0] + refLanes[1]) + (refLanes[2] + refLanes[3])
	scores := make([]float64, k)
	for i := range ups {
		if norms[i] == 0 {
			continue
		}
		d := (dots[i][0] + dots[i][1]) + (dots[i][2] + dots[i][3])
		scores[i] = agreementScore(d, refSq, norms[i], clip[i], trusted[i])
	}
	return scores
}

// agreementScore returns the cosine of u with S − c·u, c its clip factor
// when it is trusted (part of S) and 0 otherwise, from d = ⟨u, S⟩, ‖S‖²
// and ‖u‖, without forming S − c·u.
func agreementScore(d, refSq, norm, clip float64, trusted bool) float64 {
	c := 0.0
	if trusted {
		c = clip
	}
	uu := norm * norm
	num := d - float64(c*uu)
	den2 := refSq - float64(2*c*d) + float64(c*c*uu)
	if !(den2 > 0) {
		return 0
	}
	return max(-1, min(1, num/norm/math.Sqrt(den2)))
}

// logNormRatios returns, for each update, log2 of its L2 norm over the
// round's median norm (the mean of the middle two for an even count),
// clamped to ±maxLogNorm; 0 for every update when the median is 0. The
// median is that of the updates ref marks, or of all when ref is nil or
// marks none. sqs is as in agreementScores.
func logNormRatios(ups []Update, sqs []float64, ref []bool, n int) []float64 {
	k := len(ups)
	norms := make([]float64, k)
	for i, u := range ups {
		switch {
		case sqs != nil && sqs[i] >= 0:
			norms[i] = math.Sqrt(sqs[i])
		case u.IsSparse():
			norms[i] = math.Sqrt(sparseDot(u.Indices, u.Values, u.Values, n))
		default:
			norms[i] = math.Sqrt(dot32(u.Delta, u.Delta))
		}
	}
	var sorted []float64
	for i, x := range norms {
		if ref == nil || ref[i] {
			sorted = append(sorted, x)
		}
	}
	if len(sorted) == 0 {
		sorted = slices.Clone(norms)
	}
	slices.Sort(sorted)
	m := sorted[len(sorted)/2]
	if len(sorted)%2 == 0 {
		m = (sorted[len(sorted)/2-1] + sorted[len(sorted)/2]) / 2
	}
	out := make([]float64, k)
	if !(m > 0) {
		return out
	}
	for i, x := range norms {
		l := -float64(maxLogNorm)
		if x > 0 {
			l = max(-maxLogNorm, min(maxLogNorm, portableLog2(x/m)))
		}
		out[i] = l
	}
	return out
}

// portableLog2 returns log₂ x for finite x > 0, the same on every
// architecture (see portableLog).
func portableLog2(x float64) float64 { return portableLog(x) / math.Ln2 }

// dot64Lanes adds a[j]·b[j] to s[j mod 4], in order; len(a) is a
// multiple of 4.
func dot64Lanes(a, b []float64, s *[4]float64) {
	b = b[:len(a)]
	s0, s1, s2, s3 := s[0], s[1], s[2], s[3]
	for i := 0; i+4 <= len(a); i += 4 {
		s0 += float64(a[i] * b[i])
		s1 += float64(a[i+1] * b[i+1])
		s2 += float64(a[i+2] * b[i+2])
		s3 += float64(a[i+3] * b[i+3])
	}
	*s = [4]float64{s0, s1, s2, s3}
}

// dot3264Lanes is dot64Lanes for a float32 a.
func dot3264Lanes(a []float32, b []float64, s *[4]float64) {
	b = b[:len(a)]
	s0, s1, s2, s3 := s[0], s[1], s[2], s[3]
	for i := 0; i+4 <= len(a); i += 4 {
		s0 += float64(float64(a[i]) * b[i])
		s1 += float64(float64(a[i+1]) * b[i+1])
		s2 += float64(float64(a[i+2]) * b[i+2])
		s3 += float64(float64(a[i+3]) * b[i+3])
	}
	*s = [4]float64{s0, s1, s2, s3}
}

// lane returns the partial sum that dot32, dot64 and dot3264 put the
// term of index i of n into: i mod 4, except the last n mod 4 terms,
// which go to the first.
func lane(i int32, n int) int {
	if int(i) >= n&^3 {
		return 0
	}
	return int(i & 3)
}

// sparseDot returns dot32 of the dense forms of (idx, a) and (idx, b),
// vectors of n values that are zero off idx, bit for bit: the same terms
// in the same partial sums in the same order, without the zero ones.
func sparseDot(idx []int32, a, b []float32, n int) float64 {
	var s [4]float64
	b = b[:len(a)]
	for j, i := range idx[:len(a)] {
		s[lane(i, n)] += float64(float64(a[j]) * float64(b[j]))
	}
	return (s[0] + s[1]) + (s[2] + s[3])
}

// sparseDot3264 returns dot3264 of the dense form of (idx, a), zero off
// idx, and b, bit for bit.
func sparseDot3264(idx []int32, a []float32, b []float64) float64 {
	var s [4]float64
	for j, i := range idx[:len(a)] {
		s[lane(i, len(b))] += float64(float64(a[j]) * b[i])
	}
	return (s[0] + s[1]) + (s[2] + s[3])
}

// dot64 returns Σ a[i]·b[i] with four partial sums combined in a fixed
// order.
func dot64(a, b []float64) float64 {
	b = b[:len(a)]
	var s0, s1, s2, s3 float64
	i := 0
	for ; i+4 <= len(a); i += 4 {
		s0 += float64(a[i] * b[i])
		s1 += float64(a[i+1] * b[i+1])
		s2 += float64(a[i+2] * b[i+2])
		s3 += float64(a[i+3] * b[i+3])
	}
	for ; i < len(a); i++ {
		s0 += float64(a[i] * b[i])
	}
	return (s0 + s1) + (s2 + s3)
}

// dot3264 returns Σ a[i]·b[i] for float32 a and float64 b, as dot64.
func dot3264(a []float32, b []float64) float64 {
	b = b[:len(a)]
	var s0, s1, s2, s3 float64
	i := 0
	for ; i+4 <= len(a); i += 4 {
		s0 += float64(float64(a[i]) * b[i])
		s1 += float64(float64(a[i+1]) * b[i+1])
		s2 += float64(float64(a[i+2]) * b[i+2])
		s3 += float64(float64(a[i+3]) * b[i+3])
	}
	for ; i < len(a); i++ {
		s0 += float64(float64(a[i]) * b[i])
	}
	return (s0 + s1) + (s2 + s3)
}

// MarshalBinary saves the parameters, the per-client scores, the
// population statistics and the inner strategy's state.
func (r *Reputation) MarshalBinary() ([]byte, error) {
	inner, err := MarshalState(r.inner())
	if err != nil {
		return nil, err
	}
	w := newStateWriter("reputation")
	w.f64(r.Z)
	w.u64(uint64(r.MinRounds))
	w.f64(r.MaxDrop)
	w.u64(uint64(r.MaxClients))
	w.u64(r.st.n)
	w.f64(r.st.sum)
	w.f64(r.st.sumSq)
	w.u64(uint64(len(r.st.clients)))
	for _, c := range r.st.clients {
		w.u64(c.id)
		w.u64(c.n)
		w.f64(c.sum)
	}
	w.bytes(inner)
	if r.extended() {
		// After the old format, which restores without it as High and
		// Norm off.
		w.f64(r.High)
		w.f64(r.Norm)
		f := r.st.fit
		w.u64(f.n)
		w.f64(f.x)
		w.f64(f.y)
		w.f64(f.xy)
		w.f64(f.xx)
		for _, c := range r.st.clients {
			w.f64(c.lsum)
			w.f64(c.wsum)
		}
		if r.NormRobust {
			// After the extension, which restores without it as
			// NormRobust off.
			w.u64(1)
		}
	}
	return w.done(), nil
}

// UnmarshalBinary restores what MarshalBinary saved into r, whose Inner
// must be a strategy of the saved kind; on error r is unchanged.
func (r *Reputation) UnmarshalBinary(data []byte) error {
	rd := newStateReader(data, "reputation")
	t := Reputation{Inner: r.Inner, Z: rd.f64()}
	t.MinRounds = int(min(rd.u64(), maxClients+1))
	t.MaxDrop = rd.f64()
	t.MaxClients = int(min(rd.u64(), maxClients+1))
	t.st.n, t.st.sum, t.st.sumSq = rd.u64(), rd.f64(), rd.f64()
	nc := rd.u64()
	if rd.err == nil && nc > uint64(len(rd.b)/24) {
		rd.err = fmt.Errorf("%w: %d clients in %d bytes", ErrState, nc, len(rd.b))
	}
	if rd.err == nil {
		t.st.clients = make([]clientScore, nc)
		for i := range t.st.clients {
			t.st.clients[i] = clientScore{id: rd.u64(), n: rd.u64(), sum: rd.f64()}
		}
	}
	inner := rd.bytes()
	if rd.err == nil && len(rd.b) > 0 {
		t.High, t.Norm = rd.f64(), rd.f64()
		f := &t.st.fit
		f.n, f.x, f.y, f.xy, f.xx = rd.u64(), rd.f64(), rd.f64(), rd.f64(), rd.f64()
		if rd.err == nil && len(rd.b) < 16*len(t.st.clients) {
			rd.err = fmt.Errorf("%w: %d clients' norms in %d bytes", ErrState, len(t.st.clients), len(rd.b))
		}
		for i := range t.st.clients {
			t.st.clients[i].lsum, t.st.clients[i].wsum = rd.f64(), rd.f64()
		}
		if rd.err == nil && len(rd.b) > 0 {
			if v := rd.u64(); rd.err == nil && v != 1 {
				rd.err = fmt.Errorf("%w: reputation norm mode %d", ErrState, v)
			}
			t.NormRobust = true
		}
		fn := float64(f.n)
		if rd.err == nil && !(f.x >= 0 && f.x <= maxLogWeight*fn && math.Abs(f.y) <= maxLogNorm*fn &&
			math.Abs(f.xy) <= maxLogNorm*maxLogWeight*fn && f.xx >= 0 && f.xx <= maxLogWeight*maxLogWeight*fn) {
			rd.err = fmt.Errorf("%w: reputation norm fit of %d updates", ErrState, f.n)
		}
		if rd.err == nil && !t.extended() {
			rd.err = fmt.Errorf("%w: reputation extension without high or norm", ErrState)
		}
	}
	if err := rd.finish(); err != nil {
		return err
	}
	var total uint64
	for i, c := range t.st.clients {
		if (i > 0 && c.id <= t.st.clients[i-1].id) || c.n == 0 || math.IsNaN(c.sum) || math.Abs(c.sum) > float64(c.n) ||
			!(math.Abs(c.lsum) <= maxLogNorm*float64(c.n)) || !(c.wsum >= 0 && c.wsum <= maxLogWeight*float64(c.n)) {
			return fmt.Errorf("%w: reputation of client %d", ErrState, c.id)
		}
		total += c.n
	}
	// With High or Norm the population leaves out excluded clients'
	// scores, which their own counts hold.
	if (total > t.st.n && !t.extended()) || math.IsNaN(t.st.sum) || math.IsNaN(t.st.sumSq) || t.st.sumSq < 0 || math.Abs(t.st.sum) > float64(t.st.n) || t.st.sumSq > float64(t.st.n) {
		return fmt.Errorf("%w: reputation population of %d scores", ErrState, t.st.n)
	}
	if err := t.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrState, err)
	}
	// The inner strategy's restore is the last step that can fail, and
	// leaves it unchanged when it does.
	if err := UnmarshalState(r.inner(), inner); err != nil {
		return err
	}
	// SkipHead and the shapes are the spec's and the model's, not state:
	// they are kept (a restore that dropped them would score the whole
	// model on this replica and the body on the others).
	t.SkipHead, t.body, t.total, t.shaped = r.SkipHead, r.body, r.total, r.shaped
	*r = t
	return nil
}
