package deliver

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

// TestKeyPairFiles: WriteKeyPair writes a pair that reads back, never
// overwrites a key, and a damaged file is an error that names it.
func TestKeyPairFiles(t *testing.T) {
	path := filepath.Join(t.TempDir(), "k.pem")
	pubPath, err := WriteKeyPair(path)
	if err != nil || pubPath != PublicKeyPath(path) {
		t.Fatalf("%q, %v", pubPath, err)
	}
	priv, err := ReadPrivateKeyFile(path)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := ReadPublicKeyFile(pubPath)
	if err != nil || !pub.Equal(priv.Public()) {
		t.Fatalf("public key %v", err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("private key mode: %v, %v", fi, err)
	}
	if _, err := WriteKeyPair(path); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("overwrote a key: %v", err)
	}
	os.WriteFile(path, []byte("garbage"), 0o600)
	if _, err := ReadPrivateKeyFile(path); err == nil || !errors.Is(err, ErrKey) {
		t.Fatalf("damaged key: %v", err)
	}
	if _, err := ReadPublicKeyFile(path); err == nil {
		t.Fatal("a damaged public key was read")
	}
}
