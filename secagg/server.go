package secagg

import (
	"cmp"
	"crypto/ecdh"
	"errors"
	"fmt"
	"slices"
)

// Server steps.
const (
	srvAdvertise = iota
	srvShareKeys
	srvMasked
	srvUnmask
	srvDone
)

// Server is the server's side of the protocol, a pure state machine. It
// collects each step's messages (Add...), closes the step (End...), and
// hands each client what it needs for the next (AdvertsFor, SharesFor, the
// UnmaskRequest). Messages a step does not expect are refused with an
// error and change nothing, so a driver may drop a bad client's message and
// go on. The driver authenticates senders: the from argument is the
// client the transport vouches for. A Server is not safe for concurrent
// use; its results depend only on the messages it accepted, not on their
// order.
type Server struct {
	g    *Graph
	step int

	adverts  map[uint64]KeyAdvert  // U1
	keys     map[[keyLen]byte]bool // every advertised key
	shares   map[uint64][]EncryptedShare
	sent     map[uint64]bool // U2
	sum      []uint32
	masked   map[uint64]bool // U3
	survive  []uint64        // U3, ascending
	revealed map[uint64]bool // clients that answered step 3
	bShares  map[uint64][]Share
	sShares  map[uint64][]Share
	recon    map[uint64]ShareKind // what was reconstructed of whom
}

// NewServer starts the server's side of the round of g.
func NewServer(g *Graph) *Server {
	return &Server{g: g, adverts: map[uint64]KeyAdvert{}, keys: map[[keyLen]byte]bool{}}
}

func (s *Server) at(step int) error {
	if s.step != step {
		return fmt.Errorf("%w: server at step %d, called step %d", ErrStep, s.step, step)
	}
	return nil
}

// AddAdvert accepts a client's step-0 message. It refuses a key that
// another client already advertised (ErrBadKey).
func (s *Server) AddAdvert(from uint64, a KeyAdvert) error {
	if err := s.at(srvAdvertise); err != nil {
		return err
	}
	if _, ok := s.g.Index(from); !ok || a.ID != from {
		return fmt.Errorf("%w: advert of %d from %d", ErrUnknownClient, a.ID, from)
	}
	if _, dup := s.adverts[from]; dup {
		return fmt.Errorf("%w: advert of %d", ErrDuplicate, from)
	}
	// A key used twice would make the neighbours refuse their key lists:
	// refuse it here, so one client cannot stall the others.
	if a.CPK == a.SPK {
		return fmt.Errorf("%w: client %d advertises one key twice", ErrBadKey, from)
	}
	if s.keys[a.CPK] || s.keys[a.SPK] {
		return fmt.Errorf("%w: client %d reuses another client's key", ErrBadKey, from)
	}
	s.adverts[from] = a
	s.keys[a.CPK], s.keys[a.SPK] = true, true
	return nil
}

// EndAdvertise closes step 0. It fails with ErrTooFewSurvivors if fewer
// than t+1 clients advertised (no client could have t neighbours).
func (s *Server) EndAdvertise() error {
	if err := s.at(srvAdvertise); err != nil {
		return err
	}
	if len(s.adverts) < s.g.p.T+1 {
		return fmt.Errorf("%w: %d clients advertised, t=%d", ErrTooFewSurvivors, len(s.adverts), s.g.p.T)
	}
	s.step = srvShareKeys
	s.shares = map[uint64][]EncryptedShare{}
	s.sent = map[uint64]bool{}
	return nil
}

// AdvertsFor returns what the server sends client id after step 0: the
// adverts of its neighbours that advertised, in ascending ID order,
// without their commitments (as KeyList encodes them).
func (s *Server) AdvertsFor(id uint64) KeyList {
	var l KeyList
	for _, nb := range s.g.Neighbours(id) {
		if a, ok := s.adverts[nb]; ok {
			a.BC = [commitLen]byte{} // the list carries keys only
			l.Adverts = append(l.Adverts, a)
		}
	}
	return l
}

