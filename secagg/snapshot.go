package secagg

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"slices"
)

// kindServerState is the kind byte of a server snapshot.
const kindServerState byte = 7

// MarshalBinary encodes the server's whole state, for a Raft snapshot: the
// step, the adverts, which clients shared keys and the sealed shares in
// transit, the running sum and the survivors, the revealed shares in the
// order they arrived and what was reconstructed. The encoding lists every
// set in ascending order, so two servers that accepted the same messages
// in the same order encode to the same bytes. It holds no client's input,
// only the running sum of the masked vectors.
func (s *Server) MarshalBinary() ([]byte, error) {
	b := header(kindServerState, 64)
	b = append(b, byte(s.step))
	ids := sortedKeys(s.adverts)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(ids)))
	for _, id := range ids {
		a := s.adverts[id]
		b = appendAdvert(b, &a, true)
	}
	if s.step < srvShareKeys {
		return b, nil
	}
	b = appendIDs(b, sortedKeys(s.sent))
	to := sortedKeys(s.shares)
	n := 0
	for _, id := range to {
		n += len(s.shares[id])
	}
	b = binary.LittleEndian.AppendUint32(b, uint32(n))
	for _, id := range to {
		list := slices.Clone(s.shares[id])
		slices.SortFunc(list, func(x, y EncryptedShare) int { return cmp.Compare(x.From, y.From) })
		for _, e := range list {
			b = binary.LittleEndian.AppendUint64(b, e.From)
			b = binary.LittleEndian.AppendUint64(b, e.To)
			b = append(b, e.Sealed[:]...)
		}
	}
	if s.step < srvMasked {
		return b, nil
	}
	b = appendIDs(b, sortedKeys(s.masked))
	b = binary.LittleEndian.AppendUint32(b, uint32(len(s.sum)))
	for _, v := range s.sum {
		b = binary.LittleEndian.AppendUint32(b, v)
	}
	if s.step < srvUnmask {
		return b, nil
	}
	b = appendIDs(b, sortedKeys(s.revealed))
	for _, m := range []map[uint64][]Share{s.bShares, s.sShares} {
		owners := sortedKeys(m)
		b = binary.LittleEndian.AppendUint32(b, uint32(len(owners)))
		for _, o := range owners {
			b = binary.LittleEndian.AppendUint64(b, o)
			b = binary.LittleEndian.AppendUint32(b, uint32(len(m[o])))
			for _, sh := range m[o] {
				b = binary.LittleEndian.AppendUint32(b, sh.X)
				b = appendY(b, &sh.Y)
			}
		}
	}
	owners := sortedKeys(s.recon)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(owners)))
	for _, o := range owners {
		b = binary.LittleEndian.AppendUint64(b, o)
		b = append(b, byte(s.recon[o]))
	}
	return b, nil
}

