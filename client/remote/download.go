package remote

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/fedzip/fedzip/client"
	"github.com/fedzip/fedzip/gradient"
	"github.com/fedzip/fedzip/internal/boundedfile"
	"github.com/fedzip/fedzip/secagg"
	"github.com/fedzip/fedzip/transport"
	"github.com/fedzip/fedzip/transport/fedzippb"
)

// Compressed downloads. When the task names a download codec the client
// keeps the model it holds and its version, in memory and in
// StateDir/model.bin, and asks for the deltas since that version
// (DownloadRequest.have_version and has_model, so that version 0, the
// initial model, can be named). It applies a DELTA with
// client.ApplyDownload to a copy of what it holds, after checking that
// the delta starts from that version; on any mismatch or decode error it
// asks again for the whole model (has_model false). It trains from the
// model so reconstructed, which is the coordinator's ClientModel, not its
// global model.
//
// The first model costs nothing: a client that holds no model builds the
// initial one (version 0) itself, as the coordinator does, from the task's
// model and init_seed (TaskInitModel), and holds it when its checksum is
// the task's init_crc32c; it then asks for the deltas since version 0. On
// a mismatch (another build, a model it cannot build) or a task without
// the checksum (an older coordinator) it logs why and downloads the whole
// model, as before.

func (r *runner) modelPath() string { return filepath.Join(r.cfg.StateDir, "model.bin") }

// fetch downloads the model of the task's version with its download codec
// and returns the header of what it applied and a copy of the model, which
// it also keeps as the held model. start is when the download began.
func (r *runner) fetch(ctx context.Context, task *fedzippb.Task, lim transport.Limits, start time.Time) (*fedzippb.ModelHeader, []float32, error) {
	if sp, err := gradient.ParseSpec(task.GetDownloadCodec()); err == nil && sp.Values == gradient.Lattice {
		return r.fetchSync(ctx, task, lim, start)
	}
	n := int(task.GetModelParams())
	want := task.GetModelVersion()
	if !r.heldLoaded || len(r.held) != n && r.held != nil {
		var err error
		r.held, r.heldVersion, err = loadModel(r.modelPath(), n, r.cfg.MaxAbsParam)
		if err != nil {
			r.log.Warn("discarding the held model file", "file", r.modelPath(), "err", err)
			os.Remove(r.modelPath())
		}
		r.heldLoaded = true
	}
	have, holds := uint64(0), r.held != nil && r.heldVersion <= want
	held := r.held
	if holds {
		have = r.heldVersion
	} else if init := r.initModel(task); init != nil {
		held, holds = init, true
	}
	for {
		h, body, err := transport.DownloadModel(ctx, r.api, &fedzippb.DownloadRequest{ClientId: r.st.ClientID, HaveVersion: have, WantVersion: want, HasModel: holds}, lim, nil)
		if err != nil {
			return nil, nil, err
		}
		codec := "float32"
		if h.GetKind() == fedzippb.ModelKind_MODEL_KIND_DELTA {
			codec = task.GetDownloadCodec()
		}
		r.cfg.Metrics.DownloadedCodec(codec, len(body), time.Since(start))
		if !holds {
			held = nil
		}
		model, err := client.ApplyDownload(held, have, want, downloadOf(h, body), n, lim.MaxModelBytes)
		if err != nil {
			if !holds {
				// The whole model itself is unusable (the transport
				// checked its checksum: this is what the coordinator
				// sends).
				return nil, nil, fmt.Errorf("%w: %w", ErrModelRefused, err)
			}
			r.log.Warn("model delta refused; downloading the whole model", "have", have, "err", err)
			have, holds = 0, false
			continue
		}
		// A model out of bounds is neither trained on nor kept: the
		// client still holds what it held before.
		if err := checkValues(model, r.cfg.MaxAbsParam); err != nil {
			return nil, nil, fmt.Errorf("%w: version %d: %w", ErrModelRefused, h.GetVersion(), err)
		}
		// An empty delta (the client already holds the version) changes
		// nothing on disk.
		if r.held == nil || r.heldVersion != h.GetVersion() || h.GetKind() != fedzippb.ModelKind_MODEL_KIND_DELTA {
			if err := saveModel(r.modelPath(), model, h.GetVersion()); err != nil {
				return nil, nil, err
			}
		}
		r.held, r.heldVersion = model, h.GetVersion()
		return h, slices.Clone(model), nil
	}
}

