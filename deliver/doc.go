// Package deliver is the model a device downloads: a compact, signed file
// format for compressed networks (.fzm), its reader and a small inference
// runtime. It depends on the compress primitives and the standard library
// only, never on the coordinator, the transport or the training code, so
// that a device build stays small (check with go list -deps).
//
// # Format (versions 1 and 2)
//
// All integers are little-endian; uvarint is encoding/binary's unsigned
// varint; str is a uvarint length and that many bytes.
//
//	magic      4   "FZM\x00"
//	version    1   1 (dense layers on a flat input) or 2 (any layers)
//	flags      1   0
//	meta       uvarint count, then count × (key str, value str)
//	input      version 1: uvarint, the input features of the network
//	           version 2: uvarint C, H, W, the shape of one input (NCHW)
//	tensors    uvarint count, then count × tensor
//	layers     uvarint count, then count × layer
//	crc        4   CRC-32C (Castagnoli) of every byte before it
//	signature  64  ed25519 signature of every byte before it
//
// Encode writes version 1 whenever the network fits it (an MLP), so that
// older readers keep reading MLP files; Read reads both.
//
// The metadata key "model_version" (MetaModelVersion), when present, is
// the decimal version of the global model the file was made from. Being
// signed, it is the one version a reader may trust: a server's headers are
// not (see package deliver/fetch).
//
// A tensor describes itself:
//
//	name       str
//	rank       1   1..4, then rank × uvarint dims
//	layout     1   0 dense: every entry is stored, in row-major order
//	               1 sparse: nnz uvarint, then a str holding the row-major
//	                 positions of the nnz stored entries, Golomb-Rice coded
//	                 gaps (compress.AppendRiceIndices); the others are zero
//	encoding   1   0 float32: 4 bytes per stored value
//	               1 float16: 2 bytes per stored value (IEEE binary16)
//	               2 int8 affine: channels uvarint (1, or dims[0]: one per
//	                 row), channels × float32 scale, channels × int8 zero
//	                 point, then symbols; value = (q − zero)·scale
//	               3 codebook: bits 1 (1..8), k uvarint (1..2^bits),
//	                 centroid type 1 (0 float32, 1 float16), k centroids,
//	                 then symbols; value = centroid[code]
//	symbols    coding 1 (0 packed at the code width, compress.AppendPacked;
//	           1 canonical Huffman, compress.AppendHuffman), then a str.
//	           Int8 codes are stored as the symbols q+128, 8 bits wide.
//
// A layer of version 1 is a dense layer, y = act(W·x + b):
//
//	weights    1   1: W is tensor w0 of shape [out, in]
//	               2: W = w0·w1, w0 [out, r] and w1 [r, in] (a low-rank
//	                  factorisation)
//	ids        weights × uvarint tensor index
//	bias       uvarint: 0 none, else 1 + the index of a tensor of shape [out]
//	act        1   0 none, 1 ReLU
//
// A layer of version 2 starts with its operation:
//
//	op         1   0 fc: then the fields of a version-1 layer, on the
//	                 previous output flattened in C, H, W order
//	               1 conv: the fields of a version-1 layer with one weight
//	                 tensor [out, C, kh, kw] (PyTorch's order), then
//	                 stride uvarint (1..64) and pad uvarint (zero rows and
//	                 columns on every side, below the kernel's side)
//	               2 max-pool: window uvarint (1..64), stride uvarint
//	                 (1..64); no padding, partial windows dropped
//	               3 group norm: groups uvarint (dividing C), scale γ and
//	                 shift β uvarint tensor indices (each [C]), eps
//	                 float32 (> 0): y = γ·(x − mean)/√(var + eps) + β over
//	                 each group of C/groups channels
//	               4 ReLU
//
// The first layer's input is the input shape, each layer's the previous
// layer's output, and the last layer is an fc whose out is the number of
// classes. Every activation is bounded by Limits.MaxActivation.
//
// # Reading
//
// Read first checks the file's length against the limits, then verifies the
// signature with the caller's public key, and only then looks at any other
// byte: an unsigned file, one signed by another key or one modified after
// signing is refused before it is parsed. It then checks the checksum, the
// magic and the version, bounds every count and size against Limits before
// allocating, rejects non-finite values, codes outside their codebook,
// positions out of range and shapes that do not chain, and requires the
// body to end exactly at the checksum. It returns errors wrapping the
// sentinel errors of errors.go and never panics.
//
// # Keys
//
// Keys are ed25519 keys in the PEM forms of OpenSSL and crypto/x509: a
// PKCS#8 "PRIVATE KEY" for signing and a PKIX "PUBLIC KEY" for verifying
// (openssl genpkey -algorithm ed25519 makes one; so does
// "fedzip compress --gen-key KEY.pem"). They are parsed here by hand, so
// that a device does not link crypto/x509.
//
// # Runtime
//
// Compile turns a verified file into a Net that predicts one example at a
// time without allocating. Weight matrices with at most half their entries
// nonzero are held in compressed sparse columns with 16-bit row indices
// and multiplied column by column, skipping the columns whose input is zero
// (most MNIST pixels, and about half of the ReLU outputs); denser matrices
// are decoded to row-major float32. A convolution keeps only its nonzero
// kernel taps and runs directly, tap by tap over the output plane, so that
// a pruned kernel costs in proportion to its nonzero weights and needs no
// im2col buffer.
package deliver
