package secagg

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
)

// prgChunk is the keystream produced per AES-CTR call (16 KiB).
const prgChunk = 1 << 14

// AddPRG adds (neg false) or subtracts (neg true) the pseudo-random vector
// expanded from seed to dst, modulo 2^32. The vector is the AES-256-CTR
// keystream under key seed and a zero IV, read as little-endian uint32s, so
// every party expanding the same seed gets the same vector. Each seed must
// key one stream only (the protocol derives a fresh one per pair and
// session).
func AddPRG(dst []uint32, seed *[32]byte, neg bool) {
	addPRG(dst, seed, neg, nil)
}

// prgScratch returns a keystream buffer for addPRG.
func prgScratch() []byte { return make([]byte, prgChunk) }

// addPRG is AddPRG with a keystream buffer the caller may reuse across
// calls (nil allocates one).
func addPRG(dst []uint32, seed *[32]byte, neg bool, buf []byte) {
	block, err := aes.NewCipher(seed[:])
	if err != nil {
		panic("secagg: AddPRG: " + err.Error()) // a 32-byte key never fails
	}
	var iv [aes.BlockSize]byte
	ctr := cipher.NewCTR(block, iv[:])
	if len(buf) < 4 {
		buf = make([]byte, 4*min(len(dst), prgChunk/4))
	}
	for len(dst) > 0 {
		n := min(len(dst), len(buf)/4)
		b := buf[:4*n]
		clear(b)
		ctr.XORKeyStream(b, b)
		if neg {
			for i := range n {
				dst[i] -= binary.LittleEndian.Uint32(b[4*i:])
			}
		} else {
			for i := range n {
				dst[i] += binary.LittleEndian.Uint32(b[4*i:])
			}
		}
		dst = dst[n:]
	}
}

// Labels of the key derivations; each key is bound to its use, the session
// and the ordered pair of clients.
const (
	labelPairMask = "fedzip secagg v1 pair mask"
	labelShareKey = "fedzip secagg v1 share key"
)

// Labels of the keys a client derives from its shared seeds.
const (
	labelMaskKey  = "fedzip secagg v2 mask key"
	labelSelfMask = "fedzip secagg v2 self mask"
)

// seedKey expands a shared seed to a 32-byte key for one use
// (HKDF-SHA256 with the label as info).
func seedKey(seed *[SecretLen]byte, label string) [32]byte {
	k, err := hkdf.Key(sha256.New, seed[:], nil, label, 32)
	if err != nil {
		panic("secagg: hkdf: " + err.Error()) // 32 bytes of SHA-256 never fail
	}
	return [32]byte(k)
}

// maskKeyFromSeed is the X25519 mask key s_sk a client derives from its
// mask seed, which it shares; the server rebuilds it the same way.
func maskKeyFromSeed(seed *[SecretLen]byte) *ecdh.PrivateKey {
	k := seedKey(seed, labelMaskKey)
	priv, err := ecdh.X25519().NewPrivateKey(k[:])
	if err != nil {
		panic("secagg: " + err.Error()) // every 32-byte string is an X25519 key
	}
	return priv
}

// labelCommit is the domain string of a self-mask seed's commitment.
const labelCommit = "fedzip secagg v3 self-mask seed commitment"

// commitSelfMask is client id's commitment to its self-mask seed b in
// session: SHA-256(labelCommit || session || id || b), the integers
// big-endian. b has 128 bits drawn fresh each round, so the digest hides
// it (finding b is a preimage search); SHA-256's collision resistance
// binds the client to it. The domain string keeps the digest apart from
// the self-mask key (HKDF of b under another label), and the session and
// ID keep one round's or one client's commitment from serving another.
func commitSelfMask(session, id uint64, b *[SecretLen]byte) [commitLen]byte {
	h := sha256.New()
	h.Write([]byte(labelCommit))
	var n [16]byte
	binary.BigEndian.PutUint64(n[:8], session)
	binary.BigEndian.PutUint64(n[8:], id)
	h.Write(n[:])
	h.Write(b[:])
	return [commitLen]byte(h.Sum(nil))
}

// selfMaskFromSeed is the PRG key of a client's self mask, from its
// self-mask seed b, which it shares.
func selfMaskFromSeed(b *[SecretLen]byte) [32]byte { return seedKey(b, labelSelfMask) }

// derive runs X25519 between priv and pub and HKDF-SHA256 over the shared
// secret with an info string naming the use, the session and the pair
// (lower ID first).
func derive(priv *ecdh.PrivateKey, pub *ecdh.PublicKey, label string, session, a, b uint64) ([32]byte, error) {
	var out [32]byte
	shared, err := priv.ECDH(pub)
	if err != nil {
		return out, fmt.Errorf("%w: %w", ErrBadKey, err)
	}
	if a > b {
		a, b = b, a
	}
	info := make([]byte, 0, len(label)+24)
	info = append(info, label...)
	info = binary.BigEndian.AppendUint64(info, session)
	info = binary.BigEndian.AppendUint64(info, a)
	info = binary.BigEndian.AppendUint64(info, b)
	k, err := hkdf.Key(sha256.New, shared, nil, string(info), 32)
	if err != nil {
		return out, fmt.Errorf("secagg: hkdf: %w", err)
	}
	copy(out[:], k)
	return out, nil
}

// maskSign reports whether client a subtracts (rather than adds) the mask
// it shares with client b: the client with the lower ID adds it.
func maskSign(a, b uint64) (neg bool) { return a > b }

// shareAEAD returns the AES-256-GCM cipher of the pair's share key.
func shareAEAD(key *[32]byte) cipher.AEAD {
	block, err := aes.NewCipher(key[:])
	if err != nil {
		panic("secagg: " + err.Error())
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		panic("secagg: " + err.Error())
	}
	return aead
}

// shareNonce is the GCM nonce of a share sent by from: the pair's key
// seals one message in each direction, so the sender's ID makes the nonce
// unique.
func shareNonce(from uint64) []byte {
	n := make([]byte, 12)
	binary.BigEndian.PutUint64(n, from)
	return n
}

// shareAD is the associated data that binds a sealed share to the session
// and to its sender and recipient.
func shareAD(session, from, to uint64) []byte {
	ad := make([]byte, 0, 24)
	ad = binary.BigEndian.AppendUint64(ad, session)
	ad = binary.BigEndian.AppendUint64(ad, from)
	ad = binary.BigEndian.AppendUint64(ad, to)
	return ad
}
