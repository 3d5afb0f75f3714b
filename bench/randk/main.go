// Command randk asks whether any method whose global model moves only on
// each round's shared random-k support (what 'fedzip simulate --secagg'
// draws) can reach 95% on MNIST's 2NN in a given number of rounds. It
// trains the 2NN centrally on the whole training set, and in round r lets
// only round r's support change, each round with -steps Adam steps on
// minibatches of -batch examples (an Oracle), then prints the test
// accuracy after each of -rounds. With -union it instead trains, for each
// of -rounds r, every coordinate that was on a support in rounds 1..r at
// once, from the initial model: a bound that ignores the order of the
// supports.
//
// With -sim it runs 'fedzip simulate --secagg' in process instead (the iid
// 2NN, 100 clients, 10 a round, one worker, dense downloads), and with
// -restrict its clients train only the round's support, which they know
// from the round seed before they train (a model whose gradients are zero
// off the support; the simulator, the protocol and the byte counts are
// the simulator's own). -local-opt adam makes their local step Adam on
// the support (fresh moments for each client, step -client-lr), -stop
// ends the run at the first round at -target, and -download-codec sets
// the downloads (dense by default). It prints the simulator's summary and
// the accuracy after each of -rounds, and -metrics-out writes every round.
// docs/secagg.md ("Can random-k 1% meet the goal?") has the figures.
//
//	nice -n 10 go run ./bench/randk -fraction 0.01 -rounds 43,86,150,300
//	nice -n 10 go run ./bench/randk -fraction 0.01 -rounds 43,86,150,300 -union
//	nice -n 10 go run ./bench/randk -sim -restrict -rounds 43,86,150 -seed 7
//	nice -n 10 go run ./bench/randk -sim -restrict -local-opt adam -client-lr 0.07 -clip 0.5 -strategy fedavgm,lr=1,momentum=0 -rounds 10,20,30,40,50,60,70,80,90,100,120,150,200 -stop -seed 1
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/fedzip/fedzip/dataset"
	"github.com/fedzip/fedzip/nn"
	"github.com/fedzip/fedzip/report"
	"github.com/fedzip/fedzip/runspec"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "randk:", err)
		os.Exit(1)
	}
}

// Report is what one run prints with -o json.
type Report struct {
	Model    string  `json:"model"`
	Seed     uint64  `json:"seed"`
	Fraction float64 `json:"fraction"`
	Steps    int     `json:"steps"`
	Batch    int     `json:"batch"`
	LR       float64 `json:"lr"`
	Union    bool    `json:"union"`
	Points   []Point `json:"points"`
	// Target is the first evaluated round whose accuracy reached -target
	// (0: none).
	Target  int     `json:"rounds_to_target"`
	Seconds float64 `json:"seconds"`
}

func run(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("randk", flag.ContinueOnError)
	var (
		o        Oracle
		rounds   = fs.String("rounds", "43,86,150,300", "rounds after which to report the test accuracy, ascending")
		every    = fs.Int("every", 0, "also evaluate every N rounds, for the round that reaches -target (0: only -rounds)")
		target   = fs.Float64("target", 0.95, "test accuracy whose first round to report")
		model    = fs.String("model", "2nn", "model spec (nn.ParseModel), on MNIST")
		dataDir  = fs.String("data-dir", "", "folder with the MNIST files (default: dataset.MNISTDir's search)")
		format   = fs.String("o", "table", "output: table or json")
		limit    = fs.Int("train", 0, "use only the first N training examples (0: all 60,000)")
		initSeed = fs.Uint64("init-seed", 0, "seed of the initial model (0: -seed, as fedzip simulate)")
	)
	fs.Uint64Var(&o.Seed, "seed", 1, "run seed, as fedzip simulate --seed: the initial model and the supports")
	fs.Float64Var(&o.Fraction, "fraction", 0.01, "fraction of the coordinates on each round's support (--secagg-k)")
	fs.IntVar(&o.Steps, "steps", 100, "Adam steps a round (with -union: at each of -rounds)")
	fs.IntVar(&o.Batch, "batch", 100, "examples a step")
	fs.Float64Var(&o.LR, "lr", 0.01, "Adam's step size")
	fs.BoolVar(&o.Union, "union", false, "train the union of the supports of rounds 1..r at once, for each r of -rounds")
	var (
		simMode  = fs.Bool("sim", false, "run the simulator with --secagg instead of the oracle (-fraction is --secagg-k)")
		fr       = FedRun{Clients: 100, ClientRound: 10, Target: 0.95}
		metricsF = fs.String("metrics-out", "", "-sim: write one JSON object per round to this file")
	)
	fs.BoolVar(&fr.Restrict, "restrict", false, "-sim: clients train only the round's support")
	fs.StringVar(&fr.LocalOpt, "local-opt", "sgd", "-sim -restrict: the clients' local step on the support: sgd, adam (fresh moments per client, rate -client-lr) or sign")
	fs.StringVar(&fr.DownloadCodec, "download-codec", "none", "-sim: --download-codec (none: dense downloads)")
	fs.BoolVar(&fr.Stop, "stop", false, "-sim: stop at the first round at -target")
	fs.StringVar(&fr.Strategy, "strategy", runspec.DefaultStrategy, "-sim: --strategy")
	fs.Float64Var(&fr.LR, "client-lr", 0.1, "-sim: --lr, the clients' SGD step")
	fs.Float64Var(&fr.Momentum, "momentum", 0, "-sim: --momentum, the clients' SGD momentum")
	fs.IntVar(&fr.Epochs, "local-epochs", 1, "-sim: --local-epochs")
	fs.IntVar(&fr.Batch, "batch-size", 10, "-sim: --batch-size")
	fs.IntVar(&fr.Bits, "bits", runspec.DefaultSecAggBits, "-sim: --secagg-bits")
	fs.Float64Var(&fr.Clip, "clip", 0, "-sim: --secagg-clip (0: automatic)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *format != "table" && *format != "json" {
		return fmt.Errorf("-o %q: want table or json", *format)
	}
	rs, err := parseRounds(*rounds)
	if err != nil {
		return err
	}
	if *simMode {
		fr.Seed, fr.Fraction, fr.DataDir, fr.Rounds, fr.Target = o.Seed, o.Fraction, *dataDir, rs[len(rs)-1], *target
		return runSim(fr, rs, *format, *metricsF, stdout)
	}
	dir, err := dataset.MNISTDir(*dataDir)
	if err != nil {
		return err
	}
	train, test, err := dataset.LoadMNIST(dir)
	if err != nil {
		return err
	}
	if *limit > 0 && *limit < train.N {
		idx := make([]int, *limit)
		for i := range idx {
			idx[i] = i
		}
		train = train.Subset(idx)
	}
	m, err := nn.ParseModel(*model, nn.Flat(train.Dim), train.Classes)
	if err != nil {
		return err
	}
	o.Model, o.Train = m, train
	init := make([]float32, m.NumParams())
	is := *initSeed
	if is == 0 {
		is = o.Seed
	}
	m.Init(init, is)
	start := time.Now()
	pts, err := o.Run(init, test, rs, *every)
	if err != nil {
		return err
	}
	rep := Report{Model: m.Name(), Seed: o.Seed, Fraction: o.Fraction, Steps: o.Steps, Batch: o.Batch, LR: o.LR, Union: o.Union,
		Points: pts, Target: FirstReaching(pts, *target), Seconds: time.Since(start).Seconds()}
	if *format == "json" {
		return json.NewEncoder(stdout).Encode(rep)
	}
	return writeTable(stdout, rep, *target)
}

