package coordinator

import (
	"errors"
	"fmt"

	"github.com/fedzip/fedzip/round"
	"github.com/fedzip/fedzip/runspec"
	"github.com/fedzip/fedzip/secagg"
)

// An announced support in the coordinator (--secagg-support announced,
// docs/secagg.md): the support of each round is the top of the server's
// estimate from the rounds it has closed (secagg.Importance), plus blocks
// drawn from the round seed, as in the simulator (sim/secagg.go), with the
// same secagg calls and seeds, so that both drivers announce the same
// supports for the same rounds.
//
// The estimate is part of the FSM's state: the entry that opens a round
// announces from it (Importance.Announce; the support and its encoded
// announcement then belong to the round's protocol state), and the entry
// that closes the round observes the survivors' decoded mean on the
// support (Importance.Observe). Both are deterministic float32
// arithmetic in a fixed order, so every replica that applied the same
// entries holds the same bits, whatever its cores. A snapshot carries the
// estimate (secagg.ImportanceState); a round's protocol state restored
// from a snapshot announces again from it, which gives the same support,
// since the estimate only changes when a round closes. The round's
// session is bound to its support (secagg.BindSupport): the client binds
// the session it is sent to the support it rebuilds, so that a client
// announced another support than the others derives other masks and the
// server gets no sum.

// saAnnounce is the run's announced support: the estimate and the
// support's shape (blocks blocks of block coordinates, explore of them
// drawn from the round seed).
type saAnnounce struct {
	imp                    *secagg.Importance
	block, blocks, explore int
}

// newSAAnnounce returns the announced support of a run with secure
// aggregation sa and a model of n parameters, nil for a random support.
func newSAAnnounce(sa *runspec.SecAgg, n int) (*saAnnounce, error) {
	sup, err := runspec.ParseSecAggSupport(sa.Support)
	if err != nil || !sup.Announced {
		return nil, err
	}
	// k as the simulator takes it (saSupportLen, which random supports
	// keep for their logs' sake, can differ by one at a half).
	blocks, explore := secagg.AnnouncedBlocks(n, sa.SupportLen(n), sup.Block, sup.Explore)
	return &saAnnounce{imp: secagg.NewImportance(n), block: sup.Block, blocks: blocks, explore: explore}, nil
}

// announce returns the support of the round whose support seed is seed
// (ascending coordinates) and its announcement (secagg.AppendAnnounced of
// the blocks not drawn from the seed), what each client is sent.
func (a *saAnnounce) announce(seed uint64) (idx []int32, msg []byte) {
	idx, top, _ := a.imp.Announce(seed, a.block, a.blocks, a.explore)
	return idx, secagg.AppendAnnounced(nil, top, secagg.NumBlocks(a.imp.Len(), a.block))
}

// restore sets the estimate from a snapshot's st, taken when the last
// closed round was lastClosed and the round machine was mach. A snapshot
// without one restores the estimate of a run that has closed no round; a
// run without an announced support takes none.
//
// The next round the estimate observes is mach's open round, or the one
// after its last, and Observe panics on a coordinate seen in that round or
// later. So lastClosed, which bounds the estimate's rounds, must not be
// beyond the last round mach has closed: a forged snapshot that claims so
// (each of its rounds then within the claim) is refused, or the entry that
// closes the next round would panic in every replica's Apply.
func (a *saAnnounce) restore(st *secagg.ImportanceState, lastClosed int, mach *round.Machine) error {
	switch {
	case a == nil && st == nil:
		return nil
	case a == nil:
		return errors.New("coordinator: restore: an announced support's estimate in a run without one")
	}
	closed := mach.Round()
	if mach.Phase() == round.Collecting {
		closed--
	}
	if lastClosed > closed {
		return fmt.Errorf("coordinator: restore: round %d closed last, and the round machine has closed up to round %d", lastClosed, closed)
	}
	switch {
	case st == nil && lastClosed == 0:
		return nil
	case st == nil:
		return fmt.Errorf("coordinator: restore: a run with an announced support after round %d and no estimate", lastClosed)
	}
	imp, err := secagg.RestoreImportance(*st, a.imp.Len(), lastClosed)
	if err != nil {
		return fmt.Errorf("coordinator: restore: %w", err)
	}
	a.imp = imp
	return nil
}
