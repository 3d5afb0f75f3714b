// Command custom-trainer is a federated-learning client of your own: it
// reads its data from a CSV file, trains a model with its own code, and
// takes part in a fedzip coordinator's rounds through package
// client/remote, which does everything else (registration, downloads,
// compression of the update, retries, resuming after a restart).
//
// Two trainers show the two ways to bring a model:
//
//   - --trainer logreg (the default) is logistic regression written from
//     scratch in logreg.go: any code that updates the parameter vector
//     in place can be a client.Trainer;
//   - --trainer nn names a network by spec (--model cnn, lenet5, or layers
//     such as conv:8x3,pool:2,fc:4) and trains it with package nn on the
//     same data (nntrainer.go).
//
// It also writes a made-up data set to try it with (--generate), and
// evaluates a global model the coordinator saved (--evaluate). See
// README.md in this folder for the commands.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"os/signal"
	"path/filepath"
	"strings"

	"github.com/fedzip/fedzip/client"
	"github.com/fedzip/fedzip/client/remote"
	"github.com/fedzip/fedzip/nn"
	"github.com/fedzip/fedzip/transport"
	"github.com/fedzip/fedzip/transport/fedzippb"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// options are the command's flags.
type options struct {
	coordinator, ca, cert, key, joinSecret string
	insecure                               bool
	dataPath, name, stateDir               string
	trainer, model, shape                  string
	generate, evaluate                     string
	rows, side, classes                    int
	noise                                  float64
	seed, patternSeed                      uint64
}

// run is the program, callable from a test: it returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var o options
	fs := flag.NewFlagSet("custom-trainer", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.coordinator, "coordinator", "127.0.0.1:7070", "coordinator addresses, comma-separated")
	fs.StringVar(&o.ca, "ca", "", "CA that signed the coordinator's certificate (PEM)")
	fs.StringVar(&o.cert, "cert", "", "client certificate for mTLS (PEM)")
	fs.StringVar(&o.key, "key", "", "client key for mTLS (PEM)")
	fs.BoolVar(&o.insecure, "insecure", false, "connect without TLS (local testing only)")
	fs.StringVar(&o.joinSecret, "join-secret", "", "the coordinator's join secret (default: $FEDZIP_JOIN_SECRET)")
	fs.StringVar(&o.dataPath, "data", "", "CSV file of local examples: a label column, then the features")
	fs.StringVar(&o.name, "name", "custom-trainer", "client name shown by the coordinator")
	fs.StringVar(&o.stateDir, "state-dir", "", "folder for the client's identity and unsent update (default: a folder named after --name in the temporary folder)")
	fs.StringVar(&o.trainer, "trainer", "logreg", "logreg (logistic regression written by hand; the coordinator's --model mlp:) or nn (the network --model names, trained by package nn)")
	fs.StringVar(&o.model, "model", "cnn", "with --trainer nn: the only model spec this client agrees to train")
	fs.StringVar(&o.shape, "shape", "", "with --trainer nn: the shape of one example, C×H×W such as 1x28x28 (default: a square grey image, or flat)")
	fs.StringVar(&o.generate, "generate", "", "write a made-up data set to this CSV file and exit")
	fs.StringVar(&o.evaluate, "evaluate", "", "print the accuracy on --data of this saved global model (the coordinator's --save-model file) and exit")
	fs.IntVar(&o.rows, "rows", 300, "with --generate: examples")
	fs.IntVar(&o.side, "side", 28, "with --generate: images are side×side pixels")
	fs.IntVar(&o.classes, "classes", 10, "with --generate: classes")
	fs.Float64Var(&o.noise, "noise", 1, "with --generate: standard deviation of the Gaussian noise on each pixel (the patterns are in [0, 1])")
	fs.Uint64Var(&o.seed, "seed", 1, "with --generate: seed of the examples (give each client its own)")
	fs.Uint64Var(&o.patternSeed, "pattern-seed", 1, "with --generate: seed of the classes' patterns (the same for every client)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "custom-trainer: unexpected argument %q (flags only; -h lists them)\n", fs.Arg(0))
		return 2
	}
	if o.joinSecret == "" {
		// From the environment, so that it shows in no process list.
		o.joinSecret = os.Getenv("FEDZIP_JOIN_SECRET")
	}
	if o.generate != "" {
		if err := writeGenerated(o); err != nil {
			fmt.Fprintf(stderr, "custom-trainer: %v\n", err)
			return 1
		}
		return 0
	}
	if o.evaluate != "" {
		if err := evaluate(o.evaluate, o.dataPath, stdout); err != nil {
			fmt.Fprintf(stderr, "custom-trainer: %v\n", err)
			return 1
		}
		return 0
	}
	if err := train(ctx, o, stdout, stderr); err != nil {
		fmt.Fprintf(stderr, "custom-trainer: %v\n", err)
		return 1
	}
	return 0
}

