package main

import (
	"fmt"
	"io"
	"os"

	"github.com/fedzip/fedzip/checkpoint"
)

// evaluate reads a global model that the coordinator saved (its
// --save-model file), rebuilds the network it names, and prints its
// accuracy on the examples of the CSV file dataPath: how to use the
// trained model in your own code.
func evaluate(modelPath, dataPath string, stdout io.Writer) error {
	ck, err := checkpoint.ReadFile(modelPath)
	if err != nil {
		return err
	}
	net, err := ck.Network()
	if err != nil {
		return err
	}
	f, err := os.Open(dataPath)
	if err != nil {
		return err
	}
	d, err := readCSV(f)
	f.Close()
	if err != nil {
		return fmt.Errorf("%s: %w", dataPath, err)
	}
	if net.InputDim() != d.Dim || net.Classes() < d.Classes {
		return fmt.Errorf("model %s takes %d features to %d classes; %s has %d features and labels up to %d",
			net.Name(), net.InputDim(), net.Classes(), dataPath, d.Dim, d.Classes-1)
	}
	right, loss := net.Scratch(100).Evaluate(ck.Params, d.X, d.Y)
	fmt.Fprintf(stdout, "model %s, version %d: accuracy %.2f %% (%d of %d), loss %.4f\n",
		net.Name(), ck.Header.Version, 100*float64(right)/float64(d.N), right, d.N, loss/float64(d.N))
	return nil
}