// initModel returns the task's initial model (TaskInitModel) when the
// client can hold it as version 0, and nil when it cannot: the task
// carries no init_crc32c, or the model the client builds has another
// checksum. It logs why once per task model.
func (r *runner) initModel(task *fedzippb.Task) []float32 {
	init, err := TaskInitModel(task)
	if err != nil {
		key := fmt.Sprintf("%s/%dx%dx%d/%d/%d/%d", task.GetModel(), task.GetInputChannels(), task.GetInputHeight(), task.GetInputWidth(),
			task.GetInputDim(), task.GetClasses(), task.GetInitSeed())
		if r.initRefused != key {
			r.initRefused = key
			r.log.Warn("cannot hold the initial model; downloading the whole model", "err", err)
		}
		return nil
	}
	return init
}

// TaskInitModel returns the initial model (version 0) of a task's run, as
// the coordinator builds it: nn.Model.Init of TaskModel(t) with the task's
// init_seed. It checks the model's CRC-32C (gradient.ModelCRC) against the
// task's init_crc32c and returns an error wrapping ErrInitModel when the
// task has none or they differ (a build whose arithmetic differs, or
// another model), or an error wrapping ErrTaskRefused when the task's
// model cannot be built.
func TaskInitModel(t *fedzippb.Task) ([]float32, error) {
	if t.InitCrc32C == nil {
		return nil, fmt.Errorf("%w: the task announces no initial model", ErrInitModel)
	}
	m, err := TaskModel(t)
	if err != nil {
		return nil, err
	}
	init := make([]float32, m.NumParams())
	m.Init(init, t.GetInitSeed())
	if got := gradient.ModelCRC(init); got != t.GetInitCrc32C() {
		return nil, fmt.Errorf("%w: model %s with seed %d has crc32c %08x here, %08x at the coordinator", ErrInitModel, t.GetModel(), t.GetInitSeed(), got, t.GetInitCrc32C())
	}
	return init, nil
}

// downloadOf is the download h and body hold, for client.ApplyDownload.
func downloadOf(h *fedzippb.ModelHeader, body []byte) client.Download {
	d := client.Download{Version: h.GetVersion(), BaseVersion: h.GetBaseVersion(), CRC: h.ModelCrc32C, Body: body}
	switch h.GetKind() {
	case fedzippb.ModelKind_MODEL_KIND_FULL:
		d.Kind = client.DownloadFull
	case fedzippb.ModelKind_MODEL_KIND_DELTA:
		d.Kind = client.DownloadDelta
	}
	return d
}

// forgetModel drops the held model and replica, in memory and on disk.
func (r *runner) forgetModel() {
	r.held, r.heldVersion, r.heldLoaded = nil, 0, true
	os.Remove(r.modelPath())
	r.rep, r.repKey = nil, ""
	os.Remove(r.replicaPath())
}

// Lattice syncs. With the lattice download codec (gradient.Lattice) the
// client holds a gradient.Replica of the initial model it rebuilt
// (TaskInitModel), in memory and in StateDir/replica.bin, and asks for
// the sync since the version it holds: one message, from that version or
// from version 0, which the replica applies whatever the lag. A sync that
// does not apply, or leads to another model than the coordinator's
// checksum, is retried once from version 0 (a fresh replica), then as the
// whole model. A client that cannot rebuild the initial model cannot
// apply a sync from version 0: it downloads the whole model every time.

func (r *runner) replicaPath() string { return filepath.Join(r.cfg.StateDir, "replica.bin") }

