package client

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/fedzip/fedzip/gradient"
	"github.com/fedzip/fedzip/transport"
	"github.com/fedzip/fedzip/transport/fedzippb"
)

// Compressed downloads. When the task names a download codec the client
// keeps the model it holds and its version, in memory and in
// StateDir/model.bin, and asks for the deltas since that version
// (DownloadRequest.have_version and has_model, so that version 0, the
// initial model, can be named). It applies a DELTA with
// gradient.ApplyDownload to a copy of what it holds, after checking that
// the delta starts from that version; on any mismatch or decode error it
// asks again for the whole model (has_model false). It trains from the
// model so reconstructed, which is the coordinator's ClientModel, not its
// global model.

// errDownload marks a download the client refused (wrong version, kind or
// bytes).
var errDownload = errors.New("client: unusable model download")

func (r *Runtime) modelPath() string { return filepath.Join(r.cfg.StateDir, "model.bin") }

// fetch downloads the model of the task's version with its download codec
// and returns the header of what it applied and a copy of the model, which
// it also keeps as the held model. start is when the download began.
func (r *Runtime) fetch(ctx context.Context, task *fedzippb.Task, lim transport.Limits, start time.Time) (*fedzippb.ModelHeader, []float32, error) {
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
	if holds {
		have = r.heldVersion
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
		held := r.held
		if !holds {
			held = nil
		}
		model, err := applyDownload(held, have, want, h, body, n, lim)
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

// applyDownload returns the model a download leads to: the whole model of
// a FULL payload, or held (at version have, which must be the delta's
// base) plus the deltas of a DELTA payload. The result is a new slice and
// is at version want. Every check of the bytes returns an error wrapping
// errDownload; nothing panics.
func applyDownload(held []float32, have, want uint64, h *fedzippb.ModelHeader, body []byte, n int, lim transport.Limits) ([]float32, error) {
	if h.GetVersion() != want {
		return nil, fmt.Errorf("%w: model version %d, the task trains version %d", errDownload, h.GetVersion(), want)
	}
	switch h.GetKind() {
	case fedzippb.ModelKind_MODEL_KIND_FULL:
		m, err := decodeModel(body, n)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", errDownload, err)
		}
		return m, nil
	case fedzippb.ModelKind_MODEL_KIND_DELTA:
	default:
		return nil, fmt.Errorf("%w: model kind %v", errDownload, h.GetKind())
	}
	if held == nil || len(held) != n || h.GetBaseVersion() != have {
		return nil, fmt.Errorf("%w: delta from version %d, the client holds version %d", errDownload, h.GetBaseVersion(), have)
	}
	if have > math.MaxUint32 || want > math.MaxUint32 {
		return nil, fmt.Errorf("%w: version %d", errDownload, want)
	}
	m := slices.Clone(held)
	v, err := gradient.ApplyDownload(m, int(have), body, gradient.Limits{MaxParams: n, MaxBytes: lim.MaxModelBytes})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errDownload, err)
	}
	if uint64(v) != want {
		return nil, fmt.Errorf("%w: the deltas lead to version %d, the task trains version %d", errDownload, v, want)
	}
	if h.ModelCrc32C != nil {
		if got := gradient.ModelCRC(m); got != h.GetModelCrc32C() {
			return nil, fmt.Errorf("%w: the rebuilt model of version %d has crc32c %08x, the coordinator's %08x", errDownload, want, got, h.GetModelCrc32C())
		}
	}
	for i, x := range m {
		if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
			return nil, fmt.Errorf("%w: model parameter %d is %v after the deltas", errDownload, i, x)
		}
	}
	return m, nil
}

// forgetModel drops the held model, in memory and on disk.
func (r *Runtime) forgetModel() {
	r.held, r.heldVersion, r.heldLoaded = nil, 0, true
	os.Remove(r.modelPath())
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
		return nil, 0, fmt.Errorf("%w: model file of %d bytes, %d parameters need %d", errDownload, fi.Size(), n, modelFileSize(max(n, 0)))
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
		return nil, 0, fmt.Errorf("%w: model file of %d bytes, %d parameters need %d", errDownload, len(b), n, modelFileSize(max(n, 0)))
	}
	if string(b[:len(modelMagic)]) != modelMagic {
		return nil, 0, fmt.Errorf("%w: not a held-model file", errDownload)
	}
	body, sum := b[:len(b)-4], binary.LittleEndian.Uint32(b[len(b)-4:])
	if crc32.Checksum(body, castagnoli) != sum {
		return nil, 0, fmt.Errorf("%w: held-model file checksum", errDownload)
	}
	version := binary.LittleEndian.Uint64(b[len(modelMagic):])
	if binary.LittleEndian.Uint32(b[len(modelMagic)+8:]) != uint32(n) {
		return nil, 0, fmt.Errorf("%w: held-model file for another model size", errDownload)
	}
	m, err := decodeModel(body[len(modelMagic)+12:], n)
	if err != nil {
		return nil, 0, fmt.Errorf("%w: %w", errDownload, err)
	}
	return m, version, nil
}
