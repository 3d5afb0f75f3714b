package deliver

import (
	"crypto/ed25519"
	"fmt"
	"io"
	"os"
	"strings"
)

// maxKeyFile bounds a PEM key file.
const maxKeyFile = 64 << 10

// ReadPrivateKeyFile reads an ed25519 private key from a PEM file
// (PKCS#8, as WriteKeyPair writes it). Errors name the file.
func ReadPrivateKeyFile(path string) (ed25519.PrivateKey, error) {
	b, err := readKeyFile(path)
	if err != nil {
		return nil, err
	}
	k, err := ParsePrivateKeyPEM(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}

// ReadPublicKeyFile reads an ed25519 public key from a PEM file. Errors
// name the file.
func ReadPublicKeyFile(path string) (ed25519.PublicKey, error) {
	b, err := readKeyFile(path)
	if err != nil {
		return nil, err
	}
	k, err := ParsePublicKeyPEM(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}

func readKeyFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(b) > maxKeyFile {
		return nil, fmt.Errorf("%s: %w: larger than %d bytes, not a PEM key", path, ErrKey, maxKeyFile)
	}
	return b, nil
}

// PublicKeyPath is the public key file beside the private key file path:
// key.pem → key.pub.pem.
func PublicKeyPath(path string) string {
	return strings.TrimSuffix(path, ".pem") + ".pub.pem"
}

// WriteKeyPair writes a new ed25519 key pair: the private key to path
// (PKCS#8 PEM, mode 0600) and the public key to PublicKeyPath(path). It
// never overwrites a file: a lost signing key orphans every device that
// trusts it.
func WriteKeyPair(path string) (pubPath string, err error) {
	pub, priv, err := GenerateKey()
	if err != nil {
		return "", err
	}
	pubPath = PublicKeyPath(path)
	if err := writeNew(path, MarshalPrivateKeyPEM(priv), 0o600); err != nil {
		return "", err
	}
	if err := writeNew(pubPath, MarshalPublicKeyPEM(pub), 0o644); err != nil {
		return "", err
	}
	return pubPath, nil
}

// writeNew writes a file that must not exist yet.
func writeNew(path string, data []byte, perm os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
