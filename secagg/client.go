package secagg

import (
	"crypto/ecdh"
	"encoding/binary"
	"fmt"
	"io"
	"slices"
)

// Client steps: each method may run once, in this order.
const (
	stepAdvertise = iota
	stepShareKeys
	stepMaskInput
	stepUnmask
	stepDone
)

// Client is one client's side of the protocol, a pure state machine: each
// step takes the server's message and returns the client's, in the order
// Advertise, ShareKeys, MaskInput, Unmask. A step out of order, or run
// twice, returns ErrStep; a step that fails leaves the client unusable
// (it aborts, as the protocol says). A Client is not safe for concurrent
// use.
type Client struct {
	g    *Graph
	id   uint64
	idx  int
	rnd  io.Reader
	step int

	cKey, sKey *ecdh.PrivateKey
	sSeed      [SecretLen]byte // the seed sKey is derived from, shared
	b          [SecretLen]byte // self-mask seed, shared

	peers map[uint64]*peer // neighbours that advertised (U1 ∩ N(i))
}

// peer is what a client knows of one neighbour.
type peer struct {
	idx    int
	spk    *ecdh.PublicKey
	key    [32]byte // share key, from the c keys
	held   bool     // its shares arrived (it is in U2)
	bShare Share
	sShare Share
}

// NewClient starts client id of the round of g. All its randomness (key
// pairs, self-mask seed, polynomial coefficients) is read from rnd, which
// must be a cryptographically secure source in a deployment (crypto/rand)
// and may be a seeded stream in tests and simulations.
func NewClient(g *Graph, id uint64, rnd io.Reader) (*Client, error) {
	idx, ok := g.Index(id)
	if !ok {
		return nil, fmt.Errorf("%w: client %d not in the round", ErrUnknownClient, id)
	}
	c := &Client{g: g, id: id, idx: idx, rnd: rnd}
	var err error
	if c.cKey, err = readKey(rnd); err != nil {
		return nil, err
	}
	if _, err := io.ReadFull(rnd, c.sSeed[:]); err != nil {
		return nil, fmt.Errorf("secagg: randomness: %w", err)
	}
	c.sKey = maskKeyFromSeed(&c.sSeed)
	if _, err := io.ReadFull(rnd, c.b[:]); err != nil {
		return nil, fmt.Errorf("secagg: randomness: %w", err)
	}
	return c, nil
}

func readKey(rnd io.Reader) (*ecdh.PrivateKey, error) {
	var k [32]byte
	if _, err := io.ReadFull(rnd, k[:]); err != nil {
		return nil, fmt.Errorf("secagg: randomness: %w", err)
	}
	return ecdh.X25519().NewPrivateKey(k[:])
}

// ID returns the client's ID.
func (c *Client) ID() uint64 { return c.id }

func (c *Client) enter(step int) error {
	if c.step != step {
		return fmt.Errorf("%w: client %d at step %d, called step %d", ErrStep, c.id, c.step, step)
	}
	c.step = stepDone // until the step succeeds
	return nil
}

// Advertise is step 0: the client's public keys and its commitment to
// its self-mask seed.
func (c *Client) Advertise() (KeyAdvert, error) {
	if err := c.enter(stepAdvertise); err != nil {
		return KeyAdvert{}, err
	}
	a := KeyAdvert{ID: c.id, BC: commitSelfMask(c.g.p.Session, c.id, &c.b)}
	copy(a.CPK[:], c.cKey.PublicKey().Bytes())
	copy(a.SPK[:], c.sKey.PublicKey().Bytes())
	c.step = stepShareKeys
	return a, nil
}

