package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fedzip/fedzip/deliver"
	"github.com/fedzip/fedzip/inspect"
)

func writeBytes(t *testing.T, dir, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestInspectCommand: 'fedzip inspect' prints package inspect's
// description as a table or JSON, takes FILE before or after the flags,
// and exits 1 for a file that does not check (printing it as far as it
// reads) and 2 for bad usage. Package inspect tests the descriptions.
func TestInspectCommand(t *testing.T) {
	dir := t.TempDir()
	pub, key, err := deliver.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	f := &deliver.File{Meta: map[string]string{"model": "test"}, Input: 4,
		Tensors: []deliver.Tensor{
			{Name: "fc1.weight", Shape: []int{3, 4}, Encoding: deliver.Float32, Values: make([]float32, 12)},
			{Name: "fc1.bias", Shape: []int{3}, Encoding: deliver.Float32, Values: []float32{0.1, 0.2, 0.3}},
		},
		Layers: []deliver.Layer{{Weights: []int{0}, Bias: 1}}}
	e, err := deliver.Encode(f, key)
	if err != nil {
		t.Fatal(err)
	}
	fzm := writeBytes(t, dir, "d.fzm", e.Data)
	pubPath := writeBytes(t, dir, "d.pub.pem", deliver.MarshalPublicKeyPEM(pub))
	otherPub, _, _ := deliver.GenerateKey()
	other := writeBytes(t, dir, "o.pub.pem", deliver.MarshalPublicKeyPEM(otherPub))

	code, stdout, stderr := runCmd("inspect", fzm, "--pubkey", pubPath)
	if code != exitOK || !strings.Contains(stdout, "device model") || !strings.Contains(stdout, "fc1.weight") || !strings.Contains(stdout, "verified") {
		t.Fatalf("table: exit %d\n%s%s", code, stdout, stderr)
	}
	code, stdout, stderr = runCmd("inspect", "-o", "json", "--pubkey", other, fzm)
	var in inspect.Inspection
	if code != exitError || json.Unmarshal([]byte(stdout), &in) != nil || in.Device == nil || !strings.Contains(in.Device.Signature, "DOES NOT VERIFY") ||
		strings.Count(strings.TrimRight(stderr, "\n"), "\n") != 0 {
		t.Fatalf("other key: exit %d\n%s%s", code, stdout, stderr)
	}
	for _, tc := range []struct {
		args []string
		code int
	}{
		{[]string{writeBytes(t, dir, "zip", []byte("PK\x03\x04zip"))}, exitError},
		{[]string{writeBytes(t, dir, "short", e.Data[:len(e.Data)/2])}, exitError},
		{[]string{filepath.Join(dir, "missing")}, exitError},
		{[]string{"a", "b"}, exitUsage},
		{[]string{"-o", "yaml", "a"}, exitUsage},
		{nil, exitUsage},
	} {
		code, _, stderr := runCmd(append([]string{"inspect"}, tc.args...)...)
		if code != tc.code || stderr == "" || strings.Count(strings.TrimRight(stderr, "\n"), "\n") != 0 {
			t.Errorf("inspect %q: exit %d, stderr %q; want exit %d and one line", tc.args, code, stderr, tc.code)
		}
	}
}