// SimReport is what -sim prints with -o json.
type SimReport struct {
	Summary  *report.Simulation `json:"summary"`
	Restrict bool               `json:"restrict"`
	Points   []Point            `json:"points"`
}

func runSim(fr FedRun, rs []int, format, metrics string, stdout io.Writer) error {
	s, mets, err := fr.Run(context.Background())
	if err != nil {
		return err
	}
	rep := SimReport{Summary: s, Restrict: fr.Restrict}
	for _, m := range mets {
		if m.Evaluated && slices.Contains(rs, m.Round) {
			rep.Points = append(rep.Points, Point{Round: m.Round, Accuracy: m.TestAccuracy})
		}
	}
	if metrics != "" {
		var buf bytes.Buffer
		for _, m := range mets {
			if err := report.WriteRound(&buf, m); err != nil {
				return err
			}
		}
		if err := os.WriteFile(metrics, buf.Bytes(), 0o644); err != nil {
			return err
		}
	}
	if format == "json" {
		return json.NewEncoder(stdout).Encode(rep)
	}
	if err := s.WriteTable(stdout); err != nil {
		return err
	}
	for _, p := range rep.Points {
		fmt.Fprintf(stdout, "round %d: %.2f%%\n", p.Round, 100*p.Accuracy)
	}
	return nil
}

// FirstReaching returns the first round of pts whose accuracy is at least
// target, 0 if none.
func FirstReaching(pts []Point, target float64) int {
	for _, p := range pts {
		if p.Accuracy >= target {
			return p.Round
		}
	}
	return 0
}

func parseRounds(s string) ([]int, error) {
	var rs []int
	for f := range strings.SplitSeq(s, ",") {
		r, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || r < 1 || (len(rs) > 0 && r <= rs[len(rs)-1]) {
			return nil, fmt.Errorf("-rounds %q: want ascending positive rounds", s)
		}
		rs = append(rs, r)
	}
	return rs, nil
}

func writeTable(w io.Writer, rep Report, target float64) error {
	mode := "a round's support only"
	if rep.Union {
		mode = "the union of the supports so far, at once"
	}
	fmt.Fprintf(w, "%s, seed %d, support %g, %s: Adam lr %g, %d steps of %d examples (%.0f s)\n",
		rep.Model, rep.Seed, rep.Fraction, mode, rep.LR, rep.Steps, rep.Batch, rep.Seconds)
	fmt.Fprintln(w, "| round | test accuracy | coordinates moved so far |")
	fmt.Fprintln(w, "|---|---|---|")
	for _, p := range rep.Points {
		fmt.Fprintf(w, "| %d | %.2f%% | %.1f%% |\n", p.Round, 100*p.Accuracy, 100*p.Moved)
	}
	if rep.Target > 0 {
		fmt.Fprintf(w, "first evaluated round at %.0f%%: %d\n", 100*target, rep.Target)
	} else {
		fmt.Fprintf(w, "no evaluated round at %.0f%%\n", 100*target)
	}
	return nil
}
