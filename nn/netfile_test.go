package nn

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const cnnYAML = `name: McMahan's CNN
layers:
  - conv: 32x5
  - pool: 2
  - conv: 64x5
  - pool: 2
  - fc: 512
  - fc: 10
`

const lenet5YAML = `layers:
  - {conv: 20x5, padding: valid, relu: false}
  - pool: 2
  - {conv: 50x5, padding: valid, relu: false}
  - pool: 2
  - fc: 500
  - fc: 10
`

// TestParseNetYAML: the YAML forms of cnn and lenet5 give the networks the
// names give, parameter for parameter.
func TestParseNetYAML(t *testing.T) {
	for name, doc := range map[string]string{"cnn": cnnYAML, "lenet5": lenet5YAML} {
		spec, err := ParseNetYAML([]byte(doc))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		want := fmt.Sprintf(namedNets[name], 10)
		if spec != want {
			t.Errorf("%s: spec %q, want %q", name, spec, want)
		}
		a, err := ParseModel(spec, Shape{1, 28, 28}, 10)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := ParseModel(name, Shape{1, 28, 28}, 10)
		if !a.Layout().Equal(b.Layout()) {
			t.Errorf("%s: layout %v, named %v", name, a.Layout(), b.Layout())
		}
	}
	spec, err := ParseNetYAML([]byte("layers:\n  - conv: 8x3/2\n  - gn: 4\n  - relu: true\n  - fc: 16\n    relu: false\n  - fc: 3\n"))
	if err != nil || spec != "conv:8x3/2,gn:4,relu,fc:16:linear,fc:3" {
		t.Fatalf("spec %q, %v", spec, err)
	}
}

func TestParseNetYAMLErrors(t *testing.T) {
	for doc, want := range map[string]string{
		"":                                   "empty",
		"layers: []":                         "0 layers",
		"layers:\n  - conv: 8x3\n    fc: 10": "exactly one",
		"layers:\n  - {}":                    "exactly one",
		"layers:\n  - relu: false":           "exactly one",
		"layers:\n  - pool: 2\n    padding: valid":                  "padding applies to conv",
		"layers:\n  - conv: 8x3\n    padding: full":                 `padding "full"`,
		"layers:\n  - gn: 2\n    relu: true":                        "relu: applies",
		"layers:\n  - conv: '8x3,fc:10'":                            "want OUTxK",
		"layers:\n  - pool: '2:x'":                                  "want K",
		"layers:\n  - dense: 10":                                    "not found",
		"model: cnn":                                                "not found",
		"layers: [":                                                 "did not find",
		strings.Repeat("#", MaxNetFile+1):                           "bytes",
		"layers:\n" + strings.Repeat("  - fc: 4\n", MaxNetLayers+1): "layers",
	} {
		_, err := ParseNetYAML([]byte(doc))
		if !errors.Is(err, ErrNetSpec) || !strings.Contains(err.Error(), want) {
			t.Errorf("%.40q: %v, want ErrNetSpec mentioning %q", doc, err, want)
		}
	}
}

func TestReadNetFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "cnn.yaml")
	if err := os.WriteFile(path, []byte(cnnYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	if !IsNetFile(path) || IsNetFile("cnn") || IsNetFile("conv:8x3,fc:10") {
		t.Fatal("IsNetFile")
	}
	spec, err := ReadNetFile(path)
	if err != nil || spec != fmt.Sprintf(namedNets["cnn"], 10) {
		t.Fatalf("%q, %v", spec, err)
	}
	big := filepath.Join(dir, "big.yaml")
	if err := os.WriteFile(big, []byte(strings.Repeat("# padding\n", MaxNetFile)), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadNetFile(big); !errors.Is(err, ErrNetSpec) {
		t.Fatalf("a file over MaxNetFile: %v", err)
	}
	if _, err := ReadNetFile(filepath.Join(dir, "missing.yaml")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a missing file: %v", err)
	}
}

// FuzzParseNetYAML: any bytes give a spec or an error wrapping ErrNetSpec,
// never a panic, and a spec either builds a model or fails with
// ErrNetSpec.
func FuzzParseNetYAML(f *testing.F) {
	f.Add([]byte(cnnYAML))
	f.Add([]byte(lenet5YAML))
	f.Add([]byte("layers:\n  - conv: 8x3/2\n  - gn: 4\n  - relu: true\n  - fc: 3\n"))
	f.Add([]byte("layers: [{fc: 3}]"))
	f.Fuzz(func(t *testing.T, data []byte) {
		spec, err := ParseNetYAML(data)
		if err != nil {
			if !errors.Is(err, ErrNetSpec) {
				t.Fatalf("error %v does not wrap ErrNetSpec", err)
			}
			return
		}
		if _, err := ParseModel(spec, Shape{1, 12, 12}, 3); err != nil && !errors.Is(err, ErrNetSpec) {
			t.Fatalf("spec %q: error %v does not wrap ErrNetSpec", spec, err)
		}
	})
}
