package secagg

import (
	"fmt"
	"math"
)

// An announced support between processes: what a coordinator replicates
// of its Importance, and what a client checks of the announcement it
// receives before it decodes it. The simulator holds both sides in one
// process and needs neither.

// AnnouncedBlocks returns the number of blocks of an announced support of
// about k coordinates of a vector of length d, in blocks of block
// coordinates (at least one, at most all of them), and how many of them
// are drawn at random from the round seed: the fraction explore of them,
// rounded. It is the simulator's choice, so that both drivers announce
// the same supports. It panics if block < 1.
func AnnouncedBlocks(d, k, block int, explore float64) (blocks, nExplore int) {
	blocks = min(max(int(math.Round(float64(k)/float64(block))), 1), NumBlocks(d, block))
	return blocks, int(math.Round(explore * float64(blocks)))
}

// MaxAnnouncedLen bounds the bytes of an announcement (AppendAnnounced)
// of at most nb blocks: a kind byte, a count of at most ten bytes, and a
// body no longer than the bitmap of nb bits, which AppendAnnounced sends
// when Rice codes would be longer.
func MaxAnnouncedLen(nb int) int { return 11 + (nb+7)/8 }

// Announcement is a round's announced support as a client receives it:
// the announced blocks (AppendAnnounced) and the shape of the support.
type Announcement struct {
	// Msg is AppendAnnounced of the announced blocks.
	Msg []byte
	// Block is the block size in coordinates, Blocks the blocks on the
	// support, Explore those of them drawn from the round seed.
	Block, Blocks, Explore int
}

// Support is a client's side of an announced support: it returns the
// round's support of a vector of length d (RebuildSupport, with the round
// seed of the random blocks) and the session the client must run the
// protocol under, session bound to that support (BindSupport). A server
// that announces one client another support than the others then gets no
// sum. It returns an error wrapping ErrSupport, and never panics, for a
// block size or counts out of range or an announcement longer than
// MaxAnnouncedLen of the round's blocks, all checked before anything is
// decoded or allocated.
func (a Announcement) Support(d int, session, roundSeed uint64) ([]int32, uint64, error) {
	if d < 1 || d > MaxDim || a.Block < 1 || a.Block > MaxDim {
		return nil, 0, fmt.Errorf("%w: vector %d, block size %d", ErrSupport, d, a.Block)
	}
	if nb := NumBlocks(d, a.Block); len(a.Msg) > MaxAnnouncedLen(nb) {
		return nil, 0, fmt.Errorf("%w: an announcement of %d bytes, the bound for %d blocks is %d", ErrSupport, len(a.Msg), nb, MaxAnnouncedLen(nb))
	}
	idx, err := RebuildSupport(a.Msg, d, a.Block, a.Blocks, a.Explore, roundSeed)
	if err != nil {
		return nil, 0, err
	}
	return idx, BindSupport(session, idx), nil
}

// ImportanceState is the whole state of an Importance, for a replicated
// server's snapshots: per coordinate its rate (−1: never seen) and the
// last round it was on a support (0: never).
type ImportanceState struct {
	Rate []float32
	Last []int32
}

// State returns a copy of im's state.
func (im *Importance) State() ImportanceState {
	return ImportanceState{Rate: append([]float32(nil), im.rate...), Last: append([]int32(nil), im.last...)}
}

// RestoreImportance returns the Importance of a vector of length d whose
// state is st, taken after round r at the latest. It returns an error
// wrapping ErrCorrupt, and never panics, unless st has d entries of each,
// every rate is −1 (never seen, last round 0) or finite and ≥ 0 (seen, in
// a last round 1..r), as Observe leaves them. It copies st.
func RestoreImportance(st ImportanceState, d, r int) (*Importance, error) {
	if d < 0 || d > MaxDim || len(st.Rate) != d || len(st.Last) != d {
		return nil, fmt.Errorf("%w: importance of %d rates and %d rounds, want %d", ErrCorrupt, len(st.Rate), len(st.Last), d)
	}
	for j, v := range st.Rate {
		last := st.Last[j]
		seen := v >= 0 && !math.IsInf(float64(v), 0) && last >= 1 && int64(last) <= int64(r)
		if !seen && !(v == -1 && last == 0) {
			return nil, fmt.Errorf("%w: importance of coordinate %d: rate %v, last round %d (after round %d)", ErrCorrupt, j, v, last, r)
		}
	}
	return &Importance{rate: append([]float32(nil), st.Rate...), last: append([]int32(nil), st.Last...)}, nil
}
