package pipeline

import (
	"bytes"
	"context"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/fedzip/fedzip/checkpoint"
	"github.com/fedzip/fedzip/dataset"
	"github.com/fedzip/fedzip/nn"
)

// TestDeliverConvMNIST is the delivery measurement of docs/delivery.md for
// conv nets (FEDZIP_LONG=1; minutes per epoch on two cores): it trains
// FEDZIP_MODEL (default lenet5) centrally on MNIST with nn's SGD for
// FEDZIP_EPOCHS epochs (default 4), or reads FEDZIP_CHECKPOINT if that
// file exists (and writes it after training otherwise), then delivers it
// with FEDZIP_RECIPE (default DefaultRecipe) and logs the table.
func TestDeliverConvMNIST(t *testing.T) {
	if os.Getenv("FEDZIP_LONG") == "" {
		t.Skip("FEDZIP_LONG=1 trains a conv net on MNIST and delivers it")
	}
	dir, err := dataset.MNISTDir("")
	if err != nil {
		t.Skip(err)
	}
	train, test, err := dataset.LoadMNIST(dir)
	if err != nil {
		t.Fatal(err)
	}
	spec := envOr("FEDZIP_MODEL", "lenet5")
	recipe := envOr("FEDZIP_RECIPE", DefaultRecipe)
	epochs, _ := strconv.Atoi(envOr("FEDZIP_EPOCHS", "4"))
	ckPath := os.Getenv("FEDZIP_CHECKPOINT")
	var model nn.Model
	var params []float32
	if ck, err := checkpoint.ReadFile(ckPath); ckPath != "" && err == nil {
		if model, err = ck.Network(); err != nil {
			t.Fatal(err)
		}
		params = ck.Params
		t.Logf("read %s (%s)", ckPath, model.Name())
	} else {
		if model, err = nn.ParseModel(spec, nn.Shape{C: 1, H: 28, W: 28}, 10); err != nil {
			t.Fatal(err)
		}
		params = make([]float32, model.NumParams())
		model.Init(params, 1)
		idx := make([]int, train.N)
		for i := range idx {
			idx[i] = i
		}
		tr := nn.NewTrainer(model, 64)
		rng := rand.New(rand.NewPCG(1, 1))
		start := time.Now()
		for ep := 0; ep < epochs; ep++ {
			lr := float32(0.02)
			if ep == epochs-1 && epochs > 1 {
				lr = 0.005
			}
			loss := tr.Epochs(params, train.X, train.Y, idx, 1, nn.SGD{LR: lr, Momentum: 0.9}, rng)
			t.Logf("epoch %d: loss %.4f, test accuracy %.2f%% (%.0f s)", ep+1, loss, 100*accuracy(model, params, test.X, test.Y), time.Since(start).Seconds())
		}
		if ckPath != "" {
			if err := checkpoint.WriteFile(ckPath, checkpoint.New(model, params)); err != nil {
				t.Fatal(err)
			}
		}
	}
	m, err := FromModel(model, params)
	if err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	res, err := Run(context.Background(), m, recipe, Config{Train: train, Test: test, Key: testKey, Seed: 1, LatencySamples: 500, Log: &log})
	if err != nil {
		t.Fatal(err)
	}
	var table bytes.Buffer
	if err := res.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s, recipe %s:\n%s", model.Name(), recipe, table.String())
	last := res.Rows[len(res.Rows)-1]
	t.Logf("%d bytes, %.1f× smaller than float32, %+.2f points", last.Bytes, last.Ratio, last.Delta)
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
