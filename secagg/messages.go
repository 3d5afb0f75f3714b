package secagg

import (
	"encoding/binary"
	"fmt"
)

// The protocol's messages. Each encodes as a version byte, a kind byte and
// little-endian fields; UnmarshalBinary bounds every count by the limits
// and by the bytes left before it allocates, returns errors wrapping
// ErrTruncated or ErrCorrupt, and never panics.

// wireVersion 3 adds to each advert a commitment to the client's
// self-mask seed. Version 2 (16-byte seeds, three field elements a share,
// no commitment) and version 1 (32-byte keys, five) are refused.
const wireVersion = 3

const (
	kindAdvert byte = 1 + iota
	kindKeyList
	kindShares
	kindMasked
	kindUnmaskRequest
	kindUnmaskResponse
)

const (
	keyLen       = 32
	commitLen    = 32
	listEntryLen = 8 + 2*keyLen             // an advert in a key list
	advertLen    = listEntryLen + commitLen // with the commitment
	plainLen     = 2 * chunks * 8           // a b-share and an s-share
	sealedLen    = plainLen + 16            // with the GCM tag
	encShareLen  = 16 + sealedLen
	revealedLen  = 8 + 1 + chunks*8
	headerLen    = 2
	maxListCount = MaxClients
)

// KeyAdvert is step 0's message: a client's two X25519 public keys, c for
// encrypting shares and s for agreeing pairwise masks, and BC, its
// commitment to its self-mask seed b (SHA-256 over a domain string, the
// session, the client's ID and b), against which the server checks the b
// it rebuilds from revealed shares.
type KeyAdvert struct {
	ID  uint64
	CPK [keyLen]byte
	SPK [keyLen]byte
	BC  [commitLen]byte
}

// KeyList is what the server sends a client after step 0: the adverts of
// its neighbours that took part. Its encoding carries the keys only, not
// the commitments (which only the server checks): BC decodes as zero.
type KeyList struct {
	Adverts []KeyAdvert
}

// EncryptedShare is one client's shares of its two secrets for one
// neighbour, sealed with AES-GCM under their pairwise share key.
type EncryptedShare struct {
	From, To uint64
	Sealed   [sealedLen]byte
}

// ShareBundle is step 1's message: a client's sealed shares for its
// neighbours (all with From = the sender), and, from the server, the
// shares addressed to one client (all with To = that client).
type ShareBundle struct {
	Shares []EncryptedShare
}

// MaskedInput is step 2's message: the client's input plus its masks,
// modulo 2^32.
type MaskedInput struct {
	From uint64
	Y    []uint32
}

// UnmaskRequest is what the server sends a client after step 2: those of
// its neighbours whose masked input it holds, ascending.
type UnmaskRequest struct {
	Survivors []uint64
}

// ShareKind says which secret a revealed share belongs to.
type ShareKind uint8

// The kinds of revealed shares.
const (
	// SelfMaskShare is a share of a survivor's self-mask seed b.
	SelfMaskShare ShareKind = 1
	// MaskKeyShare is a share of a dropped client's mask key s_sk.
	MaskKeyShare ShareKind = 2
)

// RevealedShare is a share a client reveals in step 3 for one neighbour
// (the owner of the secret).
type RevealedShare struct {
	Owner uint64
	Kind  ShareKind
	Y     [chunks]uint64
}

// UnmaskResponse is step 3's message: one revealed share per neighbour
// whose shares the sender holds.
type UnmaskResponse struct {
	From   uint64
	Shares []RevealedShare
}

func header(kind byte, size int) []byte {
	b := make([]byte, headerLen, size)
	b[0], b[1] = wireVersion, kind
	return b
}

// reader reads fields from a message and remembers the first error.
type reader struct {
	b   []byte
	err error
}

func newReader(b []byte, kind byte, what string) *reader {
	r := &reader{b: b}
	switch {
	case len(b) < headerLen:
		r.err = fmt.Errorf("%w: %s: %d bytes", ErrTruncated, what, len(b))
	case b[0] != wireVersion:
		r.err = fmt.Errorf("%w: %s: version %d", ErrCorrupt, what, b[0])
	case b[1] != kind:
		r.err = fmt.Errorf("%w: %s: kind %d, want %d", ErrCorrupt, what, b[1], kind)
	default:
		r.b = b[headerLen:]
	}
	return r
}

