package nn

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"gopkg.in/yaml.v3"
)

// MaxNetFile bounds the bytes of a network file ReadNetFile reads.
const MaxNetFile = 64 << 10

// netFile is the YAML form of a layer spec.
type netFile struct {
	// Name is for humans; the run names the network by its spec.
	Name   string         `yaml:"name"`
	Layers []netFileLayer `yaml:"layers"`
}

// netFileLayer is one layer: exactly one of conv, pool, gn, fc or relu,
// with the options of its kind.
type netFileLayer struct {
	Conv string `yaml:"conv"` // OUTxK[/STRIDE]
	Pool string `yaml:"pool"` // K[/STRIDE]
	GN   int    `yaml:"gn"`   // groups
	FC   int    `yaml:"fc"`   // outputs
	ReLU *bool  `yaml:"relu"` // an explicit ReLU layer (relu: true), or after conv/fc: whether one follows
	// Padding is "same" (the default) or "valid", for conv.
	Padding string `yaml:"padding"`
}

// ParseNetYAML reads a network written as YAML and returns its layer spec,
// the string ParseNet and ParseModel read and a run carries:
//
//	name: my-cnn          # optional, for humans
//	layers:
//	  - conv: 32x5        # OUTxK[/STRIDE]; padding: same (default) or valid
//	  - pool: 2           # K[/STRIDE]
//	  - gn: 4             # group norm with 4 groups
//	  - conv: 64x5
//	    relu: false       # no ReLU after this conv (:linear)
//	  - pool: 2
//	  - fc: 512
//	  - fc: 10            # the last fc: the classes
//
// A ReLU follows every conv and fc (but the last) unless relu: false; a
// layer of its own is "- relu: true". Unknown keys, a layer of two kinds
// or none, and more than MaxNetLayers layers are errors wrapping
// ErrNetSpec; the spec is checked against an input shape only when a
// model is built from it.
func ParseNetYAML(data []byte) (string, error) {
	if len(data) > MaxNetFile {
		return "", fmt.Errorf("%w: network file of %d bytes, at most %d", ErrNetSpec, len(data), MaxNetFile)
	}
	var f netFile
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		if errors.Is(err, io.EOF) {
			return "", fmt.Errorf("%w: empty network file", ErrNetSpec)
		}
		return "", fmt.Errorf("%w: %v", ErrNetSpec, err)
	}
	if len(f.Layers) == 0 || len(f.Layers) > MaxNetLayers {
		return "", fmt.Errorf("%w: %d layers, want 1..%d", ErrNetSpec, len(f.Layers), MaxNetLayers)
	}
	toks := make([]string, len(f.Layers))
	for i, l := range f.Layers {
		tok, err := l.token()
		if err != nil {
			return "", fmt.Errorf("%w: layer %d: %v", ErrNetSpec, i+1, err)
		}
		toks[i] = tok
	}
	return strings.Join(toks, ","), nil
}

// token returns the layer's token in ParseNet's grammar.
func (l netFileLayer) token() (string, error) {
	var kinds []string
	if l.Conv != "" {
		kinds = append(kinds, "conv")
	}
	if l.Pool != "" {
		kinds = append(kinds, "pool")
	}
	if l.GN != 0 {
		kinds = append(kinds, "gn")
	}
	if l.FC != 0 {
		kinds = append(kinds, "fc")
	}
	if len(kinds) == 0 && l.ReLU != nil && *l.ReLU {
		kinds = append(kinds, "relu")
	}
	if len(kinds) != 1 {
		return "", fmt.Errorf("want exactly one of conv, pool, gn, fc or relu: true; got %d (%s)", len(kinds), strings.Join(kinds, ", "))
	}
	if l.Padding != "" && kinds[0] != "conv" {
		return "", fmt.Errorf("padding applies to conv, not %s", kinds[0])
	}
	if l.ReLU != nil && kinds[0] != "conv" && kinds[0] != "fc" && kinds[0] != "relu" {
		return "", fmt.Errorf("relu: applies to conv and fc, not %s", kinds[0])
	}
	linear := l.ReLU != nil && !*l.ReLU
	// The values are put in the grammar as they are: ParseNet checks them
	// (a stray ':' or ',' fails there, naming the layer).
	switch kinds[0] {
	case "conv":
		tok := "conv:" + l.Conv
		switch l.Padding {
		case "", "same":
		case "valid":
			tok += ":valid"
		default:
			return "", fmt.Errorf("padding %q: want same or valid", l.Padding)
		}
		if linear {
			tok += ":linear"
		}
		if strings.ContainsAny(l.Conv, ":,") {
			return "", fmt.Errorf("conv %q: want OUTxK[/STRIDE]", l.Conv)
		}
		return tok, nil
	case "pool":
		if strings.ContainsAny(l.Pool, ":,") {
			return "", fmt.Errorf("pool %q: want K[/STRIDE]", l.Pool)
		}
		return "pool:" + l.Pool, nil
	case "gn":
		return fmt.Sprintf("gn:%d", l.GN), nil
	case "fc":
		if linear {
			return fmt.Sprintf("fc:%d:linear", l.FC), nil
		}
		return fmt.Sprintf("fc:%d", l.FC), nil
	}
	return "relu", nil
}

// IsNetFile reports whether a --model value names a network file (it ends
// in .yaml or .yml) rather than a spec.
func IsNetFile(model string) bool {
	return strings.HasSuffix(model, ".yaml") || strings.HasSuffix(model, ".yml")
}

// ReadNetFile reads a network file (at most MaxNetFile bytes) and returns
// its layer spec (ParseNetYAML).
func ReadNetFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxNetFile+1))
	if err != nil {
		return "", err
	}
	spec, err := ParseNetYAML(data)
	if err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	return spec, nil
}
