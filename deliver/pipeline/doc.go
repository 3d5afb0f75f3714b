// Package pipeline compresses a trained float32 network, an nn MLP or a
// conv Net, into a signed device model by a recipe of stages: distill,
// prune (magnitude per layer or global on Zhu and Gupta's cubic schedule,
// structured neurons or conv filters, N:M), cluster (k-means weight
// sharing with centroid fine-tuning), quantize (int8 per channel,
// float16), lowrank (truncated SVD) and encode (Huffman or packed codes,
// half-precision biases and codebooks). See ParseRecipe for the grammar
// and "fedzip compress -h" for the parameters.
//
// It is the training side of package deliver: it fine-tunes on a data set
// with nn (or, for distillation and an MLP's factored layers, with its own
// forward and backward passes over gonum's BLAS, since nn takes gradients
// only from hard labels; a conv net's factored layers are rebuilt as a
// Net), and after each stage it encodes the model to a signed file, reads
// it back with deliver and measures that file: size, bits per weight,
// accuracy, latency and memory of the device runtime.
package pipeline
