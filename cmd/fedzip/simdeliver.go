package main

import (
	"context"
	"crypto/ed25519"
	"errors"
	"io/fs"
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
// empty, the key beside out (OUT.key.pem) is used, made on first use, and
// its public key written as OUT.pub.pem.
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
		var err error
		if key, pubPath, err = deliveryKey(out); err != nil {
			return nil, err
		}
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

// deliveryKey returns the signing key beside the device file out
// (OUT.key.pem), made on first use, and writes its public key as
// OUT.pub.pem, whose path it returns. Reusing the key lets devices that
// trust its public key keep verifying the next runs' models.
func deliveryKey(out string) (ed25519.PrivateKey, string, error) {
	base := strings.TrimSuffix(out, ".fzm")
	keyFile, pubPath := base+".key.pem", base+".pub.pem"
	key, err := readPrivateKey(keyFile)
	switch {
	case err == nil:
	case errors.Is(err, fs.ErrNotExist):
		if _, key, err = deliver.GenerateKey(); err != nil {
			return nil, "", err
		}
		if err := os.WriteFile(keyFile, deliver.MarshalPrivateKeyPEM(key), 0o600); err != nil {
			return nil, "", err
		}
	default:
		return nil, "", err
	}
	if err := os.WriteFile(pubPath, deliver.MarshalPublicKeyPEM(key.Public().(ed25519.PublicKey)), 0o644); err != nil {
		return nil, "", err
	}
	return key, pubPath, nil
}