func (r *reader) take(n int) []byte {
	if r.err != nil {
		return nil
	}
	if len(r.b) < n {
		r.err = fmt.Errorf("%w: want %d more bytes, have %d", ErrTruncated, n, len(r.b))
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) u64() uint64 {
	if v := r.take(8); v != nil {
		return binary.LittleEndian.Uint64(v)
	}
	return 0
}

// count reads a uint32 count and checks it against limit and against the
// bytes left at size bytes per entry.
func (r *reader) count(limit, size int) int {
	v := r.take(4)
	if v == nil {
		return 0
	}
	n := int(binary.LittleEndian.Uint32(v))
	if n > limit {
		r.err = fmt.Errorf("%w: count %d above limit %d", ErrCorrupt, n, limit)
		return 0
	}
	if len(r.b)/size < n {
		r.err = fmt.Errorf("%w: count %d needs %d bytes, have %d", ErrTruncated, n, n*size, len(r.b))
		return 0
	}
	return n
}

func (r *reader) end() error {
	if r.err == nil && len(r.b) != 0 {
		r.err = fmt.Errorf("%w: %d trailing bytes", ErrCorrupt, len(r.b))
	}
	return r.err
}

// appendAdvert appends an advert's ID and keys, and with commit its
// commitment.
func appendAdvert(b []byte, a *KeyAdvert, commit bool) []byte {
	b = binary.LittleEndian.AppendUint64(b, a.ID)
	b = append(b, a.CPK[:]...)
	b = append(b, a.SPK[:]...)
	if commit {
		b = append(b, a.BC[:]...)
	}
	return b
}

func (r *reader) advert(a *KeyAdvert, commit bool) {
	a.ID = r.u64()
	copy(a.CPK[:], r.take(keyLen))
	copy(a.SPK[:], r.take(keyLen))
	if commit {
		copy(a.BC[:], r.take(commitLen))
	}
}

// MarshalBinary encodes the advert.
func (m *KeyAdvert) MarshalBinary() ([]byte, error) {
	return appendAdvert(header(kindAdvert, headerLen+advertLen), m, true), nil
}

// UnmarshalBinary decodes an advert.
func (m *KeyAdvert) UnmarshalBinary(b []byte) error {
	r := newReader(b, kindAdvert, "key advert")
	r.advert(m, true)
	return r.end()
}

// MarshalBinary encodes the key list, without the adverts' commitments.
func (m *KeyList) MarshalBinary() ([]byte, error) {
	b := header(kindKeyList, headerLen+4+len(m.Adverts)*listEntryLen)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(m.Adverts)))
	for i := range m.Adverts {
		b = appendAdvert(b, &m.Adverts[i], false)
	}
	return b, nil
}

// UnmarshalBinary decodes a key list of at most MaxClients adverts.
func (m *KeyList) UnmarshalBinary(b []byte) error {
	r := newReader(b, kindKeyList, "key list")
	n := r.count(maxListCount, listEntryLen)
	m.Adverts = nil
	if r.err == nil {
		m.Adverts = make([]KeyAdvert, n)
		for i := range m.Adverts {
			r.advert(&m.Adverts[i], false)
		}
	}
	return r.end()
}

// MarshalBinary encodes the share bundle.
func (m *ShareBundle) MarshalBinary() ([]byte, error) {
	b := header(kindShares, headerLen+4+len(m.Shares)*encShareLen)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(m.Shares)))
	for i := range m.Shares {
		s := &m.Shares[i]
		b = binary.LittleEndian.AppendUint64(b, s.From)
		b = binary.LittleEndian.AppendUint64(b, s.To)
		b = append(b, s.Sealed[:]...)
	}
	return b, nil
}

