// Package gradient is an update on the wire: the codec pipeline built from
// a spec string, the client state it needs (error-feedback residual, DGC
// momentum), the versioned, self-describing wire format with its checksum,
// and decoders that check every byte against hard limits. It knows nothing
// of gRPC: it turns []float32 into []byte and back. The primitives it
// combines (selection, quantizers, coders) are those of package compress.
//
// # Use
//
// A client keeps one Encoder (NewEncoder(spec, n)) for its whole life and
// calls Encode once per round with its update Δ = w_local − w_global.
// Decode (dense) and DecodeSparse (indices and values, for aggregators that
// accumulate sparse updates) need no state and no knowledge of the spec;
// the coordinator and the simulator both turn uploads into
// aggregate.Update values with UploadDecoder, which uses them. ReadHeader
// checks a message and says what it holds without decoding it.
// DecodeFloat32s reads raw little-endian float32 (AppendFloat32s's layout)
// with the same length and finiteness checks. For the download direction,
// ServerEncoder sends each client the compressed change since the model
// version it holds, with a server-side residual, and ApplyDownload applies
// it on the client.
//
// # Specs
//
// ParseSpec documents the keys (topk, randk, bits, stochastic, ef,
// momentum, decay, clip, warmup, warmstart, entropy, bucket) and Presets
// the named specs
// (none, dgc, stc, stcm, stcd, qsgd8, qsgd4, topk1, topk4, efsign,
// terngrad).
// Spec.String gives the canonical form, which ParseSpec accepts back.
//
// # The encoding pipeline
//
// For each update, in this order:
//
//  1. clip: Δ ← Δ · min(1, clip/‖Δ‖₂);
//  2. momentum (DGC's momentum correction): u ← m·u + Δ, and u replaces Δ;
//  3. error feedback: acc ← decay·residual + Δ (without ef, acc is Δ;
//     decay is 1 unless the spec sets it);
//  4. selection of k = Spec.Kept(n, round) coordinates of acc: exact top-k
//     by magnitude, or random-k drawn from the seed; during DGC's warm-up
//     the density falls exponentially from 25 % to the target (see
//     Spec.Density);
//  5. quantization of the kept values: float32 as is, float16, bfloat16,
//     or codes (uniform 1..8 bits, sign, ternary; deterministic or
//     stochastic) with one float32 scale per bucket;
//  6. with ef, the residual becomes acc minus what was sent, the quantized
//     values as the decoder will reconstruct them, so that quantization
//     error is fed back too; with momentum, u is zeroed at the sent
//     coordinates (factor masking);
//  7. entropy coding of each section (see below), header, checksum.
//
// The invariant of error feedback, tested in TestRoundTrip and
// FuzzRoundTrip: over any number of rounds, the sum of the decoded updates
// plus the final residual equals the sum of the inputs to step 3 (less
// what decay took from the residual), up to float32 rounding.
//
// # Entropy coding
//
// With entropy=auto, the default, each update chooses per section by
// measuring it: the indices of a top-k selection are gap coded
// (compress.AppendGapIndices: Elias-gamma buckets with a Huffman code per
// message), run coded (compress.AppendRunIndices: the same over runs of
// adjacent indices, for block=B), Golomb-Rice coded gaps or fixed-width
// integers, whichever is smallest; quantized codes are Huffman coded or bit-packed, whichever is
// smaller for that update (packing wins for 1-bit signs, Huffman almost
// everywhere else). Random-k sends only its seed. entropy=none, golomb,
// huffman, gaps, runs and zstd force a choice; zstd compresses the
// fixed-width form and serves as a baseline. Measured on real 2NN updates
// (BenchmarkWire2NN, top-k 1 %, 4-bit values, ef), with auto 7.43 index
// bits and 1.92 value bits per kept coordinate, 2,360 bytes per update;
// before the gap code (commit e72c642):
//
//	entropy   index bits/kept   value bits/kept   bytes/update
//	auto      8.21 (Rice)       1.92 (Huffman)    2554
//	none      18.00 (fixed)     4.02 (packed)     5515
//	zstd      18.04             2.49              5146
//
// The Rice code is within 2 % of the entropy bound of random gaps (8.08
// bits at 1 %, 11.41 at 0.1 %; measured 8.21 and 11.74 on 2NN updates,
// 8.11 and 11.50 on random data). The top-k indices of real updates are
// not random, though: weights of neighbouring pixels are large together,
// so gaps of 1 are far more frequent than a geometric law predicts. On the
// 2NN with top-k 1 % the gap code takes 5.6 bits per index on an update
// of an early round (a third of the gaps are 1) and about 6.7 in steady
// state with error feedback, against 8.3 for Rice; auto falls back to
// Rice where the gaps are random (the gap code is then about 1 % larger).
//
// # Wire format, version 1
//
// A message is a header, a section table, the sections and a checksum.
// u8 is one byte, uvarint the unsigned LEB128 varint of encoding/binary
// (at most 10 bytes), u32 and u64 little endian.
//
//	offset  field      type     meaning
//	0       magic      4 bytes  "FZUP"
//	4       version    u8       1
//	5       flags      u8       bit 0: FULL, a whole model that replaces the
//	                            receiver's instead of adding to it; bit 1:
//	                            RUN, the header names its run (below); the
//	                            other bits are zero
//	6       selection  u8       0 dense, 1 top-k, 2 random-k
//	7       format     u8       0 float32, 1 float16, 2 bfloat16, 3 codes,
//	                            4 lattice (downloads only; top-k, or
//	                            random-k for a seeded sync)
//	8       bits       u8       32, 16, 16, the code width 1..8, or 32
//	                            (lattice)
//	9       n          uvarint  model length, < 2^31
//	        k          uvarint  coordinates sent, <= n; = n when dense
//	        round      uvarint  < 2^32: the round of an upload, or the model
//	                            version a download leads to
//	        base       uvarint  < 2^32: the version a download delta
//	                            applies to; 0 otherwise
//	        bucket     uvarint  values per scale, 0 for one scale; 0 unless
//	                            the format is codes
//	        run        16 bytes only with the RUN flag: the run ID (not all
//	                            zero), random bytes the coordinator draws
//	                            when it creates the run (Encoder.SetRun)
//	        count      u8       number of sections, 1..3
//	        table      count × {kind u8, coding u8, length uvarint}
//	        sections   the section bodies, back to back, in table order
//	        crc        u32      CRC-32C (Castagnoli) of all preceding bytes
//
// The sections are exactly these, in this order:
//
//   - indices (kind 1), unless the selection is dense: the k coordinates
//     sent, strictly increasing and below n. Codings: 0 raw, k integers of
//     w = max(1, bits.Len(n−1)) bits packed least significant bit first
//     (compress.AppendPacked32), ceil(k·w/8) bytes; 1 rice, the Golomb-Rice
//     coded gaps of compress.AppendRiceIndices (a parameter byte, then the
//     codes); 3 seed, for random-k only, a u64 seed from which
//     compress.RandK(k, n, seed) draws the indices; 4 zstd, zstd frames
//     whose content is the raw coding; 5 gaps, compress.AppendGapIndices:
//     the buckets bits.Len(gap)−1 of the k gaps (gap ≥ 1, the first from
//     −1) coded by compress.AppendHuffman, then the bits of each gap below
//     its leading one, least significant bit first, zero-padded to a byte;
//     6 runs, compress.AppendRunIndices: the number of runs of adjacent
//     indices (uvarint), the buckets of the gaps before the runs and the
//     run lengths less one, each coded by compress.AppendHuffman, then the
//     gaps' bits below their leading one as for gaps.
//   - scales (kind 2), if the format is codes: B float32 (little endian),
//     B = ceil(k/bucket), 1 if bucket is 0 or at least k, 0 if k is 0. Each
//     is finite, non-negative, and its product with L (below) is finite.
//     Coding: 0 raw.
//   - values (kind 3): float32, 4k bytes; float16 or bfloat16, 2k bytes
//     (none NaN or Inf); or codes: k symbols of bits bits, the symbol of code
//     q being q + L with L = compress.Levels(bits) (for 1 bit, 0 is −1 and 1
//     is +1), and value j = q_j · scale of bucket floor(j/bucket).
//     Codings: 0 raw (bit-packed, compress.AppendPacked, for codes), 2
//     huffman (codes only, compress.AppendHuffman), 4 zstd (frames whose
//     content is the raw coding).
//
// A lattice message (format 4, a download of the lattice codec, applied
// by a Replica) has the same three sections with other contents: indices
// as above (the coordinates whose count changes); scales, coding 0 raw,
// the tensor table: the number T of tensors (uvarint; 0 only before the
// model first changed, with k = 0), T sizes (uvarints summing to n) and T
// steps (float32, each a normal positive float32 no larger than
// MaxFloat32/2^25); values, the k nonzero count changes, each at most 2^25
// in magnitude, zigzag coded (z = 2v for v ≥ 0, −2v−1 otherwise) as
// uvarints (coding 0 raw) or as compress.AppendHuffman of the symbols
// min(z−1, 255) followed by a uvarint z−256 for each symbol 255 (coding 2
// huffman). A lattice message from base 0 sets the counts (the initial
// model's are zero); from any other base it adds to the counts of that
// version. Coordinate i of tensor t is then init_i + float32(step_t ·
// count_i).
//
// A seeded lattice sync (format 4 with selection random-k, the
// support=seeded codec: ServerEncoder.PublishSupport) names supports
// instead of indices: the indices section, coding 3 seed, holds the
// length s of every support (a uvarint, 1 ≤ s ≤ n) and then one u64 key
// (little endian) per version from base+1 to round, in that order (1 to
// 1024 keys, none twice, s times their number at most 32·n and at least
// k). The receiver rebuilds each key's support of s coordinates with its
// SupportFunc (secagg.Support(dst[:s], n, key): it needs nothing of the
// run) and takes their union U, sorted, of exactly k coordinates. The scales
// section is the tensor table, always with steps. The values section holds
// the k count changes over U, zeros included, zigzag coded as uvarints or
// as compress.AppendHuffman of the symbols min(z, 255) followed by a
// uvarint z−255 for each symbol 255.
//
// The update is value j at coordinate j (dense) or at index j (sparse),
// zero elsewhere. A FULL message is dense float32 with base 0.
//
// Round and run bind an upload to where it belongs: a coordinator refuses
// an upload whose round is not the round of the request, or, in a run that
// has a run ID, whose header does not name that run. The RUN flag was added
// within version 1: a flag is how the format grows where a decoder that
// does not know it must refuse the message (decoders refuse unknown flag
// bits), and the version byte changes only for a change that flags cannot
// express. A message without the flag is byte for byte what it was.
//
// Decoders check, in order: the length against Limits.MaxBytes; the magic;
// the version; that the header and table fit and the sections fill the
// rest exactly (ErrTruncated, or ErrCorrupt for trailing bytes); the
// checksum; then the fields: n against Limits.MaxParams (ErrTooLarge) and
// the destination (ErrLength), k <= n, known flags, selection, format,
// bits and codings, the section kinds and every length that k determines
// (ErrCorrupt); then the sections: indices (ErrIndex), scales and values
// (ErrNonFinite), the coders' own checks (ErrCorrupt). A corrupted byte is
// reported as a checksum failure whenever it changes no length. Nothing is
// allocated before n and k are bounded; a Decoder's scratch memory is at
// most about 10 bytes per parameter.
//
// Header, table and checksum take 28 to 33 bytes for the 2NN, 16 more with
// a run ID.
//
// # Figures
//
// Sizes on real updates: five 2NN clients (199,210 parameters) of a dense
// FedAvg run on MNIST, iid, E = 1, B = 10, lr = 0.1, rounds 5..12, each
// client with its own Encoder (go test ./gradient -run=^$
// -bench=Wire2NN -benchtime=1x):
//
//	spec                         bytes/update   ratio   index b/kept  value b/kept
//	none                         796868            1.0   -             32
//	dgc (0.1 %, float32)         1118            713     11.74         32
//	stc (1 %, ternary)           2335            341     8.21          1.03
//	topk1 (1 %, 8 bits)          3461            230     8.21          5.56
//	topk4 (1 %, 4 bits)          2554            312     8.21          1.92
//	topk=0.001,bits=4,ef=on       381           2089     11.77         2.28
//	randk=0.01,bits=4,ef=on       424           1881     (seed)        1.54
//	qsgd8 (dense, bucket 512)    145144            5.5   -             5.83
//	qsgd4                        61112            13.0   -             2.45
//	efsign (dense sign)          24937            32.0   -             1.00
//	terngrad (dense ternary)     25793            30.9   -             1.04
//
// Throughput, one core of an AMD EPYC, n = 1e6, in dense float32 input
// (go test ./gradient -run=^$ -bench='(Encode|Decode)/n=1e6'): top-k 1 %
// 4-bit with ef encodes at 2.3 GB/s and decodes (dense, including zeroing
// the destination) at 22 GB/s; dgc encodes at 3.1 GB/s; none at 1.7 GB/s
// encode, 3.3 GB/s decode; qsgd8 at 0.48 GB/s encode, 0.70 GB/s decode.
package gradient
