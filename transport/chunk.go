package transport

import (
	"context"
	"errors"
	"hash/crc32"
	"io"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/fedzip/fedzip/transport/fedzippb"
)

// Chunking. A payload (a model for Download, an encoded update for Submit)
// travels as a stream of messages. The first carries the header, which
// announces total_bytes and the CRC-32C of the whole payload, and usually
// the first piece of data; every later message carries only a non-empty
// piece of data. The stream ends (io.EOF) right after the last piece.
//
// A receiver refuses, with a status error wrapping a sentinel:
//   - a total above its limit, before allocating: ResourceExhausted (ErrPayloadTooLarge);
//   - a chunk above Limits.MaxChunk: ResourceExhausted (ErrChunkTooLarge);
//   - no header first, a header later, an empty chunk or more data than
//     announced: InvalidArgument (ErrMalformedStream);
//   - a stream that ends early: DataLoss (ErrTruncated);
//   - a checksum mismatch: DataLoss (ErrChecksum).
//
// Errors from recv and send themselves (the peer's status, a cancelled
// context) are returned unchanged.

// crcTable is the CRC-32C (Castagnoli) table.
var crcTable = crc32.MakeTable(crc32.Castagnoli)

// Checksum returns the CRC-32C (Castagnoli) of b, the checksum a chunked
// stream announces in its header.
func Checksum(b []byte) uint32 { return crc32.Checksum(b, crcTable) }

// SendModel streams payload as ModelChunks of at most chunkSize bytes
// (DefaultChunkSize if chunkSize <= 0) through send, typically a Download
// handler's stream.Send. The first chunk carries a copy of h with
// TotalBytes and Crc32C set from payload; h itself is not modified, so it
// may be shared between concurrent downloads. chunkSize must not exceed
// the receiver's MaxChunk (DefaultMaxChunk unless the client chose otherwise).
func SendModel(send func(*fedzippb.ModelChunk) error, h *fedzippb.ModelHeader, payload []byte, chunkSize int) error {
	return SendModelChecksummed(send, h, payload, Checksum(payload), chunkSize)
}

// SendModelChecksummed is SendModel for a payload whose Checksum the caller
// already has (crc must equal Checksum(payload)): a server that sends the
// same model to many clients computes it once.
func SendModelChecksummed(send func(*fedzippb.ModelChunk) error, h *fedzippb.ModelHeader, payload []byte, crc uint32, chunkSize int) error {
	hc := proto.Clone(h).(*fedzippb.ModelHeader)
	hc.TotalBytes = uint64(len(payload))
	hc.Crc32C = crc
	return sendChunks(payload, chunkSize, func(first bool, data []byte) error {
		c := &fedzippb.ModelChunk{Data: data}
		if first {
			c.Header = hc
		}
		return send(c)
	})
}

// RecvModel reassembles a Download stream read through recv, typically
// the client stream's Recv, refusing totals above lim.MaxModelBytes and
// chunks above lim.MaxChunk. check, if not nil, sees the header before
// anything is allocated and may refuse it with an error that RecvModel
// returns as is. See the chunking rules above for the errors.
func RecvModel(recv func() (*fedzippb.ModelChunk, error), lim Limits, check func(*fedzippb.ModelHeader) error) (*fedzippb.ModelHeader, []byte, error) {
	return recvChunks(recv, func(c *fedzippb.ModelChunk) (*fedzippb.ModelHeader, []byte) {
		return c.GetHeader(), c.GetData()
	}, mustPositive(lim.MaxModelBytes, "MaxModelBytes"), lim.maxChunk(), check)
}

// SendUpdate streams payload as UpdateChunks of at most chunkSize bytes
// (DefaultChunkSize if chunkSize <= 0) through send, typically a Submit
// client stream's Send. The first chunk carries a copy of h with
// TotalBytes and Crc32C set from payload; chunkSize must not exceed the
// server's Limits.MaxChunk. SendUpdate does not close the
// stream; when send returns io.EOF the server has ended the call and the
// stream's CloseAndRecv returns its status. Upload does all of this.
func SendUpdate(send func(*fedzippb.UpdateChunk) error, h *fedzippb.UpdateHeader, payload []byte, chunkSize int) error {
	hc := proto.Clone(h).(*fedzippb.UpdateHeader)
	hc.TotalBytes = uint64(len(payload))
	hc.Crc32C = Checksum(payload)
	return sendChunks(payload, chunkSize, func(first bool, data []byte) error {
		c := &fedzippb.UpdateChunk{Data: data}
		if first {
			c.Header = hc
		}
		return send(c)
	})
}

// RecvUpdate reassembles a Submit stream read through recv, typically the
// handler stream's Recv, refusing totals above lim.MaxUpdateBytes and
// chunks above lim.MaxChunk. check, if not nil, sees the header before
// anything is allocated and may refuse it (wrong client, round or
// version) with an error that RecvUpdate returns as is; a handler
// typically passes
//
//	func(h *fedzippb.UpdateHeader) error { return transport.CheckClientID(ctx, h.GetClientId()) }
//
// See the chunking rules above for the errors.
func RecvUpdate(recv func() (*fedzippb.UpdateChunk, error), lim Limits, check func(*fedzippb.UpdateHeader) error) (*fedzippb.UpdateHeader, []byte, error) {
	return recvChunks(recv, func(c *fedzippb.UpdateChunk) (*fedzippb.UpdateHeader, []byte) {
		return c.GetHeader(), c.GetData()
	}, mustPositive(lim.MaxUpdateBytes, "MaxUpdateBytes"), lim.maxChunk(), check)
}