// fetchSync is fetch for the lattice codec.
func (r *runner) fetchSync(ctx context.Context, task *fedzippb.Task, lim transport.Limits, start time.Time) (*fedzippb.ModelHeader, []float32, error) {
	n := int(task.GetModelParams())
	want := task.GetModelVersion()
	// The initial model is built only when the replica is made or reset.
	var init []float32
	initOf := func() []float32 {
		if init == nil {
			init = r.initModel(task)
		}
		return init
	}
	// The replica is the one of the task's initial model: repKey names it
	// (and, with rep nil, one the client could not rebuild).
	key := fmt.Sprintf("%s/%dx%dx%d/%d/%d/%d/%d/%v/%08x", task.GetModel(), task.GetInputChannels(), task.GetInputHeight(), task.GetInputWidth(),
		task.GetInputDim(), task.GetClasses(), n, task.GetInitSeed(), task.InitCrc32C != nil, task.GetInitCrc32C())
	if r.repKey != key {
		r.rep, r.repKey = nil, key
		if init := initOf(); init != nil {
			rep, err := loadReplica(r.replicaPath(), init)
			if err != nil {
				r.log.Warn("discarding the replica file", "file", r.replicaPath(), "err", err)
				os.Remove(r.replicaPath())
			}
			if rep == nil {
				if rep, err = newReplica(init); err != nil {
					return nil, nil, fmt.Errorf("%w: the initial model: %w", ErrModelRefused, err)
				}
			}
			r.rep = rep
		}
	}
	holds := r.rep != nil
	var have uint64
	if holds && uint64(r.rep.Version()) <= want {
		have = uint64(r.rep.Version())
	}
	for retried := false; ; {
		h, body, err := transport.DownloadModel(ctx, r.api, &fedzippb.DownloadRequest{ClientId: r.st.ClientID, HaveVersion: have, WantVersion: want, HasModel: holds}, lim, nil)
		if err != nil {
			return nil, nil, err
		}
		codec := "float32"
		if h.GetKind() == fedzippb.ModelKind_MODEL_KIND_DELTA {
			codec = task.GetDownloadCodec()
		}
		r.cfg.Metrics.DownloadedCodec(codec, len(body), time.Since(start))
		d := downloadOf(h, body)
		var model []float32
		if holds {
			model, err = client.ApplySync(r.rep, want, d, n, lim.MaxModelBytes)
		} else {
			model, err = client.ApplyDownload(nil, 0, want, d, n, lim.MaxModelBytes)
		}
		if err != nil {
			if !holds {
				return nil, nil, fmt.Errorf("%w: %w", ErrModelRefused, err)
			}
			// The replica may hold what the sync led to: start again
			// from the initial model, then, if that fails too, download
			// the whole model.
			r.log.Warn("model sync refused; asking again", "have", have, "from_version_0", !retried, "err", err)
			if r.rep, err = newReplica(initOf()); err != nil {
				return nil, nil, fmt.Errorf("%w: the initial model: %w", ErrModelRefused, err)
			}
			os.Remove(r.replicaPath())
			have, holds, retried = 0, !retried, true
			continue
		}
		if err := checkValues(model, r.cfg.MaxAbsParam); err != nil {
			// Neither trained on nor kept: the replica is read again from
			// its file, which still holds what the client held before.
			r.rep, r.repKey = nil, ""
			return nil, nil, fmt.Errorf("%w: version %d: %w", ErrModelRefused, h.GetVersion(), err)
		}
		switch {
		case holds && h.GetKind() == fedzippb.ModelKind_MODEL_KIND_FULL:
			// A replica holds only what it reconstructs: the next sync
			// is from version 0.
			if r.rep, err = newReplica(initOf()); err != nil {
				return nil, nil, fmt.Errorf("%w: the initial model: %w", ErrModelRefused, err)
			}
			os.Remove(r.replicaPath())
		case holds && len(body) > 0:
			if err := writeAtomic(r.replicaPath(), r.rep.AppendBinary(nil)); err != nil {
				return nil, nil, err
			}
		}
		return h, model, nil
	}
}

// loadReplica reads the replica saved at path for the initial model init.
// A missing file gives nil and no error; a file too large for the model,
// damaged, or for another initial model gives nil and an error saying
// why: the client then starts from the initial model.
func loadReplica(path string, init []float32) (*gradient.Replica, error) {
	fi, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	// A FIFO would block the client, a device such as /dev/zero (size 0)
	// read without end: only a regular file is read.
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: replica file is not a regular file (%v)", client.ErrDownload, fi.Mode().Type())
	}
	// Counts are at most 4 bytes each as varints, a whole model 4; the
	// tensor table at most 9 bytes a tensor.
	limit := int64(5*len(init) + 1<<20)
	if fi.Size() > limit {
		return nil, fmt.Errorf("%w: replica file of %d bytes, over %d for %d parameters", client.ErrDownload, fi.Size(), limit, len(init))
	}
	// The file may have been replaced or grown since: read at most limit.
	b, err := boundedfile.Read(path, limit)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", client.ErrDownload, err)
	}
	rep, err := gradient.ReadReplica(init, b, gradient.Limits{MaxParams: len(init), MaxBytes: len(b)})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", client.ErrDownload, err)
	}
	rep.SetSupportFunc(secagg.Supports(len(init)))
	return rep, nil
}