// ShareKeys is step 1. It takes the adverts of the neighbours that took
// part in step 0 (the client's own advert may be among them), Shamir-shares
// its mask key s_sk and its self-mask seed b with threshold t among them,
// and seals each neighbour's two shares under the key agreed from the c
// keys. It fails with ErrTooFewNeighbours if fewer than t neighbours
// advertised, and with ErrUnknownClient, ErrDuplicate or ErrBadKey on an
// advert it cannot accept.
func (c *Client) ShareKeys(list KeyList) (ShareBundle, error) {
	if err := c.enter(stepShareKeys); err != nil {
		return ShareBundle{}, err
	}
	p := c.g.p
	own := c.cKey.PublicKey().Bytes()
	ownS := c.sKey.PublicKey().Bytes()
	seenKeys := map[[keyLen]byte]bool{[keyLen]byte(own): true, [keyLen]byte(ownS): true}
	c.peers = make(map[uint64]*peer, p.K)
	for i := range list.Adverts {
		a := &list.Adverts[i]
		if a.ID == c.id {
			if [keyLen]byte(own) != a.CPK || [keyLen]byte(ownS) != a.SPK {
				return ShareBundle{}, fmt.Errorf("%w: own advert altered", ErrBadKey)
			}
			continue
		}
		j, ok := c.g.Index(a.ID)
		if !ok || !c.g.adjacent(c.idx, j) {
			return ShareBundle{}, fmt.Errorf("%w: advert of %d, not a neighbour of %d", ErrUnknownClient, a.ID, c.id)
		}
		if c.peers[a.ID] != nil {
			return ShareBundle{}, fmt.Errorf("%w: two adverts of %d", ErrDuplicate, a.ID)
		}
		if a.CPK == a.SPK || seenKeys[a.CPK] || seenKeys[a.SPK] {
			return ShareBundle{}, fmt.Errorf("%w: advert of %d reuses a key", ErrBadKey, a.ID)
		}
		seenKeys[a.CPK], seenKeys[a.SPK] = true, true
		cpk, err := ecdh.X25519().NewPublicKey(a.CPK[:])
		if err != nil {
			return ShareBundle{}, fmt.Errorf("%w: %w", ErrBadKey, err)
		}
		spk, err := ecdh.X25519().NewPublicKey(a.SPK[:])
		if err != nil {
			return ShareBundle{}, fmt.Errorf("%w: %w", ErrBadKey, err)
		}
		pr := &peer{idx: j, spk: spk}
		if pr.key, err = derive(c.cKey, cpk, labelShareKey, p.Session, c.id, a.ID); err != nil {
			return ShareBundle{}, err
		}
		c.peers[a.ID] = pr
	}
	if len(c.peers) < p.T {
		return ShareBundle{}, fmt.Errorf("%w: client %d has %d of t=%d", ErrTooFewNeighbours, c.id, len(c.peers), p.T)
	}
	ids := c.peerIDs()
	xs := make([]uint32, len(ids))
	for i, id := range ids {
		xs[i] = shareX(c.peers[id].idx)
	}
	sShares, err := Split(&c.sSeed, xs, p.T, c.rnd)
	if err != nil {
		return ShareBundle{}, err
	}
	bShares, err := Split(&c.b, xs, p.T, c.rnd)
	if err != nil {
		return ShareBundle{}, err
	}
	out := ShareBundle{Shares: make([]EncryptedShare, len(ids))}
	plain := make([]byte, 0, plainLen)
	for i, id := range ids {
		plain = appendY(appendY(plain[:0], &bShares[i].Y), &sShares[i].Y)
		e := &out.Shares[i]
		e.From, e.To = c.id, id
		k := c.peers[id].key
		shareAEAD(&k).Seal(e.Sealed[:0], shareNonce(c.id), plain, shareAD(p.Session, c.id, id))
	}
	clear(plain[:cap(plain)])
	c.step = stepMaskInput
	return out, nil
}

func appendY(b []byte, y *[chunks]uint64) []byte {
	for _, v := range y {
		b = binary.LittleEndian.AppendUint64(b, v)
	}
	return b
}

