package pipeline

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
	"github.com/fedzip/fedzip/nn"
)

// DefaultRecipe is the recipe a trained global model is delivered with
// unless told otherwise (fedzip simulate --deliver, fedzip coordinator
// --deliver-key): global magnitude pruning to 90% with fine-tuning, 5-bit
// weight sharing, Huffman-coded codes and half-precision biases.
const DefaultRecipe = "prune=0.9,scope:global,finetune=1,lr:0.02;cluster=bits:5,finetune=1;encode=huffman,bias:f16"

// Delivered describes a delivered device file (Deliver).
type Delivered struct {
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

// Deliver compresses a trained global model (model's architecture, an
// *nn.MLP or an *nn.Net, with params) with recipe into a signed device file at out, fine-tuning on
// train and measuring on test. keyPath names an ed25519 private key
// (PEM); if it is empty, the key beside out (DeliveryKey) is used, made on
// first use. version, the global model's, goes into the signed metadata
// (deliver.MetaModelVersion).
func Deliver(ctx context.Context, model nn.Model, params []float32, version uint64, train, test *dataset.Dataset, recipe, out, keyPath string, seed uint64) (*Delivered, error) {
	var key ed25519.PrivateKey
	pubPath := ""
	var err error
	if keyPath != "" {
		key, err = deliver.ReadPrivateKeyFile(keyPath)
	} else {
		key, pubPath, err = DeliveryKey(out)
	}
	if err != nil {
		return nil, err
	}
	m, err := FromModel(model, params)
	if err != nil {
		return nil, err
	}
	res, err := Run(ctx, m, recipe, Config{Train: train, Test: test, Key: key, Seed: seed,
		LatencySamples: 200, Meta: map[string]string{"source": "fedzip simulate", deliver.MetaModelVersion: strconv.FormatUint(version, 10)}})
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(out, res.File, 0o644); err != nil {
		return nil, err
	}
	last := res.Rows[len(res.Rows)-1]
	return &Delivered{File: out, PubKey: pubPath, Recipe: recipe, Bytes: last.Bytes, Ratio: last.Ratio, Accuracy: last.Accuracy, Delta: last.Delta, Signed: res.File}, nil
}

// DeliveryKey returns the signing key beside the device file out
// (OUT.key.pem, without out's .fzm), made on first use, and writes its
// public key as OUT.pub.pem, whose path it returns. Reusing the key lets
// devices that trust its public key keep verifying the next runs' models;
// a damaged key file is an error, never replaced.
func DeliveryKey(out string) (ed25519.PrivateKey, string, error) {
	base := strings.TrimSuffix(out, ".fzm")
	keyFile, pubPath := base+".key.pem", base+".pub.pem"
	key, err := deliver.ReadPrivateKeyFile(keyFile)
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
