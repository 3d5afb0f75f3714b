package runspec

import (
	"math"
	"strconv"
	"strings"

	"github.com/fedzip/fedzip/dataset"
	"github.com/fedzip/fedzip/nn"
)

// DP is differential privacy as flags set it (DP-FedAvg, McMahan et al.
// 2018): clip each update to the L2 norm Clip, weigh clients equally and
// add Gaussian noise of standard deviation Noise·Clip to the sum; with
// Adaptive the clip follows a quantile of the update norms (Andrew et al.
// 2021) and Clip is its initial value. The run carries it as the dp-* keys
// of its strategy spec (Strategy); the zero value is no DP.
type DP struct {
	Clip, Noise float64
	Adaptive    bool
}

// On reports whether d turns DP on.
func (d DP) On() bool { return d.Clip > 0 || d.Noise > 0 || d.Adaptive }

// Strategy returns strategy with d's dp-* keys appended (aggregate.Parse):
// the mean's denominator is clients, the expected number of clients a
// round (0: those received), and the noise is seeded by seed. It returns
// strategy unchanged when d is off, and an error wrapping ErrInvalid for
// values out of range, noise without a clip, or a strategy that has dp-*
// keys of its own.
func (d DP) Strategy(strategy string, clients int, seed uint64) (string, error) {
	switch {
	case !(d.Clip >= 0) || math.IsInf(d.Clip, 0):
		return "", invalid("--dp-clip %v: want a finite value ≥ 0", d.Clip)
	case !(d.Noise >= 0) || math.IsInf(d.Noise, 0):
		return "", invalid("--dp-noise %v: want a finite value ≥ 0", d.Noise)
	case !d.On():
		return strategy, nil
	case !d.Adaptive && d.Clip == 0:
		return "", invalid("--dp-noise %v needs --dp-clip C > 0 (or --dp-adaptive)", d.Noise)
	case strings.Contains(strategy, "dp-"):
		return "", invalid("--strategy %q has dp-* keys and --dp-* flags are set: use one or the other", strategy)
	case strings.TrimSpace(strategy) == "robust":
		return "", invalid("--strategy robust takes no --dp-* flags: its rule is not a mean that DP noise can be added to; use a mean-based strategy (e.g. fedavg) with --dp-*")
	}
	spec := strategy
	if strings.TrimSpace(spec) == "" {
		spec = "fedavg"
	}
	if spec == DefaultStrategy {
		// DP clips each update itself and takes no bound or quorum keys:
		// the default's rule without its bound and its quorum (which
		// drops values DP's accounting counts as sent).
		spec = defaultRule
	}
	if d.Clip > 0 {
		spec += ",dp-clip=" + strconv.FormatFloat(d.Clip, 'g', -1, 64)
	}
	spec += ",dp-noise=" + strconv.FormatFloat(d.Noise, 'g', -1, 64) +
		",dp-clients=" + strconv.Itoa(clients) + ",dp-seed=" + strconv.FormatUint(seed, 10)
	if d.Adaptive {
		spec += ",dp-adaptive=true"
	}
	return spec, nil
}

// Datasets are the data set names that give a model its input dimension
// and classes (Dims).
var Datasets = []string{"mnist", "synthetic"}

// Dims returns the input dimension and the classes of a data set's
// examples (Input's shape, flat).
func Dims(name string) (inputDim, classes int, err error) {
	sh, classes, err := Input(name)
	return sh.Dim(), classes, err
}

// Input returns the shape of one example and the classes of a data set:
// MNIST's 1×28×28 images of 10 digits, FedProx's synthetic vectors, or
// what the headers of the user's files say (dataset.Describe). SetInput
// takes the shape.
func Input(name string) (shape nn.Shape, classes int, err error) {
	switch name {
	case "mnist":
		return dataset.MNISTShape, dataset.MNISTClasses, nil
	case "synthetic":
		return nn.Flat(dataset.SyntheticDim), dataset.SyntheticClasses, nil
	}
	if dataset.IsFileSource(name) { // data from files: read their headers
		sh, classes, err := dataset.Describe(dataset.Spec{Dataset: name})
		if err != nil {
			return nn.Shape{}, 0, invalid("--dataset: %w", err)
		}
		return sh, classes, nil
	}
	return nn.Shape{}, 0, invalid("--dataset %q: want mnist, synthetic, csv:FILE, images:DIR or idx:IMAGES,LABELS (or give --input-shape and --classes)", name)
}
