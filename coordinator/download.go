package coordinator

import (
	"sync"

	"github.com/fedzip/fedzip/gradient"
	"github.com/fedzip/fedzip/transport"
	"slices"
)

// Download is what a client is sent to hold a model version: the encoded
// deltas from the version it holds, or the whole model.
type Download struct {
	// Payload is, when Delta, the download codec's messages from Base to
	// Version, concatenated (gradient.ApplyDownload applies them);
	// otherwise the whole model as little-endian float32. Payload may be
	// empty: a delta to the version the client holds.
	Payload []byte
	Delta   bool
	// Base is the version a delta applies to (0 for a whole model), and
	// Version the version the payload leads to.
	Base, Version uint64
	// Codec is the download codec's spec for a delta, "float32" for a
	// whole model: the label of the bytes in metrics.
	Codec string
	// ModelCRC, for a delta, is gradient.ModelCRC of the model it leads to.
	ModelCRC uint32
	// PayloadCRC is the CRC-32C of Payload (transport.Checksum), which
	// the stream's header announces.
	PayloadCRC uint32
}

// ServeDownload returns the download for a client that holds model
// version have (when holds; version 0 is the initial model), or false
// before init. The payload may be shared with other downloads of the same
// version: callers must not modify it.
//
// Without a download codec it is always the whole global model, as bytes
// identical to those Download sent before download codecs existed. With
// one it is the encoded deltas since have; or the whole model clients
// reconstruct (ClientModel) when the client holds none, when have is from
// the future or more than the kept deltas behind, or when the deltas would
// be at least as large as the model. With the lattice codec a client that
// holds a model always gets one message (Base says from which version):
// the composed deltas since have while they are kept, else a sync from
// version 0 (the counts against the initial model, which the client
// rebuilds from the run's seed), never the whole model. Given the same
// applied log, every replica returns the same bytes. A whole model is serialised once per
// version and shared, so that the clients of a round do not each cost two
// copies of the model.
func (f *FSM) ServeDownload(have uint64, holds bool) (Download, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.mach == nil {
		return Download{}, false
	}
	version := f.mach.Version()
	// The encoder lags the FSM only if publishing failed (see publish):
	// then everyone gets the global model.
	if d := f.down; d != nil && uint64(d.Version()) == version {
		if holds && f.lattice && have > version {
			// A lattice sync from version 0 rebuilds any model.
			have = 0
		}
		if holds && have <= version {
			// (A lattice sync is never the whole model: it is composed
			// once, by AppendUpdate.)
			full := false
			if !f.lattice {
				_, full = d.UpdateSize(int(have))
			}
			if !full {
				p, _ := d.AppendUpdate(nil, int(have))
				base, err := have, error(nil)
				if f.lattice && len(p) > 0 {
					// One message, from have or from version 0.
					var h gradient.Header
					h, err = gradient.ReadHeader(p, gradient.Limits{MaxParams: f.n, MaxBytes: len(p)})
					base = uint64(h.Base)
				}
				if err == nil { // else (not expected) the whole model
					_, model := f.whole.of(d, version, d.Model())
					return Download{Payload: p, Delta: true, Base: base, Version: version, Codec: f.cfg.DownloadCodec,
						ModelCRC: model, PayloadCRC: transport.Checksum(p)}, true
				}
			}
		}
		p, crc := f.whole.of(d, version, d.Model())
		return Download{Payload: p, Version: version, Codec: "float32", ModelCRC: crc, PayloadCRC: crc}, true
	}
	p, crc := f.whole.of(nil, version, f.mach.Global())
	return Download{Payload: p, Version: version, Codec: "float32", ModelCRC: crc, PayloadCRC: crc}, true
}

// wholeModel caches the little-endian float32 bytes of one model version,
// the global model (down nil) or the download encoder's, and their CRC-32C
// (which is also gradient.ModelCRC of the model): every whole-model
// download of the version shares the bytes, and every delta download leading
// to it announces the checksum, computed once.
type wholeModel struct {
	mu      sync.Mutex
	down    *gradient.ServerEncoder
	version uint64
	payload []byte
	crc     uint32
}

// reset forgets the cached bytes (a snapshot replaced the state).
func (c *wholeModel) reset() {
	c.mu.Lock()
	c.down, c.version, c.payload, c.crc = nil, 0, nil, 0
	c.mu.Unlock()
}

// of returns the bytes of model, the model of down (or the global model
// when down is nil) at version, and their CRC-32C. The caller holds the
// FSM's read lock, so that model does not change meanwhile.
func (c *wholeModel) of(down *gradient.ServerEncoder, version uint64, model []float32) ([]byte, uint32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.payload == nil || c.down != down || c.version != version {
		c.down, c.version, c.payload = down, version, gradient.AppendFloat32s(nil, model)
		c.crc = transport.Checksum(c.payload)
	}
	return c.payload, c.crc
}

// ClientModel returns a copy of the model clients train from and its
// version, or nil before init: with a download codec the model they
// reconstruct from the deltas they download; otherwise the global model.
func (f *FSM) ClientModel() ([]float32, uint64) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.mach == nil {
		return nil, 0
	}
	if d := f.down; d != nil && uint64(d.Version()) == f.mach.Version() {
		return slices.Clone(d.Model()), f.mach.Version()
	}
	return slices.Clone(f.mach.Global()), f.mach.Version()
}
