package transport

import (
	"bytes"
	"errors"
	"io"
	"math"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fedzip/fedzip/transport/fedzippb"
)

// pipe records sent chunks and replays them to a receiver.
type pipe[C any] struct {
	msgs []C
	err  error // returned after the messages instead of io.EOF
}

func (p *pipe[C]) send(c C) error { p.msgs = append(p.msgs, c); return nil }

func (p *pipe[C]) recv() (C, error) {
	var zero C
	if len(p.msgs) == 0 {
		if p.err != nil {
			return zero, p.err
		}
		return zero, io.EOF
	}
	c := p.msgs[0]
	p.msgs = p.msgs[1:]
	return c, nil
}

func TestChunkRoundTrip(t *testing.T) {
	lim := Limits{MaxModelBytes: 1 << 20, MaxUpdateBytes: 1 << 20, MaxChunk: 1000}
	for _, tc := range []struct {
		n, chunk, wantMsgs int
	}{
		{0, 100, 1}, {1, 100, 1}, {100, 100, 1}, {101, 100, 2}, {1000, 1000, 1}, {12345, 1000, 13},
	} {
		payload := testPayload(tc.n, 1)
		var up pipe[*fedzippb.UpdateChunk]
		h := &fedzippb.UpdateHeader{ClientId: 7, Round: 3}
		if err := SendUpdate(up.send, h, payload, tc.chunk); err != nil {
			t.Fatal(err)
		}
		if len(up.msgs) != tc.wantMsgs {
			t.Errorf("n=%d chunk=%d: %d messages, want %d", tc.n, tc.chunk, len(up.msgs), tc.wantMsgs)
		}
		if h.TotalBytes != 0 || h.Crc32C != 0 {
			t.Errorf("SendUpdate modified the caller's header: %v", h)
		}
		gotH, got, err := RecvUpdate(up.recv, lim, nil)
		if err != nil {
			t.Fatalf("n=%d: %v", tc.n, err)
		}
		if !bytes.Equal(got, payload) || gotH.GetClientId() != 7 || gotH.GetTotalBytes() != uint64(tc.n) {
			t.Fatalf("n=%d: round trip changed the payload or header %v", tc.n, gotH)
		}

		var down pipe[*fedzippb.ModelChunk]
		if err := SendModel(down.send, &fedzippb.ModelHeader{Version: 9}, payload, tc.chunk); err != nil {
			t.Fatal(err)
		}
		mh, got, err := RecvModel(down.recv, lim, nil)
		if err != nil || !bytes.Equal(got, payload) || mh.GetVersion() != 9 {
			t.Fatalf("n=%d: model round trip: %v", tc.n, err)
		}
	}
}

// TestRecvRefusals feeds hand-made streams to RecvUpdate.
func TestRecvRefusals(t *testing.T) {
	lim := Limits{MaxModelBytes: 1 << 20, MaxUpdateBytes: 1000, MaxChunk: 100}
	good := testPayload(250, 2)
	hdr := func(total int, crc uint32) *fedzippb.UpdateHeader {
		return &fedzippb.UpdateHeader{ClientId: 1, TotalBytes: uint64(total), Crc32C: crc}
	}
	ch := func(h *fedzippb.UpdateHeader, d []byte) *fedzippb.UpdateChunk {
		return &fedzippb.UpdateChunk{Header: h, Data: d}
	}
	crc := Checksum(good)
	errBoom := status.Error(codes.Canceled, "client went away")
	for _, tc := range []struct {
		name string
		msgs []*fedzippb.UpdateChunk
		end  error
		code codes.Code
		is   error
	}{
		{"empty stream", nil, nil, codes.DataLoss, ErrTruncated},
		{"no header", []*fedzippb.UpdateChunk{ch(nil, good[:100])}, nil, codes.InvalidArgument, ErrMalformedStream},
		{"total over limit", []*fedzippb.UpdateChunk{ch(hdr(1001, 0), nil)}, nil, codes.ResourceExhausted, ErrPayloadTooLarge},
		{"huge total", []*fedzippb.UpdateChunk{ch(hdr(-1, 0), nil)}, nil, codes.ResourceExhausted, ErrPayloadTooLarge},
		{"first chunk over limit", []*fedzippb.UpdateChunk{ch(hdr(250, crc), good[:101])}, nil, codes.ResourceExhausted, ErrChunkTooLarge},
		{"later chunk over limit", []*fedzippb.UpdateChunk{ch(hdr(250, crc), good[:100]), ch(nil, good[100:250])}, nil, codes.ResourceExhausted, ErrChunkTooLarge},
		{"truncated", []*fedzippb.UpdateChunk{ch(hdr(250, crc), good[:100]), ch(nil, good[100:200])}, nil, codes.DataLoss, ErrTruncated},
		{"whole payload in one chunk, then more", []*fedzippb.UpdateChunk{ch(hdr(100, Checksum(good[:100])), good[:100]), ch(nil, good[100:101])}, nil, codes.InvalidArgument, ErrMalformedStream},
		{"whole payload in one chunk, bad crc", []*fedzippb.UpdateChunk{ch(hdr(100, Checksum(good[:100])^1), good[:100])}, nil, codes.DataLoss, ErrChecksum},
		{"crc mismatch", []*fedzippb.UpdateChunk{ch(hdr(250, crc^1), good[:100]), ch(nil, good[100:200]), ch(nil, good[200:])}, nil, codes.DataLoss, ErrChecksum},
		{"overrun", []*fedzippb.UpdateChunk{ch(hdr(150, crc), good[:100]), ch(nil, good[100:200])}, nil, codes.InvalidArgument, ErrMalformedStream},
		{"header repeated", []*fedzippb.UpdateChunk{ch(hdr(250, crc), good[:100]), ch(hdr(250, crc), good[100:200])}, nil, codes.InvalidArgument, ErrMalformedStream},
		{"empty chunk", []*fedzippb.UpdateChunk{ch(hdr(250, crc), good[:100]), ch(nil, nil)}, nil, codes.InvalidArgument, ErrMalformedStream},
		{"peer error passes through", []*fedzippb.UpdateChunk{ch(hdr(250, crc), good[:100])}, errBoom, codes.Canceled, errBoom},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &pipe[*fedzippb.UpdateChunk]{msgs: tc.msgs, err: tc.end}
			_, _, err := RecvUpdate(p.recv, lim, nil)
			wantCode(t, err, tc.code)
			if !errors.Is(err, tc.is) {
				t.Fatalf("%v is not %v", err, tc.is)
			}
		})
	}
}