// newReplica returns a replica holding the initial model init, which
// applies seeded syncs (support=seeded) as well as explicit ones: it
// rebuilds a sync's supports from their seeds with secagg.Supports, the
// supports' length read from the sync and bounded there (see
// gradient.SupportFunc), so it needs nothing of the run.
func newReplica(init []float32) (*gradient.Replica, error) {
	rep, err := gradient.NewReplica(init)
	if err != nil {
		return nil, err
	}
	rep.SetSupportFunc(secagg.Supports(len(init)))
	return rep, nil
}

// The held model's file: magic, version (uint64), parameter count
// (uint32), the parameters as little-endian float32, and the CRC-32C of
// everything before it.
const modelMagic = "FZHM"

func saveModel(path string, m []float32, version uint64) error {
	b := make([]byte, 0, len(modelMagic)+12+4*len(m)+4)
	b = append(b, modelMagic...)
	b = binary.LittleEndian.AppendUint64(b, version)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(m)))
	b = gradient.AppendFloat32s(b, m)
	b = binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
	return writeAtomic(path, b)
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// loadModel reads a model of n parameters saved by saveModel. A missing
// file gives nil and no error; a damaged or mis-sized file, or one with a
// value that is not finite or beyond bound in magnitude, gives nil and an
// error saying why: the client then downloads the whole model. Version 0,
// the initial model, is a model like any other.
func loadModel(path string, n int, bound float32) ([]float32, uint64, error) {
	fi, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, err
	}
	if n <= 0 || fi.Size() != int64(modelFileSize(n)) {
		return nil, 0, fmt.Errorf("%w: model file of %d bytes, %d parameters need %d", client.ErrDownload, fi.Size(), n, modelFileSize(max(n, 0)))
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, 0, err
	}
	m, version, err := parseModelFile(b, n)
	if err != nil {
		return nil, 0, err
	}
	if err := checkValues(m, bound); err != nil {
		return nil, 0, fmt.Errorf("%w: held model of version %d: %w", ErrModelRefused, version, err)
	}
	return m, version, nil
}

// modelFileSize is the size of saveModel's file for n parameters.
func modelFileSize(n int) int { return len(modelMagic) + 12 + 4*n + 4 }

// parseModelFile decodes the bytes of saveModel's file for a model of n
// parameters. It checks the size before it allocates, then the magic, the
// checksum, the parameter count and that every value is finite, and
// returns an error, never panics, on any bytes.
func parseModelFile(b []byte, n int) ([]float32, uint64, error) {
	if n <= 0 || len(b) != modelFileSize(n) {
		return nil, 0, fmt.Errorf("%w: model file of %d bytes, %d parameters need %d", client.ErrDownload, len(b), n, modelFileSize(max(n, 0)))
	}
	if string(b[:len(modelMagic)]) != modelMagic {
		return nil, 0, fmt.Errorf("%w: not a held-model file", client.ErrDownload)
	}
	body, sum := b[:len(b)-4], binary.LittleEndian.Uint32(b[len(b)-4:])
	if crc32.Checksum(body, castagnoli) != sum {
		return nil, 0, fmt.Errorf("%w: held-model file checksum", client.ErrDownload)
	}
	version := binary.LittleEndian.Uint64(b[len(modelMagic):])
	if binary.LittleEndian.Uint32(b[len(modelMagic)+8:]) != uint32(n) {
		return nil, 0, fmt.Errorf("%w: held-model file for another model size", client.ErrDownload)
	}
	m, err := client.ParseModel(body[len(modelMagic)+12:], n)
	if err != nil {
		return nil, 0, fmt.Errorf("%w: %w", client.ErrDownload, err)
	}
	return m, version, nil
}