// AddShares accepts a client's step-1 message: one sealed share for each
// of its neighbours that advertised, no more and no fewer, all from the
// sender.
func (s *Server) AddShares(from uint64, m ShareBundle) error {
	if err := s.at(srvShareKeys); err != nil {
		return err
	}
	if _, ok := s.adverts[from]; !ok {
		return fmt.Errorf("%w: shares from %d, which did not advertise", ErrUnknownClient, from)
	}
	if s.sent[from] {
		return fmt.Errorf("%w: shares from %d", ErrDuplicate, from)
	}
	fi, _ := s.g.Index(from)
	seen := make(map[uint64]bool, len(m.Shares))
	for _, e := range m.Shares {
		ti, ok := s.g.Index(e.To)
		_, advertised := s.adverts[e.To]
		if e.From != from || !ok || !advertised || !s.g.adjacent(fi, ti) {
			return fmt.Errorf("%w: share %d→%d from %d", ErrUnknownClient, e.From, e.To, from)
		}
		if seen[e.To] {
			return fmt.Errorf("%w: two shares %d→%d", ErrDuplicate, from, e.To)
		}
		seen[e.To] = true
	}
	// The sender must cover every neighbour that advertised (what
	// AdvertsFor gave it): a survivor masks with exactly the neighbours
	// whose shares it received, and Sum removes exactly those masks.
	if want := len(s.AdvertsFor(from).Adverts); len(m.Shares) != want {
		return fmt.Errorf("%w: %d shares from %d, want one for each of its %d advertised neighbours", ErrUnknownClient, len(m.Shares), from, want)
	}
	for _, e := range m.Shares {
		s.shares[e.To] = append(s.shares[e.To], e)
	}
	s.sent[from] = true
	return nil
}

// EndShareKeys closes step 1.
func (s *Server) EndShareKeys() error {
	if err := s.at(srvShareKeys); err != nil {
		return err
	}
	if len(s.sent) < s.g.p.T+1 {
		return fmt.Errorf("%w: %d clients shared keys, t=%d", ErrTooFewSurvivors, len(s.sent), s.g.p.T)
	}
	s.step = srvMasked
	s.sum = make([]uint32, s.g.p.D)
	s.masked = map[uint64]bool{}
	return nil
}

// SharesFor returns what the server sends client id after step 1: the
// sealed shares addressed to it, in ascending order of sender.
func (s *Server) SharesFor(id uint64) ShareBundle {
	b := ShareBundle{Shares: slices.Clone(s.shares[id])}
	slices.SortFunc(b.Shares, func(x, y EncryptedShare) int { return cmp.Compare(x.From, y.From) })
	return b
}

// AddMasked accepts a client's step-2 message and adds it to the running
// sum; the server keeps no client's masked vector.
func (s *Server) AddMasked(from uint64, m MaskedInput) error {
	if err := s.at(srvMasked); err != nil {
		return err
	}
	if m.From != from || !s.sent[from] {
		return fmt.Errorf("%w: masked input of %d from %d", ErrUnknownClient, m.From, from)
	}
	if s.masked[from] {
		return fmt.Errorf("%w: masked input of %d", ErrDuplicate, from)
	}
	if len(m.Y) != s.g.p.D {
		return fmt.Errorf("%w: masked input of %d values, want %d", ErrLength, len(m.Y), s.g.p.D)
	}
	for i, v := range m.Y {
		s.sum[i] += v
	}
	s.masked[from] = true
	return nil
}

// EndMaskedInput closes step 2: the clients whose masked input was added
// are the survivors (U3). It fails with ErrTooFewSurvivors if there are
// fewer than t.
func (s *Server) EndMaskedInput() error {
	if err := s.at(srvMasked); err != nil {
		return err
	}
	if len(s.masked) < s.g.p.T {
		return fmt.Errorf("%w: %d masked inputs, t=%d", ErrTooFewSurvivors, len(s.masked), s.g.p.T)
	}
	for id := range s.masked {
		s.survive = append(s.survive, id)
	}
	slices.Sort(s.survive)
	s.step = srvUnmask
	s.revealed = map[uint64]bool{}
	s.bShares = map[uint64][]Share{}
	s.sShares = map[uint64][]Share{}
	s.recon = map[uint64]ShareKind{}
	return nil
}

