package secagg

import "fmt"

// Peer is a client's side of one round as a networked driver runs it:
// its Client and its answer of each step, encoded. Asked for a step again
// (its answer was lost, or a new leader asks again after a failover), it
// returns the same bytes rather than stepping its Client twice, which
// the Client refuses with ErrStep. The masked input is encoded by pack,
// so that a driver may send it packed (gradient.AppendMasked). A Peer is
// not safe for concurrent use.
type Peer struct {
	c       *Client
	pack    func(MaskedInput) ([]byte, error)
	answers [4][]byte
}

// NewPeer returns the peer of client c; pack encodes its masked input
// (nil: MaskedInput.MarshalBinary).
func NewPeer(c *Client, pack func(MaskedInput) ([]byte, error)) *Peer {
	if pack == nil {
		pack = func(m MaskedInput) ([]byte, error) { return m.MarshalBinary() }
	}
	return &Peer{c: c, pack: pack}
}

// Answer returns the peer's encoded message for step (0 advertise, 1
// share keys, 2 masked input of x, 3 unmask), given the server's encoded
// message for it (nil at step 0): the same bytes each time it is asked.
// A message that does not decode, or that the Client refuses (too few
// neighbours, a share that does not open), is an error, and the Client
// aborts as it does.
func (p *Peer) Answer(step int, in []byte, x []uint32) ([]byte, error) {
	if step < 0 || step > 3 {
		return nil, fmt.Errorf("%w: step %d", ErrStep, step)
	}
	if a := p.answers[step]; a != nil {
		return a, nil
	}
	var out []byte
	var err error
	switch step {
	case 0:
		var a KeyAdvert
		if a, err = p.c.Advertise(); err == nil {
			out, err = a.MarshalBinary()
		}
	case 1:
		var l KeyList
		var b ShareBundle
		if err = l.UnmarshalBinary(in); err == nil {
			if b, err = p.c.ShareKeys(l); err == nil {
				out, err = b.MarshalBinary()
			}
		}
	case 2:
		var sb ShareBundle
		var y MaskedInput
		if err = sb.UnmarshalBinary(in); err == nil {
			if y, err = p.c.MaskInput(x, sb); err == nil {
				out, err = p.pack(y)
			}
		}
	case 3:
		var q UnmaskRequest
		var u UnmaskResponse
		if err = q.UnmarshalBinary(in); err == nil {
			if u, err = p.c.Unmask(q); err == nil {
				out, err = u.MarshalBinary()
			}
		}
	}
	if err != nil {
		return nil, err
	}
	p.answers[step] = out
	return out, nil
}
