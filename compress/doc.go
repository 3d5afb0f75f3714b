// Package compress holds the compression primitives of fedzip: pure functions
// over slices that select, quantize and entropy-code the coordinates of an
// update vector.
//
// The package imports nothing from the rest of fedzip and holds no per-client
// state. Its functions follow the conventions of gonum:
//
//   - The destination comes first: Quantize(dst, scales, src, bits, bucket).
//     Lengths are given by the slices; the length of dst usually sets how much
//     work is done (TopK selects len(dst) coordinates).
//   - A programmer error, such as slices of mismatched lengths or a bit width
//     out of range, panics with a message that starts with "compress: ".
//   - Bad data, meaning bytes that came from a file or a network, never panics:
//     every decoder returns an error wrapping one of the sentinel errors
//     ErrTruncated, ErrCorrupt, ErrIndexRange or ErrSymbol. Decoders write into a destination the caller sized, so the
//     caller bounds every size before it allocates anything.
//   - The hot paths allocate nothing. Functions that need scratch memory take a
//     *Workspace, which the caller keeps and reuses.
//
// # Selection
//
// TopK selects the k coordinates of largest magnitude exactly; TopKResidual
// does the same on an error-feedback accumulator and, in the same pass,
// gathers the selected values and zeroes them in the accumulator so that what
// remains is the residual. Both run in about one pass over memory: a strided
// sample gives a conservative lower bound on the threshold, one scan collects
// the candidates above it, and a radix select over the candidates finds the
// exact threshold. TopKSampled is the sampled-threshold selection of Deep
// Gradient Compression, RandK a seeded uniform random subset and Threshold a
// fixed-threshold selection. Every selection writes indices in ascending order.
//
// Magnitudes are ordered by the bit pattern of |x|, which orders the same as
// the value for non-negative floats and places NaN above +Inf, so that bad
// values are selected (and then rejected by the wire format) rather than
// hidden. Ties are broken by the lower index.
//
// # Quantization
//
// Quantize and QuantizeStochastic map float32 values to signed integer codes
// in [-L, L] with L = 2^(bits-1) - 1 (QSGD-style sign and magnitude levels of
// |x|/scale with the max-norm scale), per tensor or per bucket; one bit means
// the sign. Ternary (STC), TernaryStochastic (TernGrad) and Sign (EF-signSGD)
// are the special cases used in the literature. Dequantize inverts them all:
// dst[i] = code[i] * scale. ToSymbols maps codes to the unsigned symbols that
// the bit packer and the Huffman coder take. Float16bits and BFloat16bits
// convert to half precision with round-to-nearest-even.
//
// # Coding
//
// AppendRiceIndices codes sorted indices as Golomb-Rice coded gaps, with the
// parameter chosen from the data; AppendHuffman codes byte symbols with a
// canonical Huffman code; AppendPacked packs b-bit symbols. Each has a decoder
// that validates its input completely.
//
// # Determinism
//
// Every function is deterministic: randomized ones take a seed, summations run
// in a fixed order, and floating-point expressions are written with explicit
// conversions so that no compiler may fuse them differently on another
// architecture. Replicas that decode the same bytes get bit-identical values.
package compress
