package sim

import (
	"fmt"

	"github.com/fedzip/fedzip/gradient"
	"github.com/fedzip/fedzip/nn"
	"github.com/fedzip/fedzip/round"
	"github.com/fedzip/fedzip/runspec"
	"github.com/fedzip/fedzip/secagg"
)

// downloads is the server side of a compressed download direction: a
// gradient.ServerEncoder and, per client, the model version it last
// received. It is driven from Run's goroutine only.
//
// Memory: the ServerEncoder (12 bytes per parameter, 8 more with the
// lattice codec, plus at most MaxLag encoded deltas), one scratch message,
// and 4 bytes per client.
type downloads struct {
	srv *gradient.ServerEncoder
	// have[part(id)] is the version client id holds: 0 (the initial
	// model) before its first download when clients can rebuild the
	// initial model, else -1 (none).
	have []int32
	buf  []byte
	// lattice says the codec is the lattice codec: a client that holds a
	// model is sent one sync, never the whole model.
	lattice bool
	// seeded says the codec is the seeded lattice (support=seeded): each
	// round is published with its secure aggregation support, drawn from
	// the run's TaskSeed seed into support.
	seeded  bool
	seed    uint64
	support []int32
	// sent, if set (tests), sees every download: the client, the version
	// it held, the bytes it was sent and the model it then holds.
	sent func(id round.ClientID, have int, msg []byte, model []float32)
}

// newDownloads returns the download side for cfg.DownloadCodec, or nil
// for a dense download ("" or "none").
//
// The first model costs nothing, as for a coordinator's clients
// (remote.TaskInitModel): when init is bit for bit model's initialisation
// with the run's InitSeed, which a client rebuilds and checks against the
// checksum its task announces, every client holds version 0 from the
// start. Otherwise (an init the clients cannot rebuild) a client's first
// download is the whole model.
func newDownloads(cfg Config, model nn.Model, init []float32, clients int) (*downloads, error) {
	if !cfg.DownloadOn() {
		return nil, nil
	}
	spec, err := runspec.DownloadSpec(cfg.DownloadCodec)
	if err != nil {
		return nil, fmt.Errorf("sim: %w", err)
	}
	if spec.Seeded {
		if sup, err := runspec.ParseSecAggSupport(supportOf(cfg.SecAgg)); cfg.SecAgg == nil || err != nil || sup.Announced {
			return nil, fmt.Errorf("sim: --download-codec %s: needs --secagg with a random support", cfg.DownloadCodec)
		}
	}
	srv, err := gradient.NewServerEncoder(spec, init, cfg.DownloadLag())
	if err != nil {
		return nil, fmt.Errorf("sim: download codec: %w", err)
	}
	// The lattice codec steps each tensor on its own (as a coordinator's
	// FSM does); other codecs ignore the sizes.
	ts := model.Layout().Tensors
	sizes := make([]int, len(ts))
	for i, t := range ts {
		sizes[i] = t.Size()
	}
	if err := srv.SetTensors(sizes); err != nil {
		return nil, fmt.Errorf("sim: download codec: %w", err)
	}
	d := &downloads{srv: srv, have: make([]int32, clients), sent: cfg.downloadHook, lattice: spec.Values == gradient.Lattice}
	if spec.Seeded {
		// Each version is published with its round's support, keyed by
		// the support's seed (secAggRun.open draws the same).
		d.seeded, d.seed = true, cfg.TaskSeed
		d.support = make([]int32, cfg.SecAgg.SupportLen(len(init)))
		srv.SetSupportFunc(secagg.Supports(len(init)))
	}
	seeded := make([]float32, len(init))
	model.Init(seeded, cfg.InitSeed)
	if gradient.ModelCRC(seeded) != gradient.ModelCRC(init) {
		for i := range d.have {
			d.have[i] = -1
		}
	}
	return d, nil
}

// model returns the model the clients reconstruct, at the current version.
func (d *downloads) model() []float32 { return d.srv.Model() }

// send returns the size of what client id receives to reach the current
// version from the one it holds (exactly the bytes AppendUpdate would
// write: the deltas since, or the full model) and records that it holds
// it. The bytes are built only for the test hook.
func (d *downloads) send(id round.ClientID) int64 {
	have := int(d.have[part(id)])
	d.have[part(id)] = int32(d.srv.Version())
	if have < 0 && d.lattice {
		// A client that cannot rebuild the initial model cannot apply a
		// sync from version 0, nor one from a whole model it was sent: it
		// gets the whole model every time (as remote's runtime does).
		d.have[part(id)] = -1
		d.buf = d.srv.AppendFull(d.buf[:0])
		if d.sent != nil {
			d.sent(id, have, d.buf, d.srv.Model())
		}
		return int64(len(d.buf))
	}
	if d.sent == nil {
		size, _ := d.srv.UpdateSize(have)
		return int64(size)
	}
	d.buf, _ = d.srv.AppendUpdate(d.buf[:0], have)
	d.sent(id, have, d.buf, d.srv.Model())
	return int64(len(d.buf))
}

// publish makes global the next version, encoded with the run's download
// seed for the round (runspec.Spec.DownloadSeed, as a coordinator does).
// With the seeded codec the version is published with the round's secure
// aggregation support, keyed by its seed (the key a client rebuilds it
// from, as a coordinator's clients are sent SupportSeed).
func (d *downloads) publish(global []float32, run runspec.Spec, roundNo int) error {
	var err error
	if d.seeded {
		key := supportSeed(d.seed, roundNo)
		secagg.Support(d.support, len(global), key)
		_, err = d.srv.PublishSupport(global, run.DownloadSeed(roundNo), key, d.support)
	} else {
		_, err = d.srv.Publish(global, run.DownloadSeed(roundNo))
	}
	if err != nil {
		return fmt.Errorf("sim: publishing round %d: %w", roundNo, err)
	}
	return nil
}

// supportSeed is the seed of round r's random secure aggregation support
// in a run with task seed seed (secAggRun.open's).
func supportSeed(seed uint64, r int) uint64 { return round.TaskSeed(seed^saltSupport, r, 0) }

func supportOf(sa *runspec.SecAgg) string {
	if sa == nil {
		return ""
	}
	return sa.Support
}