func sortedKeys[V any](m map[uint64]V) []uint64 {
	ids := make([]uint64, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

func appendIDs(b []byte, ids []uint64) []byte {
	b = binary.LittleEndian.AppendUint32(b, uint32(len(ids)))
	for _, id := range ids {
		b = binary.LittleEndian.AppendUint64(b, id)
	}
	return b
}

// ids reads an ascending list of IDs, each of which must pass in.
func (r *reader) ids(what string, in func(uint64) bool) []uint64 {
	n := r.count(maxListCount, 8)
	if r.err != nil {
		return nil
	}
	out := make([]uint64, n)
	for i := range out {
		out[i] = r.u64()
		if r.err == nil && (i > 0 && out[i] <= out[i-1] || !in(out[i])) {
			r.err = fmt.Errorf("%w: server state: %s: bad or unsorted ID %d", ErrCorrupt, what, out[i])
		}
	}
	return out
}

// RestoreServer rebuilds a server of the round of g from MarshalBinary's
// bytes. It checks them against the graph (every ID in the round, every
// set inside the one before it, every share between neighbours, the sum of
// length D) and returns an error wrapping ErrTruncated or ErrCorrupt,
// never panicking, on bytes that are not such a state.
func RestoreServer(g *Graph, b []byte) (*Server, error) {
	r := newReader(b, kindServerState, "server state")
	s := NewServer(g)
	p := g.p
	corrupt := func(format string, a ...any) {
		if r.err == nil {
			r.err = fmt.Errorf("%w: server state: %s", ErrCorrupt, fmt.Sprintf(format, a...))
		}
	}
	if st := r.take(1); st != nil {
		s.step = int(st[0])
		if s.step > srvDone {
			corrupt("step %d", s.step)
		}
	}
	n := r.count(len(p.IDs), advertLen)
	prev := uint64(0)
	for i := 0; i < n && r.err == nil; i++ {
		var a KeyAdvert
		r.advert(&a, true)
		if _, ok := g.Index(a.ID); !ok || i > 0 && a.ID <= prev {
			corrupt("advert of %d", a.ID)
		}
		if a.CPK == a.SPK || s.keys[a.CPK] || s.keys[a.SPK] {
			corrupt("advert of %d reuses a key", a.ID)
		}
		prev = a.ID
		s.adverts[a.ID] = a
		s.keys[a.CPK], s.keys[a.SPK] = true, true
	}
	if r.err != nil || s.step < srvShareKeys {
		return finish(s, r)
	}
	s.shares = map[uint64][]EncryptedShare{}
	s.sent = map[uint64]bool{}
	for _, id := range r.ids("shared keys", func(id uint64) bool { _, ok := s.adverts[id]; return ok }) {
		s.sent[id] = true
	}
	n = r.count(len(p.IDs)*p.K, encShareLen)
	var last EncryptedShare
	for i := 0; i < n && r.err == nil; i++ {
		var e EncryptedShare
		e.From, e.To = r.u64(), r.u64()
		copy(e.Sealed[:], r.take(sealedLen))
		fi, ok1 := g.Index(e.From)
		ti, ok2 := g.Index(e.To)
		ordered := i == 0 || e.To > last.To || e.To == last.To && e.From > last.From
		if !ok1 || !ok2 || !s.sent[e.From] || !g.adjacent(fi, ti) || !ordered {
			corrupt("share %d→%d", e.From, e.To)
		}
		last = e
		s.shares[e.To] = append(s.shares[e.To], e)
	}
	if r.err != nil || s.step < srvMasked {
		return finish(s, r)
	}
	s.masked = map[uint64]bool{}
	for _, id := range r.ids("masked", func(id uint64) bool { return s.sent[id] }) {
		s.masked[id] = true
	}
	if d := r.count(MaxDim, 4); r.err == nil {
		if d != p.D {
			corrupt("sum of %d values, want %d", d, p.D)
		} else {
			s.sum = make([]uint32, d)
			v := r.take(4 * d)
			for i := range s.sum {
				s.sum[i] = binary.LittleEndian.Uint32(v[4*i:])
			}
		}
	}
	if r.err != nil || s.step < srvUnmask {
		return finish(s, r)
	}
	s.survive = sortedKeys(s.masked)
	s.revealed = map[uint64]bool{}
	s.bShares = map[uint64][]Share{}
	s.sShares = map[uint64][]Share{}
	s.recon = map[uint64]ShareKind{}
	for _, id := range r.ids("revealed", func(id uint64) bool { return s.masked[id] }) {
		s.revealed[id] = true
	}
	for _, kind := range []ShareKind{SelfMaskShare, MaskKeyShare} {
		m := s.bShares
		if kind == MaskKeyShare {
			m = s.sShares
		}
		owners := r.count(len(p.IDs), 12)
		prev := uint64(0)
		for i := 0; i < owners && r.err == nil; i++ {
			o := r.u64()
			if k, ok := s.kindOf(o); !ok || k != kind || i > 0 && o <= prev {
				corrupt("shares of kind %d for %d", kind, o)
			}
			prev = o
			c := r.count(p.K, 4+chunks*8)
			for j := 0; j < c && r.err == nil; j++ {
				var sh Share
				if v := r.take(4); v != nil {
					sh.X = binary.LittleEndian.Uint32(v)
				}
				for k := range sh.Y {
					sh.Y[k] = r.u64()
					if sh.Y[k] >= prime {
						corrupt("share value out of field")
					}
				}
				// The coordinate names the holder: a survivor that
				// answered, a neighbour of the owner, once.
				oi, _ := g.Index(o)
				if sh.X == 0 || int(sh.X) > len(p.IDs) || !s.revealed[p.IDs[sh.X-1]] || !g.adjacent(oi, int(sh.X-1)) ||
					slices.ContainsFunc(m[o], func(x Share) bool { return x.X == sh.X }) {
					corrupt("share coordinate %d", sh.X)
				}
				m[o] = append(m[o], sh)
			}
		}
	}
	owners := r.count(len(p.IDs), 9)
	prev = 0
	for i := 0; i < owners && r.err == nil; i++ {
		o := r.u64()
		var k ShareKind
		if v := r.take(1); v != nil {
			k = ShareKind(v[0])
		}
		if want, ok := s.kindOf(o); !ok || k != want || i > 0 && o <= prev {
			corrupt("reconstructed kind %d of %d", k, o)
		}
		prev = o
		s.recon[o] = k
	}
	return finish(s, r)
}

func finish(s *Server, r *reader) (*Server, error) {
	if err := r.end(); err != nil {
		return nil, err
	}
	return s, nil
}
