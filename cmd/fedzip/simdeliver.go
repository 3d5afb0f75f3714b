package main

import (
	"context"
	"crypto/ed25519"
	"os"
	"strconv"
	"strings"

	"github.com/fedzip/fedzip/dataset"
	"github.com/fedzip/fedzip/deliver"
	"github.com/fedzip/fedzip/deliver/pipeline"
	"github.com/fedzip/fedzip/nn"
)

// defaultDeliverRecipe is the recipe simulate delivers with unless told
// otherwise: global magnitude pruning to 90% with fine-tuning, 5-bit
// weight sharing, Huffman-coded codes and half-precision biases.
const defaultDeliverRecipe = "prune=0.9,scope:global,finetune=1,lr:0.02;cluster=bits:5,finetune=1;encode=huffman,bias:f16"

// delivered is what the summary says about the delivered file.
type delivered struct {
	File     string  `json:"file"`
	PubKey   string  `json:"public_key"`
	Recipe   string  `json:"recipe"`
	Bytes    int     `json:"bytes"`
	Ratio    float64 `json:"ratio"`
	Accuracy float64 `json:"test_accuracy"`
	Delta    float64 `json:"delta_points"`
	// Signed is the file's content.
	Signed []byte `json:"-"`
}

// deliverModel compresses the final global model with recipe into a signed
// device file at out. keyPath names an ed25519 private key (PEM); if it is
// empty, a new key pair is written beside out (OUT.key.pem, OUT.pub.pem).
// version, the global model's, goes into the signed metadata
// (deliver.MetaModelVersion).
func deliverModel(ctx context.Context, model *nn.MLP, params []float32, version uint64, train, test *dataset.Dataset, recipe, out, keyPath string, seed uint64) (*delivered, error) {
	var key ed25519.PrivateKey
	pubPath := ""
	if keyPath != "" {
		var err error
		if key, err = readPrivateKey(keyPath); err != nil {
			return nil, err
		}
	} else {
		pub, priv, err := deliver.GenerateKey()
		if err != nil {
			return nil, err
		}
		base := strings.TrimSuffix(out, ".fzm")
		if err := os.WriteFile(base+".key.pem", deliver.MarshalPrivateKeyPEM(priv), 0o600); err != nil {
			return nil, err
		}
		pubPath = base + ".pub.pem"
		if err := os.WriteFile(pubPath, deliver.MarshalPublicKeyPEM(pub), 0o644); err != nil {
			return nil, err
		}
		key = priv
	}
	res, err := pipeline.Run(ctx, pipeline.FromMLP(model, params), recipe, pipeline.Config{Train: train, Test: test, Key: key, Seed: seed,
		LatencySamples: 200, Meta: map[string]string{"source": "fedzip simulate", deliver.MetaModelVersion: strconv.FormatUint(version, 10)}})
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(out, res.File, 0o644); err != nil {
		return nil, err
	}
	last := res.Rows[len(res.Rows)-1]
	return &delivered{File: out, PubKey: pubPath, Recipe: recipe, Bytes: last.Bytes, Ratio: last.Ratio, Accuracy: last.Accuracy, Delta: last.Delta, Signed: res.File}, nil
}