func writeGenerated(o options) error {
	f, err := os.Create(o.generate)
	if err != nil {
		return err
	}
	if err := generate(f, o.rows, o.side, o.classes, o.noise, o.patternSeed, o.seed); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// train reads the data, then runs the client until the coordinator says
// training is done.
func train(ctx context.Context, o options, stdout, stderr io.Writer) error {
	if o.dataPath == "" {
		return errors.New("--data is required")
	}
	f, err := os.Open(o.dataPath)
	if err != nil {
		return err
	}
	d, err := readCSV(f)
	f.Close()
	if err != nil {
		return fmt.Errorf("%s: %w", o.dataPath, err)
	}
	if o.stateDir == "" {
		o.stateDir = filepath.Join(os.TempDir(), "fedzip-"+o.name)
	}
	cfg := remote.Config{
		Addrs:      strings.Split(o.coordinator, ","),
		Insecure:   o.insecure,
		Name:       o.name,
		JoinSecret: o.joinSecret,
		StateDir:   o.stateDir,
		Examples:   uint64(d.N),
		Logger:     slog.New(slog.NewTextHandler(stderr, nil)).With("client", o.name),
		// NewTrainer is where your model meets the coordinator's: the
		// task names the model (spec, input size, classes). Return an
		// error for a model you cannot or will not train: the client
		// logs it and waits for the next task.
		NewTrainer: func(task *fedzippb.Task) (client.Trainer, error) {
			return newTrainer(o, d, task)
		},
	}
	if !o.insecure {
		if o.ca == "" {
			return errors.New("--ca is required (or --insecure for local testing)")
		}
		if cfg.TLS, err = transport.ClientTLSConfig(o.ca, o.cert, o.key); err != nil {
			return err
		}
	}
	sum, err := remote.Run(ctx, cfg)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "client %d (%s): %d updates accepted, %d bytes uploaded\n", sum.ClientID, o.name, len(sum.Rounds), sum.Bytes)
	return nil
}

// newTrainer returns the trainer for a task's model, or an error if the
// local data or this client's choices do not fit it.
func newTrainer(o options, d *data, task *fedzippb.Task) (client.Trainer, error) {
	classes := int(task.GetClasses())
	if int(task.GetInputDim()) != d.Dim {
		return nil, fmt.Errorf("the coordinator's model takes %d features, %s has %d", task.GetInputDim(), o.dataPath, d.Dim)
	}
	if classes < d.Classes {
		return nil, fmt.Errorf("the coordinator's model has %d classes, %s has labels up to %d", classes, o.dataPath, d.Classes-1)
	}
	switch o.trainer {
	case "logreg":
		// Logistic regression is the MLP without hidden layers, "mlp:"
		// (named "mlp:D-C" once built).
		if m := task.GetModel(); m != "mlp:" && m != fmt.Sprintf("mlp:%d-%d", d.Dim, classes) {
			return nil, fmt.Errorf("the coordinator trains %q; --trainer logreg trains mlp: (logistic regression)", m)
		}
		if task.GetProxMu() != 0 {
			return nil, errors.New("--trainer logreg does not implement FedProx (the task's prox_mu)")
		}
		return newLogReg(d, classes), nil
	case "nn":
		// Train only what the user agreed to: a coordinator cannot make
		// this client build a network of any size it likes.
		if task.GetModel() != o.model {
			return nil, fmt.Errorf("the coordinator trains %q; this client trains only --model %q", task.GetModel(), o.model)
		}
		shape, err := inputShape(o.shape, d.Dim)
		if err != nil {
			return nil, err
		}
		return newNetTrainer(o.model, shape, classes, int(task.GetBatchSize()), d)
	}
	return nil, fmt.Errorf("--trainer %q: want logreg or nn", o.trainer)
}

// inputShape is --shape, or by default a square grey image if the number
// of features is a square, else a flat vector.
func inputShape(flagValue string, features int) (nn.Shape, error) {
	if flagValue != "" {
		return nn.ParseShape(flagValue)
	}
	if s := int(math.Sqrt(float64(features))); s*s == features {
		return nn.Shape{C: 1, H: s, W: s}, nil
	}
	return nn.Flat(features), nil
}