// Survivors returns the clients whose masked input is in the sum (U3),
// ascending, once step 2 is closed.
func (s *Server) Survivors() []uint64 { return slices.Clone(s.survive) }

// UnmaskRequestFor returns what the server sends survivor id after step 2:
// which of its neighbours survived. It names neighbours only, so its size
// grows with k, not with n.
func (s *Server) UnmaskRequestFor(id uint64) UnmaskRequest {
	var r UnmaskRequest
	for _, nb := range s.g.Neighbours(id) {
		if s.masked[nb] {
			r.Survivors = append(r.Survivors, nb)
		}
	}
	return r
}

// kindOf is the only kind of secret the server may learn of owner: the
// self-mask seed of a survivor, the mask key of a client that shared keys
// and then dropped. ok is false for other clients.
func (s *Server) kindOf(owner uint64) (ShareKind, bool) {
	switch {
	case s.masked[owner]:
		return SelfMaskShare, true
	case s.sent[owner]:
		return MaskKeyShare, true
	}
	return 0, false
}

// AddUnmask accepts a survivor's step-3 message. A share of the wrong kind
// for its owner (a b-share of a dropped client, an s-share of a survivor)
// is refused with ErrBothShares, and the whole message with it.
func (s *Server) AddUnmask(from uint64, m UnmaskResponse) error {
	if err := s.at(srvUnmask); err != nil {
		return err
	}
	if m.From != from || !s.masked[from] {
		return fmt.Errorf("%w: unmask response of %d from %d", ErrUnknownClient, m.From, from)
	}
	if s.revealed[from] {
		return fmt.Errorf("%w: unmask response of %d", ErrDuplicate, from)
	}
	fi, _ := s.g.Index(from)
	seen := make(map[uint64]bool, len(m.Shares))
	for _, r := range m.Shares {
		oi, ok := s.g.Index(r.Owner)
		kind, known := s.kindOf(r.Owner)
		if !ok || !known || !s.g.adjacent(fi, oi) {
			return fmt.Errorf("%w: share of %d from %d", ErrUnknownClient, r.Owner, from)
		}
		if r.Kind != kind {
			return fmt.Errorf("%w: share of kind %d for client %d, which may only give kind %d", ErrBothShares, r.Kind, r.Owner, kind)
		}
		if seen[r.Owner] {
			return fmt.Errorf("%w: two shares of %d from %d", ErrDuplicate, r.Owner, from)
		}
		seen[r.Owner] = true
	}
	x := shareX(fi)
	for _, r := range m.Shares {
		sh := Share{X: x, Y: r.Y}
		if r.Kind == SelfMaskShare {
			s.bShares[r.Owner] = append(s.bShares[r.Owner], sh)
		} else {
			s.sShares[r.Owner] = append(s.sShares[r.Owner], sh)
		}
	}
	s.revealed[from] = true
	return nil
}

