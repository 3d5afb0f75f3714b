package coordinator

import (
	"fmt"

	"github.com/fedzip/fedzip/gradient"
)

// updateCodec decodes the update bytes clients upload:
// gradient.UploadDecoder, the decoder the simulator uses too, so that the
// FSM and a simulation aggregate the same update from the same bytes.
// Check is the leader's cheap test before an update enters the log (sizes,
// header and checksum); anything it misses, the FSM's Decode refuses,
// identically on every replica.
type updateCodec = gradient.UploadDecoder

// scratch holds decode buffers reused across updates.
type scratch = gradient.UploadScratch

// newUpdateCodec returns the decoder of uploads in the codec spec. In a
// bound run (one with a run ID) every upload is a wire message, "none" the
// dense float32 one, whose header names its round and run; a run without
// a run ID takes "none" as raw float32.
func newUpdateCodec(spec string, bound bool) (updateCodec, error) {
	c, err := gradient.NewUploadDecoder(spec, bound)
	if err != nil {
		return c, fmt.Errorf("coordinator: upload codec: %w", err)
	}
	return c, nil
}