func (c *Client) peerIDs() []uint64 {
	ids := make([]uint64, 0, len(c.peers))
	for id := range c.peers {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// MaskInput is step 2. It opens the shares its neighbours sent it (the
// server's bundle for this client; their senders form U2 for it), keeps
// them for step 3, and returns x + PRG(b) + Σ ±PRG(pair mask) modulo 2^32
// over the neighbours in U2, the lower ID of a pair adding and the higher
// subtracting. x must have length D and is not modified. It fails with
// ErrTooFewNeighbours if fewer than t neighbours sent shares, with
// ErrDecrypt on a share that does not open.
func (c *Client) MaskInput(x []uint32, in ShareBundle) (MaskedInput, error) {
	if err := c.enter(stepMaskInput); err != nil {
		return MaskedInput{}, err
	}
	p := c.g.p
	if len(x) != p.D {
		return MaskedInput{}, fmt.Errorf("%w: input of %d, want %d", ErrLength, len(x), p.D)
	}
	plain := make([]byte, 0, plainLen)
	for i := range in.Shares {
		e := &in.Shares[i]
		pr := c.peers[e.From]
		if e.To != c.id || pr == nil {
			return MaskedInput{}, fmt.Errorf("%w: share from %d to %d at client %d", ErrUnknownClient, e.From, e.To, c.id)
		}
		if pr.held {
			return MaskedInput{}, fmt.Errorf("%w: two shares from %d", ErrDuplicate, e.From)
		}
		var err error
		plain, err = shareAEAD(&pr.key).Open(plain[:0], shareNonce(e.From), e.Sealed[:], shareAD(p.Session, e.From, c.id))
		if err != nil {
			return MaskedInput{}, fmt.Errorf("%w: from %d", ErrDecrypt, e.From)
		}
		sx := shareX(c.idx)
		pr.bShare.X, pr.sShare.X = sx, sx
		for k := range chunks {
			pr.bShare.Y[k] = binary.LittleEndian.Uint64(plain[8*k:])
			pr.sShare.Y[k] = binary.LittleEndian.Uint64(plain[8*(chunks+k):])
			if pr.bShare.Y[k] >= prime || pr.sShare.Y[k] >= prime {
				return MaskedInput{}, fmt.Errorf("%w: share from %d out of field", ErrCorrupt, e.From)
			}
		}
		pr.held = true
	}
	ids := c.peerIDs()
	held := 0
	for _, id := range ids {
		if c.peers[id].held {
			held++
		}
	}
	if held < p.T {
		return MaskedInput{}, fmt.Errorf("%w: client %d received shares from %d of t=%d", ErrTooFewNeighbours, c.id, held, p.T)
	}
	y := slices.Clone(x)
	buf := prgScratch()
	self := selfMaskFromSeed(&c.b)
	addPRG(y, &self, false, buf)
	for _, id := range ids {
		pr := c.peers[id]
		if !pr.held {
			continue
		}
		seed, err := derive(c.sKey, pr.spk, labelPairMask, p.Session, c.id, id)
		if err != nil {
			return MaskedInput{}, err
		}
		addPRG(y, &seed, maskSign(c.id, id), buf)
	}
	c.step = stepUnmask
	return MaskedInput{From: c.id, Y: y}, nil
}

// Unmask is step 3. The request names the client's neighbours that
// survived (sent their masked input). For every neighbour whose shares it
// holds it reveals exactly one share: of b if the neighbour survived, of
// s_sk if it did not. It fails with ErrTooFewSurvivors if the request names
// fewer than t survivors (the sum could not be recovered, so the client
// reveals nothing), and with ErrCorrupt if the list is not ascending.
func (c *Client) Unmask(req UnmaskRequest) (UnmaskResponse, error) {
	if err := c.enter(stepUnmask); err != nil {
		return UnmaskResponse{}, err
	}
	if len(req.Survivors) < c.g.p.T {
		return UnmaskResponse{}, fmt.Errorf("%w: %d of t=%d", ErrTooFewSurvivors, len(req.Survivors), c.g.p.T)
	}
	for i := 1; i < len(req.Survivors); i++ {
		if req.Survivors[i] <= req.Survivors[i-1] {
			return UnmaskResponse{}, fmt.Errorf("%w: survivors not ascending", ErrCorrupt)
		}
	}
	out := UnmaskResponse{From: c.id}
	for _, id := range c.peerIDs() {
		pr := c.peers[id]
		if !pr.held {
			continue
		}
		if _, alive := slices.BinarySearch(req.Survivors, id); alive {
			out.Shares = append(out.Shares, RevealedShare{Owner: id, Kind: SelfMaskShare, Y: pr.bShare.Y})
		} else {
			out.Shares = append(out.Shares, RevealedShare{Owner: id, Kind: MaskKeyShare, Y: pr.sShare.Y})
		}
	}
	c.step = stepDone
	return out, nil
}
