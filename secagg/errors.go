package secagg

import (
	"errors"
	"fmt"
)

// Sentinel errors, returned wrapped with details; test for them with
// errors.Is. Drivers map them to their own errors at their boundary.
var (
	// ErrParams means the protocol parameters are invalid (see
	// Params.Validate).
	ErrParams = errors.New("secagg: invalid parameters")

	// ErrStep means a call came in the wrong step of the protocol, or twice.
	ErrStep = errors.New("secagg: wrong protocol step")

	// ErrUnknownClient means a message names a client that is not in the
	// round, not a neighbour, or not in the set that step allows.
	ErrUnknownClient = errors.New("secagg: unknown client")

	// ErrDuplicate means a message, a key or a share came twice.
	ErrDuplicate = errors.New("secagg: duplicate")

	// ErrTooFewNeighbours means a client has fewer than t live neighbours,
	// so its secrets could not be recovered: the client aborts.
	ErrTooFewNeighbours = errors.New("secagg: too few neighbours")

	// ErrTooFewShares means fewer than t shares are held for a secret the
	// server must reconstruct: too many clients dropped out. The server
	// never returns a sum in that case.
	ErrTooFewShares = errors.New("secagg: too few shares")

	// ErrTooFewSurvivors means fewer than t clients sent a masked input.
	ErrTooFewSurvivors = errors.New("secagg: too few survivors")

	// ErrInconsistentShares means shares of one secret do not lie on one
	// polynomial, or the reconstructed mask key does not match the public
	// key its owner advertised.
	ErrInconsistentShares = errors.New("secagg: inconsistent shares")

	// ErrBothShares means a request to reveal or reconstruct the secret of
	// the other kind for a client: the self-mask seed of a client that
	// dropped, or the mask key of one that sent its masked input. Holding
	// both would unmask that client's input, so it is refused.
	ErrBothShares = errors.New("secagg: refused: both secrets of one client")

	// ErrDecrypt means an encrypted share did not authenticate.
	ErrDecrypt = errors.New("secagg: share does not decrypt")

	// ErrBadKey means a public key is not a valid X25519 key, or the two
	// keys of a client are equal or reused by another client.
	ErrBadKey = errors.New("secagg: bad public key")

	// ErrLength means a vector has the wrong length.
	ErrLength = errors.New("secagg: wrong vector length")

	// ErrTruncated means encoded bytes ended early.
	ErrTruncated = errors.New("secagg: message truncated")

	// ErrCorrupt means encoded bytes are malformed: a wrong version or
	// kind, a count beyond its limit, a field element out of range or
	// trailing bytes.
	ErrCorrupt = errors.New("secagg: corrupt message")
)

// MismatchError is the server's refusal of a secret it rebuilt from
// revealed shares: the self-mask seed of survivor Owner does not match
// the commitment Owner advertised, or the mask key of Owner, which
// dropped, does not match its advertised public key, from every subset of
// its Shares revealed shares that the server tried (t, or with more than
// t, each that leaves one of the first t+1 out). With exactly t shares a
// neighbour's wrong share cannot be told from the owner's wrong
// commitment. Sum returns it and no sum. It wraps ErrInconsistentShares.
type MismatchError struct {
	Owner  uint64
	Kind   ShareKind
	Shares int // revealed shares of the secret
	T      int // the threshold
	// Consistent says that more than t shares lie on one polynomial, so
	// the owner's advert (or its shares, all of them) is what is wrong,
	// not one neighbour's share.
	Consistent bool
}

func (e *MismatchError) Error() string {
	what := "self-mask seed"
	if e.Kind == MaskKeyShare {
		what = "mask key"
	}
	blame := ""
	if e.Consistent {
		blame = "; the shares agree: the client's own advert or shares are wrong"
	}
	return fmt.Sprintf("%v: the %s of client %d rebuilt from %d shares (t=%d) does not match its advert%s", ErrInconsistentShares, what, e.Owner, e.Shares, e.T, blame)
}

// Unwrap returns ErrInconsistentShares.
func (e *MismatchError) Unwrap() error { return ErrInconsistentShares }
