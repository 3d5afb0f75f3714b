// Package nn holds float32 neural networks whose parameters are one flat
// []float32 described by a Layout of named tensors: the form in which models
// are averaged, compressed, sent and saved everywhere else in fedzip.
//
// An MLP is stateless and safe for concurrent use; each goroutine brings its
// own Workspace (activations) or Trainer (workspace, gradient, momentum).
// After construction, forward passes, backward passes and SGD steps
// allocate nothing; so do Adam steps on a support after a Trainer's first
// (Trainer.SupportAdamEpochs).
//
// The matrix products run on hand-written AVX2/FMA kernels on amd64 CPUs
// that have them (gemm_amd64.s) and on portable Go elsewhere or with the
// purego build tag. Each output element is a sum in a fixed order, so a run
// gives the same bits every time on the same machine and build.
//
// Conv2D, MaxPool2D, ReLU and GroupNorm are the layer kernels of conv nets,
// on float32 NCHW tensors with PyTorch's weight order ([out, in, kh, kw]).
// Each takes its destination first and caller-owned buffers, allocates
// nothing and sums in a fixed order. Flatten needs no kernel: an N×C×H×W
// tensor stored contiguously is already the N×(C·H·W) matrix a fully
// connected layer reads, in torch.flatten(x, 1) order, and its gradient is
// the same slice.
//
// A Net strings these layers and fully connected ones into a sequential
// network built by ParseNet from a name ("cnn", "lenet5") or a spec such
// as "conv:32x5,pool:2,fc:10", with the same flat parameter vector, Layout
// and workspace discipline as an MLP.
package nn