// UnmarshalBinary decodes a share bundle of at most MaxClients shares.
func (m *ShareBundle) UnmarshalBinary(b []byte) error {
	r := newReader(b, kindShares, "share bundle")
	n := r.count(maxListCount, encShareLen)
	m.Shares = nil
	if r.err == nil {
		m.Shares = make([]EncryptedShare, n)
		for i := range m.Shares {
			s := &m.Shares[i]
			s.From, s.To = r.u64(), r.u64()
			copy(s.Sealed[:], r.take(sealedLen))
		}
	}
	return r.end()
}

// MarshalBinary encodes the masked input.
func (m *MaskedInput) MarshalBinary() ([]byte, error) {
	b := header(kindMasked, headerLen+12+4*len(m.Y))
	b = binary.LittleEndian.AppendUint64(b, m.From)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(m.Y)))
	for _, v := range m.Y {
		b = binary.LittleEndian.AppendUint32(b, v)
	}
	return b, nil
}

// UnmarshalBinary decodes a masked input of at most MaxDim values.
func (m *MaskedInput) UnmarshalBinary(b []byte) error {
	r := newReader(b, kindMasked, "masked input")
	m.From = r.u64()
	n := r.count(MaxDim, 4)
	m.Y = nil
	if r.err == nil {
		m.Y = make([]uint32, n)
		v := r.take(4 * n)
		for i := range m.Y {
			m.Y[i] = binary.LittleEndian.Uint32(v[4*i:])
		}
	}
	return r.end()
}

// MarshalBinary encodes the unmask request.
func (m *UnmaskRequest) MarshalBinary() ([]byte, error) {
	b := header(kindUnmaskRequest, headerLen+4+8*len(m.Survivors))
	b = binary.LittleEndian.AppendUint32(b, uint32(len(m.Survivors)))
	for _, id := range m.Survivors {
		b = binary.LittleEndian.AppendUint64(b, id)
	}
	return b, nil
}

// UnmarshalBinary decodes an unmask request of at most MaxClients IDs,
// which must be strictly ascending.
func (m *UnmaskRequest) UnmarshalBinary(b []byte) error {
	r := newReader(b, kindUnmaskRequest, "unmask request")
	n := r.count(maxListCount, 8)
	m.Survivors = nil
	if r.err == nil {
		m.Survivors = make([]uint64, n)
		for i := range m.Survivors {
			m.Survivors[i] = r.u64()
			if i > 0 && m.Survivors[i] <= m.Survivors[i-1] && r.err == nil {
				r.err = fmt.Errorf("%w: unmask request: survivors not ascending at %d", ErrCorrupt, i)
			}
		}
	}
	return r.end()
}

// MarshalBinary encodes the unmask response.
func (m *UnmaskResponse) MarshalBinary() ([]byte, error) {
	b := header(kindUnmaskResponse, headerLen+12+len(m.Shares)*revealedLen)
	b = binary.LittleEndian.AppendUint64(b, m.From)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(m.Shares)))
	for i := range m.Shares {
		s := &m.Shares[i]
		b = binary.LittleEndian.AppendUint64(b, s.Owner)
		b = append(b, byte(s.Kind))
		for _, y := range s.Y {
			b = binary.LittleEndian.AppendUint64(b, y)
		}
	}
	return b, nil
}

// UnmarshalBinary decodes an unmask response of at most MaxClients shares;
// kinds must be known and values inside the field.
func (m *UnmaskResponse) UnmarshalBinary(b []byte) error {
	r := newReader(b, kindUnmaskResponse, "unmask response")
	m.From = r.u64()
	n := r.count(maxListCount, revealedLen)
	m.Shares = nil
	if r.err == nil {
		m.Shares = make([]RevealedShare, n)
		for i := range m.Shares {
			s := &m.Shares[i]
			s.Owner = r.u64()
			if k := r.take(1); k != nil {
				s.Kind = ShareKind(k[0])
			}
			for c := range s.Y {
				s.Y[c] = r.u64()
				if s.Y[c] >= prime && r.err == nil {
					r.err = fmt.Errorf("%w: unmask response: share value out of field", ErrCorrupt)
				}
			}
			if s.Kind != SelfMaskShare && s.Kind != MaskKeyShare && r.err == nil {
				r.err = fmt.Errorf("%w: unmask response: share kind %d", ErrCorrupt, s.Kind)
			}
		}
	}
	return r.end()
}