// Upload submits one update on a new Submit stream of c: it sends h and
// payload in chunks of chunkSize (DefaultChunkSize if <= 0), closes the
// stream and returns the server's answer or its status error. The stream
// is released before Upload returns.
func Upload(ctx context.Context, c fedzippb.CoordinatorClient, h *fedzippb.UpdateHeader, payload []byte, chunkSize int) (*fedzippb.SubmitResponse, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.Submit(ctx)
	if err != nil {
		return nil, err
	}
	if err := SendUpdate(stream.Send, h, payload, chunkSize); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	// After io.EOF from Send, CloseAndRecv reports why the server ended the call.
	return stream.CloseAndRecv()
}

// DownloadModel fetches a model on a new Download stream of c and
// reassembles it under lim; check is as for RecvModel. The stream is
// released before DownloadModel returns.
func DownloadModel(ctx context.Context, c fedzippb.CoordinatorClient, req *fedzippb.DownloadRequest, lim Limits, check func(*fedzippb.ModelHeader) error) (*fedzippb.ModelHeader, []byte, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.Download(ctx, req)
	if err != nil {
		return nil, nil, err
	}
	return RecvModel(stream.Recv, lim, check)
}

// sendChunks calls send for consecutive pieces of payload of at most
// chunkSize bytes, first=true for the first; an empty payload is one call
// with no data.
func sendChunks(payload []byte, chunkSize int, send func(first bool, data []byte) error) error {
	if chunkSize <= 0 {
		chunkSize = DefaultChunkSize
	}
	first := true
	for first || len(payload) > 0 {
		n := min(chunkSize, len(payload))
		if err := send(first, payload[:n:n]); err != nil {
			return err
		}
		payload = payload[n:]
		first = false
	}
	return nil
}

// chunkHeader is what recvChunks needs of a header.
type chunkHeader interface {
	comparable
	GetTotalBytes() uint64
	GetCrc32C() uint32
}

// recvChunks is the receiver of both stream kinds; split returns a
// message's header (nil if absent) and data.
func recvChunks[C any, H chunkHeader](recv func() (C, error), split func(C) (H, []byte), maxBytes, maxChunk int, check func(H) error) (H, []byte, error) {
	var none H
	msg, err := recv()
	if errors.Is(err, io.EOF) {
		return none, nil, errorf(codes.DataLoss, ErrTruncated, "stream ended before its header")
	}
	if err != nil {
		return none, nil, err
	}
	h, data := split(msg)
	if h == none {
		return none, nil, errorf(codes.InvalidArgument, ErrMalformedStream, "first chunk has no header")
	}
	total := h.GetTotalBytes()
	if total > uint64(maxBytes) {
		return none, nil, errorf(codes.ResourceExhausted, ErrPayloadTooLarge, "%d bytes announced, limit %d", total, maxBytes)
	}
	if check != nil {
		if err := check(h); err != nil {
			return none, nil, err
		}
	}
	n := int(total)
	var buf []byte
	if len(data) == n && n <= maxChunk {
		// The whole payload came in the first message, which gRPC decoded
		// into a fresh buffer: keep it instead of copying. A further
		// chunk would be more than announced and is refused below.
		buf, data = data[:n:n], nil
	} else {
		// Only what has arrived: a peer that announces a large total and
		// then stalls costs no more than it sent. The buffer grows with
		// the data, doubling, never past the total.
		buf = make([]byte, 0, len(data))
	}
	for {
		if len(data) > maxChunk {
			return none, nil, errorf(codes.ResourceExhausted, ErrChunkTooLarge, "chunk of %d bytes, limit %d", len(data), maxChunk)
		}
		if len(data) > n-len(buf) {
			return none, nil, errorf(codes.InvalidArgument, ErrMalformedStream, "more data than the %d bytes announced", n)
		}
		if need := len(buf) + len(data); need > cap(buf) {
			grown := make([]byte, len(buf), min(max(2*cap(buf), need), n))
			copy(grown, buf)
			buf = grown
		}
		buf = append(buf, data...)

		msg, err = recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return none, nil, err
		}
		var hh H
		hh, data = split(msg)
		if hh != none {
			return none, nil, errorf(codes.InvalidArgument, ErrMalformedStream, "header repeated after %d bytes", len(buf))
		}
		if len(data) == 0 {
			return none, nil, errorf(codes.InvalidArgument, ErrMalformedStream, "empty chunk after %d bytes", len(buf))
		}
	}
	if len(buf) != n {
		return none, nil, errorf(codes.DataLoss, ErrTruncated, "stream ended after %d of %d bytes", len(buf), n)
	}
	if got := Checksum(buf); got != h.GetCrc32C() {
		return none, nil, errorf(codes.DataLoss, ErrChecksum, "crc32c %08x, announced %08x", got, h.GetCrc32C())
	}
	return h, buf, nil
}

// mustPositive returns v, panicking if it is not positive: a zero Limits
// is a programming mistake, not bad input.
func mustPositive(v int, name string) int {
	if v <= 0 {
		panic("transport: Limits." + name + " must be positive")
	}
	return v
}
