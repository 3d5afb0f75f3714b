package gradient

import (
	"fmt"
	"sync"

	"github.com/klauspost/compress/zstd"
)

// One zstd encoder and one decoder serve the whole process: EncodeAll and
// DecodeAll are safe for concurrent use, and an encoder per client would
// hold megabytes of tables each.

var zstdEncoder = sync.OnceValue(func() *zstd.Encoder {
	e, err := zstd.NewWriter(nil,
		zstd.WithEncoderLevel(zstd.SpeedDefault),
		zstd.WithEncoderCRC(false), // the message has its own checksum
		zstd.WithZeroFrames(true))
	if err != nil {
		panic("gradient: zstd encoder: " + err.Error())
	}
	return e
})

// zstdMaxWindow bounds the window a frame may ask the decoder for.
const zstdMaxWindow = 8 << 20

var zstdDecoder = sync.OnceValue(func() *zstd.Decoder {
	d, err := zstd.NewReader(nil,
		zstd.WithDecodeAllCapLimit(true),
		zstd.WithDecoderMaxWindow(zstdMaxWindow),
		zstd.WithDecoderLowmem(true),
		zstd.WithDecoderConcurrency(0))
	if err != nil {
		panic("gradient: zstd decoder: " + err.Error())
	}
	return d
})

// unzstd decodes the zstd section src, which must hold exactly want bytes,
// into buf (grown as needed) and returns them. The output is bounded by
// want before anything is decoded.
func unzstd(buf *[]byte, src []byte, want int, what SectionKind) ([]byte, error) {
	if cap(*buf) < want {
		*buf = make([]byte, 0, want)
	}
	out, err := zstdDecoder().DecodeAll(src, (*buf)[:0:want])
	if err != nil {
		return nil, fmt.Errorf("%w: %s section: zstd: %w", ErrCorrupt, what, err)
	}
	if len(out) != want {
		return nil, fmt.Errorf("%w: %s section: zstd gives %d bytes, want %d", ErrCorrupt, what, len(out), want)
	}
	return out, nil
}
