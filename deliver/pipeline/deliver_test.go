package pipeline

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fedzip/fedzip/deliver"
)

// TestDeliveryKeyIsReused: a delivery signs with the key beside the device
// file, made once and reused by later runs (each run used to write a new
// key pair, so that devices trusting the first public key refused the
// next model); a damaged key file is an error, not replaced.
func TestDeliveryKeyIsReused(t *testing.T) {
	out := filepath.Join(t.TempDir(), "m.fzm")
	k1, pub, err := DeliveryKey(out)
	if err != nil {
		t.Fatal(err)
	}
	k2, _, err := DeliveryKey(out)
	if err != nil {
		t.Fatal(err)
	}
	if !k1.Equal(k2) {
		t.Fatal("the second delivery made a new key")
	}
	b, err := os.ReadFile(pub)
	if err != nil {
		t.Fatal(err)
	}
	if p, err := deliver.ParsePublicKeyPEM(b); err != nil || !p.Equal(k1.Public()) {
		t.Fatalf("public key file: %v", err)
	}
	if err := os.WriteFile(strings.TrimSuffix(out, ".fzm")+".key.pem", []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := DeliveryKey(out); err == nil {
		t.Fatal("a damaged key file was accepted or replaced")
	}
}
