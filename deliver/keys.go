package deliver

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
)

// The DER encodings of ed25519 keys are fixed strings followed by the key
// bytes (RFC 8410): a SubjectPublicKeyInfo for public keys and a PKCS#8
// OneAsymmetricKey (version 0, no attributes) holding the 32-byte seed for
// private keys. These are what crypto/x509 and OpenSSL write.
var (
	pkixPrefix  = []byte{0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00}
	pkcs8Prefix = []byte{0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20}
)

// ParsePublicKeyPEM parses an ed25519 public key from a PEM "PUBLIC KEY"
// block (PKIX), as written by MarshalPublicKeyPEM, crypto/x509 or
// "openssl pkey -pubout". It returns ErrKey for anything else.
func ParsePublicKeyPEM(data []byte) (ed25519.PublicKey, error) {
	der, err := pemBlock(data, "PUBLIC KEY")
	if err != nil {
		return nil, err
	}
	if len(der) != len(pkixPrefix)+ed25519.PublicKeySize || !bytes.HasPrefix(der, pkixPrefix) {
		return nil, fmt.Errorf("%w: the PUBLIC KEY block is not an ed25519 key", ErrKey)
	}
	return ed25519.PublicKey(bytes.Clone(der[len(pkixPrefix):])), nil
}

// ParsePrivateKeyPEM parses an ed25519 private key from a PEM "PRIVATE KEY"
// block (PKCS#8), as written by MarshalPrivateKeyPEM, crypto/x509 or
// "openssl genpkey -algorithm ed25519". It returns ErrKey for anything
// else.
func ParsePrivateKeyPEM(data []byte) (ed25519.PrivateKey, error) {
	der, err := pemBlock(data, "PRIVATE KEY")
	if err != nil {
		return nil, err
	}
	if len(der) != len(pkcs8Prefix)+ed25519.SeedSize || !bytes.HasPrefix(der, pkcs8Prefix) {
		return nil, fmt.Errorf("%w: the PRIVATE KEY block is not an ed25519 key", ErrKey)
	}
	return ed25519.NewKeyFromSeed(der[len(pkcs8Prefix):]), nil
}

func pemBlock(data []byte, typ string) ([]byte, error) {
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return nil, fmt.Errorf("%w: no PEM %q block", ErrKey, typ)
		}
		if b.Type == typ {
			return b.Bytes, nil
		}
	}
}

// MarshalPublicKeyPEM returns the PEM "PUBLIC KEY" block of pub.
func MarshalPublicKeyPEM(pub ed25519.PublicKey) []byte {
	der := append(bytes.Clone(pkixPrefix), pub...)
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// MarshalPrivateKeyPEM returns the PEM "PRIVATE KEY" block (PKCS#8) of key.
func MarshalPrivateKeyPEM(key ed25519.PrivateKey) []byte {
	der := append(bytes.Clone(pkcs8Prefix), key.Seed()...)
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

// GenerateKey returns a new ed25519 key pair from crypto/rand.
func GenerateKey() (ed25519.PublicKey, ed25519.PrivateKey, error) {
	return ed25519.GenerateKey(rand.Reader)
}
