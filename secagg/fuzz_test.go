package secagg

import (
	"bytes"
	"errors"
	"testing"
)

// The message decoders take bytes from the network. Each fuzz target checks
// that arbitrary bytes never panic, that errors wrap ErrTruncated or
// ErrCorrupt, and that what a decoder accepts re-encodes to the same bytes
// (the encoding is canonical).

func fuzzDecoder(f *testing.F, newMsg func() message, seeds ...message) {
	for _, s := range seeds {
		b, err := s.MarshalBinary()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		f.Add(b[:len(b)/2])
	}
	f.Add([]byte{})
	f.Add([]byte{1})
	f.Add([]byte{2, 1})
	f.Add([]byte{1, 0, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		m := newMsg()
		err := m.UnmarshalBinary(b)
		if err != nil {
			if !errors.Is(err, ErrTruncated) && !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v wraps no sentinel", err)
			}
			return
		}
		again, err := m.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(again, b) {
			t.Fatalf("accepted bytes re-encode differently")
		}
	})
}

func FuzzKeyAdvert(f *testing.F) {
	fuzzDecoder(f, func() message { return new(KeyAdvert) }, &KeyAdvert{ID: 1, CPK: [32]byte{1}, BC: [32]byte{2}})
	// Version 2's advert, without a commitment: refused.
	f.Add(append([]byte{2, kindAdvert}, make([]byte, 8+2*keyLen)...))
}

func FuzzKeyList(f *testing.F) {
	fuzzDecoder(f, func() message { return new(KeyList) }, &KeyList{Adverts: []KeyAdvert{{ID: 1}, {ID: 2}}})
}

func FuzzShareBundle(f *testing.F) {
	fuzzDecoder(f, func() message { return new(ShareBundle) }, &ShareBundle{Shares: []EncryptedShare{{From: 1, To: 2}}})
}

func FuzzMaskedInput(f *testing.F) {
	fuzzDecoder(f, func() message { return new(MaskedInput) }, &MaskedInput{From: 1, Y: []uint32{1, 2, 3}})
}

func FuzzUnmaskRequest(f *testing.F) {
	fuzzDecoder(f, func() message { return new(UnmaskRequest) }, &UnmaskRequest{Survivors: []uint64{1, 2, 3}})
}

func FuzzUnmaskResponse(f *testing.F) {
	fuzzDecoder(f, func() message { return new(UnmaskResponse) },
		&UnmaskResponse{From: 1, Shares: []RevealedShare{{Owner: 2, Kind: SelfMaskShare}, {Owner: 3, Kind: MaskKeyShare}}})
}

// FuzzProtocolInputs feeds decoded bytes to a client in step 2 and to a
// server in step 3 of a small round: whatever arrives, nothing panics, and
// a server that still sums returns the right sum or an error.
func FuzzProtocolInputs(f *testing.F) {
	p := Params{Session: 1, IDs: []uint64{1, 2, 3, 4, 5}, K: 4, T: 3, D: 6}
	g, err := NewGraph(p)
	if err != nil {
		f.Fatal(err)
	}
	type state struct {
		srv     *Server
		cl      []*Client
		bundles []ShareBundle
	}
	setup := func(t *testing.T) *state {
		s := &state{srv: NewServer(g)}
		for _, id := range p.IDs {
			c, _ := NewClient(g, id, clientRand(1, id))
			a, _ := c.Advertise()
			must(t, s.srv.AddAdvert(id, a))
			s.cl = append(s.cl, c)
		}
		must(t, s.srv.EndAdvertise())
		for i, id := range p.IDs {
			m, err := s.cl[i].ShareKeys(s.srv.AdvertsFor(id))
			must(t, err)
			must(t, s.srv.AddShares(id, m))
		}
		must(t, s.srv.EndShareKeys())
		for _, id := range p.IDs {
			s.bundles = append(s.bundles, s.srv.SharesFor(id))
		}
		return s
	}
	f.Add([]byte{}, []byte{}, uint8(0))
	f.Add([]byte{wireVersion, kindShares, 0, 0, 0, 0}, []byte{wireVersion, kindUnmaskResponse, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, uint8(1))
	f.Fuzz(func(t *testing.T, bundle, resp []byte, who uint8) {
		s := setup(t)
		i := int(who) % len(p.IDs)
		var b ShareBundle
		if b.UnmarshalBinary(bundle) == nil {
			_, _ = s.cl[i].MaskInput(make([]uint32, p.D), b) // must not panic
		}
		x := make([]uint32, p.D)
		for j, id := range p.IDs {
			c, _ := NewClient(g, id, clientRand(1, id))
			_, _ = c.Advertise()
			_, _ = c.ShareKeys(s.srv.AdvertsFor(id))
			m, err := c.MaskInput(x, s.bundles[j])
			must(t, err)
			must(t, s.srv.AddMasked(id, m))
			s.cl[j] = c
		}
		must(t, s.srv.EndMaskedInput())
		var r UnmaskResponse
		if r.UnmarshalBinary(resp) == nil {
			_ = s.srv.AddUnmask(r.From, r) // must not panic
		}
		for j, id := range p.IDs {
			m, err := s.cl[j].Unmask(s.srv.UnmaskRequestFor(id))
			must(t, err)
			_ = s.srv.AddUnmask(id, m)
		}
		sum, err := s.srv.Sum()
		if err == nil {
			for _, v := range sum {
				if v != 0 {
					t.Fatal("a sum of zero inputs is not zero")
				}
			}
		}
	})
}

// FuzzCombine: arbitrary shares never panic Combine or combineChecked;
// what combineChecked returns passed its check, after at most t+3
// checks.
func FuzzCombine(f *testing.F) {
	f.Add([]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, uint8(2))
	f.Add([]byte{1, 0, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 2, 0, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 3, 0, 9, 4, 5, 6, 7, 8, 9, 10, 11, 12}, uint8(2))
	f.Fuzz(func(t *testing.T, b []byte, thr uint8) {
		var shares []Share
		for len(b) >= 12 {
			var s Share
			s.X = uint32(b[0]) | uint32(b[1])<<8
			for c := range s.Y {
				s.Y[c] = (uint64(b[2+c%10]) << 53) | uint64(b[3+c%9])
			}
			shares = append(shares, s)
			b = b[12:]
		}
		_, _ = Combine(shares, int(thr%8))
		checks := 0
		odd := func(s *[SecretLen]byte) bool { checks++; return s[0]&1 == 1 }
		s, err := combineChecked(shares, int(thr%8), odd)
		if err == nil && s[0]&1 != 1 {
			t.Fatalf("combineChecked returned %x, which its check refuses", s)
		}
		if checks > int(thr%8)+3 {
			t.Fatalf("%d checks for t=%d", checks, thr%8)
		}
	})
}