// Reconstruct rebuilds one secret of owner from the shares revealed so far:
// the key of its self mask (SelfMaskShare) if it is a survivor, its X25519
// mask key s_sk (MaskKeyShare) if it dropped after sharing keys; each is
// derived from the 16-byte seed the shares rebuild. Asking for the other
// kind fails with ErrBothShares, so the server never holds both secrets of
// one client. The seed is checked against what its owner advertised: a
// self-mask seed against its commitment, a mask key against its public
// key. With more than t shares, one wrong share is corrected (see
// combineChecked); a seed that no tried subset rebuilds to pass the check
// gives a *MismatchError naming the owner, which wraps
// ErrInconsistentShares.
func (s *Server) Reconstruct(owner uint64, kind ShareKind) ([32]byte, error) {
	if err := s.at(srvUnmask); err != nil {
		return [32]byte{}, err
	}
	want, ok := s.kindOf(owner)
	if !ok {
		return [32]byte{}, fmt.Errorf("%w: client %d has no shared secrets", ErrUnknownClient, owner)
	}
	if kind != want {
		return [32]byte{}, fmt.Errorf("%w: kind %d of client %d, which may only give kind %d", ErrBothShares, kind, owner, want)
	}
	if prev, done := s.recon[owner]; done && prev != kind {
		return [32]byte{}, fmt.Errorf("%w: client %d", ErrBothShares, owner)
	}
	shares := s.bShares[owner]
	if kind == MaskKeyShare {
		shares = s.sShares[owner]
	}
	a := s.adverts[owner]
	check := func(seed *[SecretLen]byte) bool {
		return commitSelfMask(s.g.p.Session, owner, seed) == a.BC
	}
	if kind == MaskKeyShare {
		check = func(seed *[SecretLen]byte) bool {
			return [keyLen]byte(maskKeyFromSeed(seed).PublicKey().Bytes()) == a.SPK
		}
	}
	seed, err := combineChecked(shares, s.g.p.T, check)
	if errors.Is(err, ErrInconsistentShares) {
		return [32]byte{}, &MismatchError{Owner: owner, Kind: kind, Shares: len(shares), T: s.g.p.T, Consistent: errors.Is(err, errConsistentMismatch)}
	}
	if err != nil {
		return [32]byte{}, fmt.Errorf("client %d: %w", owner, err)
	}
	secret := selfMaskFromSeed(&seed)
	if kind == MaskKeyShare {
		secret = [32]byte(maskKeyFromSeed(&seed).Bytes())
	}
	clear(seed[:])
	s.recon[owner] = kind
	return secret, nil
}

// Sum closes step 3 and returns the sum modulo 2^32 of the survivors'
// inputs: it removes every survivor's self mask, rebuilt from the b-shares,
// and the pair masks survivors shared with clients that dropped after step
// 1, rebuilt from those clients' mask keys. Its work is one vector
// expansion per survivor plus one per (dropped client, surviving
// neighbour) edge: it grows with k, not with n². It fails, and returns no
// sum, with ErrTooFewShares if some secret it needs has fewer than t
// shares (too many clients dropped), or with ErrInconsistentShares.
func (s *Server) Sum() ([]uint32, error) {
	if err := s.at(srvUnmask); err != nil {
		return nil, err
	}
	p := s.g.p
	out := slices.Clone(s.sum)
	buf := prgScratch()
	for _, id := range s.survive {
		b, err := s.Reconstruct(id, SelfMaskShare)
		if err != nil {
			return nil, err
		}
		addPRG(out, &b, true, buf)
	}
	for _, j := range s.g.p.IDs {
		if !s.sent[j] || s.masked[j] {
			continue
		}
		ji, _ := s.g.Index(j)
		var nbs []uint64
		for _, v := range s.g.nbrs[ji] {
			if id := p.IDs[v]; s.masked[id] {
				nbs = append(nbs, id)
			}
		}
		if len(nbs) == 0 {
			continue
		}
		sk, err := s.Reconstruct(j, MaskKeyShare)
		if err != nil {
			return nil, err
		}
		priv, err := ecdh.X25519().NewPrivateKey(sk[:])
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInconsistentShares, err)
		}
		for _, i := range nbs {
			a := s.adverts[i]
			spk, err := ecdh.X25519().NewPublicKey(a.SPK[:])
			if err != nil {
				return nil, fmt.Errorf("%w: %w", ErrBadKey, err)
			}
			seed, err := derive(priv, spk, labelPairMask, p.Session, i, j)
			if err != nil {
				return nil, err
			}
			// Survivor i added its mask with j with sign maskSign(i, j);
			// take it away.
			addPRG(out, &seed, !maskSign(i, j), buf)
		}
	}
	s.step = srvDone
	return out, nil
}