func TestRecvCheckRunsBeforeData(t *testing.T) {
	lim := Limits{MaxModelBytes: 1 << 20, MaxUpdateBytes: 1 << 20, MaxChunk: 1 << 10}
	var up pipe[*fedzippb.UpdateChunk]
	if err := SendUpdate(up.send, &fedzippb.UpdateHeader{ClientId: 2}, testPayload(5000, 3), 1000); err != nil {
		t.Fatal(err)
	}
	refuse := StatusError(codes.PermissionDenied, ErrPermissionDenied)
	_, _, err := RecvUpdate(up.recv, lim, func(h *fedzippb.UpdateHeader) error {
		if h.GetClientId() != 1 {
			return refuse
		}
		return nil
	})
	if err != refuse {
		t.Fatalf("got %v, want the check's error", err)
	}
	if len(up.msgs) != 4 {
		t.Fatalf("RecvUpdate read %d chunks after refusing the header", 4-len(up.msgs))
	}
}

func TestLimitsFor(t *testing.T) {
	l := LimitsFor(1_000_000, 0)
	if err := l.Validate(); err != nil {
		t.Fatal(err)
	}
	if l.MaxModelBytes != 8_000_000+ModelOverhead || l.MaxUpdateBytes != 8_000_000+UpdateOverhead || l.MaxChunk != DefaultMaxChunk {
		t.Fatalf("LimitsFor(1e6, 0) = %+v", l)
	}
	l = LimitsFor(1_000_000, 90_000)
	if l.MaxModelBytes != 4_000_000+ModelOverhead || l.MaxUpdateBytes != 90_000+UpdateOverhead {
		t.Fatalf("LimitsFor(1e6, 9e4) = %+v", l)
	}
	if (Limits{}).Validate() == nil {
		t.Fatal("zero Limits validated")
	}
	// Sizes from the network go through CheckedLimits: an error, never a
	// panic.
	for _, bad := range [][2]int{{0, 0}, {-1, 0}, {math.MaxInt, 0}, {math.MaxInt/16 + 1, 0}, {10, -1}, {10, math.MaxInt}} {
		if _, err := CheckedLimits(bad[0], bad[1]); !errors.Is(err, ErrBadLimits) {
			t.Errorf("CheckedLimits(%d, %d): %v, want ErrBadLimits", bad[0], bad[1], err)
		}
	}
	if l, err := CheckedLimits(1_000_000, 90_000); err != nil || l != LimitsFor(1_000_000, 90_000) {
		t.Fatalf("CheckedLimits(1e6, 9e4) = %+v, %v", l, err)
	}
	defer func() {
		if recover() == nil {
			t.Fatal("LimitsFor(0, 0) did not panic")
		}
	}()
	LimitsFor(0, 0)
}

// FuzzRecvUpdate sends payload in chunks under an arbitrary header: an
// honest header round-trips, anything else is refused with a documented
// code, and nothing panics.
func FuzzRecvUpdate(f *testing.F) {
	f.Add([]byte("hello, world"), uint16(5), uint64(12), uint32(0), true)
	f.Add([]byte{}, uint16(1), uint64(0), uint32(0), true)
	f.Add([]byte("abc"), uint16(2), uint64(2), uint32(7), false)
	f.Add(make([]byte, 300), uint16(200), uint64(300), uint32(0), true)
	lim := Limits{MaxModelBytes: 1 << 16, MaxUpdateBytes: 1 << 16, MaxChunk: 128}
	f.Fuzz(func(t *testing.T, payload []byte, chunk uint16, total uint64, crc uint32, honest bool) {
		if honest {
			total, crc = uint64(len(payload)), Checksum(payload)
		}
		p := &pipe[*fedzippb.UpdateChunk]{}
		first := true
		_ = sendChunks(payload, int(chunk), func(isFirst bool, data []byte) error {
			c := &fedzippb.UpdateChunk{Data: data}
			if first {
				c.Header = &fedzippb.UpdateHeader{TotalBytes: total, Crc32C: crc}
				first = false
			}
			return p.send(c)
		})
		_, got, err := RecvUpdate(p.recv, lim, nil)
		eff := int(chunk)
		if eff == 0 {
			eff = DefaultChunkSize
		}
		largest := min(eff, len(payload))
		ok := total == uint64(len(payload)) && crc == Checksum(payload) &&
			len(payload) <= lim.MaxUpdateBytes && largest <= lim.MaxChunk
		if ok {
			if err != nil || !bytes.Equal(got, payload) {
				t.Fatalf("honest stream refused: %v", err)
			}
			return
		}
		switch status.Code(err) {
		case codes.ResourceExhausted, codes.InvalidArgument, codes.DataLoss:
		default:
			t.Fatalf("bad stream: got %v", err)
		}
	})
}
