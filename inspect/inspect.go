// Package inspect describes what a fedzip file holds, told apart by its
// first bytes: an encoded update or download stream (gradient's wire
// format, FZUP), a model file (checkpoint, FZMODEL) or a signed device
// model (deliver, FZM). It decodes with the packages' own readers, so a
// file that does not check is described as far as it reads and the error
// says where it stops; it never panics on any input (FuzzDescribe).
//
// 'fedzip inspect' prints an Inspection as a table (WriteTable) or JSON.
package inspect

import (
	"bytes"
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/fedzip/fedzip/checkpoint"
	"github.com/fedzip/fedzip/deliver"
	"github.com/fedzip/fedzip/gradient"
)

// MaxFileBytes bounds the file Describe reads (a device model's limit).
const MaxFileBytes = 1 << 30

// MaxMessages bounds the messages of a stream Describe describes, and so
// its memory: a file of MaxFileBytes could hold 40 million messages of a
// one-parameter update, each described in a few hundred bytes. A download
// stream holds at most runspec.MaxDownloadMaxLag+1.
const MaxMessages = 1 << 12

// ErrUnknown is the error for a file of no kind Describe knows.
var ErrUnknown = errors.New("not a fedzip file: want an encoded update (FZUP), a model file (FZMODEL) or a device model (FZM)")

// Inspection is what a file holds: one of Update, Model and Device is set.
type Inspection struct {
	File   string   `json:"file"`
	Kind   string   `json:"kind"`
	Bytes  int      `json:"bytes"`
	Update []Update `json:"messages,omitempty"`
	Model  *Model   `json:"model,omitempty"`
	Device *Device  `json:"device_model,omitempty"`
	// Error is why the file does not check, if it was described anyway.
	Error string `json:"error,omitempty"`
}

// Update is one encoded message of an update or a download stream.
type Update struct {
	Offset      int    `json:"offset"`
	Size        int    `json:"size"`
	WireVersion int    `json:"wire_version"`
	Full        bool   `json:"full_model,omitempty"`
	Selection   string `json:"selection"`
	Format      string `json:"format"`
	Bits        int    `json:"bits"`
	Bucket      int    `json:"bucket,omitempty"`
	N           int    `json:"n"`
	K           int    `json:"k"`
	// Round is an upload's round or the model version a download leads
	// to; Base the version a download delta applies to.
	Round int `json:"round"`
	Base  int `json:"base"`
	// Run is the run ID an update names (hex), empty when it names none.
	Run      string    `json:"run_id,omitempty"`
	Sections []Section `json:"sections"`
	// IndexBits and ValueBits are bits per kept coordinate: the indices
	// section, and the values with their scales.
	IndexBits float64 `json:"index_bits_per_kept"`
	ValueBits float64 `json:"value_bits_per_kept"`
	CRC       string  `json:"crc"`
	CRCOK     bool    `json:"crc_ok"`
}

// Section is one section of an encoded message.
type Section struct {
	Kind   string `json:"kind"`
	Coding string `json:"coding"`
	Bytes  int    `json:"bytes"`
}

// Model describes a model file.
type Model struct {
	FormatVersion int                     `json:"format_version"`
	Model         string                  `json:"model"`
	Params        int                     `json:"params"`
	Round         int                     `json:"round"`
	Version       uint64                  `json:"version"`
	Dataset       string                  `json:"dataset,omitempty"`
	Tensors       []checkpoint.TensorInfo `json:"tensors"`
	Extra         map[string]string       `json:"extra,omitempty"`
	CRC           string                  `json:"crc"`
	CRCOK         bool                    `json:"crc_ok"`
}

// Device describes a signed device model.
type Device struct {
	Meta      map[string]string `json:"meta,omitempty"`
	Input     int               `json:"input"`
	Classes   int               `json:"classes"`
	Params    int               `json:"params"`
	Layers    int               `json:"layers"`
	Tensors   []Tensor          `json:"tensors"`
	CRC       string            `json:"crc"`
	CRCOK     bool              `json:"crc_ok"`
	Signature string            `json:"signature"`
}

// Tensor is one tensor of a device model and the bytes it takes.
type Tensor struct {
	Name     string `json:"name"`
	Shape    []int  `json:"shape"`
	Sparse   bool   `json:"sparse,omitempty"`
	Stored   int    `json:"stored"`
	Encoding string `json:"encoding"`
	Coding   string `json:"coding,omitempty"`
	Bits     int    `json:"bits,omitempty"`
	Index    int    `json:"index_bytes,omitempty"`
	Values   int    `json:"value_bytes"`
	Total    int    `json:"bytes"`
}

// Describe describes data, the content of the file name. A device
// model's signature is verified if pub is not nil. If the file does not
// check but its kind and first part read, Describe returns the
// description with Error set and the error; if nothing can be described,
// it returns nil and the error. Errors name the file.
func Describe(name string, data []byte, pub ed25519.PublicKey) (*Inspection, error) {
	in := &Inspection{File: name, Bytes: len(data)}
	var err error
	switch {
	case bytes.HasPrefix(data, []byte(gradient.Magic)):
		err = describeUpdate(in, data)
	case bytes.HasPrefix(data, []byte(checkpoint.Magic)):
		err = describeModel(in, data)
	case bytes.HasPrefix(data, []byte(deliver.Magic)):
		err = describeDevice(in, data, pub)
	default:
		return nil, fmt.Errorf("%s: %w (it starts with %q)", name, ErrUnknown, data[:min(len(data), 8)])
	}
	if err == nil {
		return in, nil
	}
	err = fmt.Errorf("%s: %w", name, err)
	if in.Kind == "" {
		return nil, err
	}
	in.Error = err.Error()
	return in, err
}

// describeUpdate reads the messages of an update or download stream one
// by one. A message whose checksum fails is described (its header is
// readable) and ends the walk with the error.
func describeUpdate(in *Inspection, data []byte) error {
	var ferr error
	for off := 0; off < len(data); {
		if len(in.Update) == MaxMessages {
			ferr = fmt.Errorf("more than %d messages: the %d bytes from byte %d are not described", MaxMessages, len(data)-off, off)
			break
		}
		h, err := gradient.ReadStreamHeader(data[off:], gradient.Limits{})
		if err != nil && !errors.Is(err, gradient.ErrChecksum) {
			ferr = fmt.Errorf("message at byte %d: %w", off, err)
			break
		}
		if err != nil {
			// The header's layout checked but not its meaning: show the
			// raw selection, format and bits bytes.
			h.Selection, h.Format, h.Bits = gradient.Selection(data[off+6]), gradient.Format(data[off+7]), int(data[off+8])
		}
		u := Update{Offset: off, Size: h.Size, WireVersion: h.Version, Full: h.Full(), Selection: h.Selection.String(),
			Format: h.Format.String(), Bits: h.Bits, Bucket: h.Bucket, N: h.N, K: h.K, Round: h.Round, Base: h.Base,
			Run: h.Run.String(), CRC: fmt.Sprintf("%08x", h.CRC), CRCOK: err == nil}
		for _, s := range h.Sections[:h.NumSections] {
			u.Sections = append(u.Sections, Section{Kind: s.Kind.String(), Coding: s.Coding.String(), Bytes: s.Length})
			bits := 8 * float64(s.Length) / float64(max(h.K, 1))
			if s.Kind == gradient.SectionIndices {
				u.IndexBits += bits
			} else {
				u.ValueBits += bits
			}
		}
		in.Update = append(in.Update, u)
		if err != nil {
			ferr = fmt.Errorf("message at byte %d: %w", off, err)
			break
		}
		off += h.Size
	}
	if len(in.Update) == 0 {
		return ferr
	}
	in.Kind = "encoded update"
	if len(in.Update) > 1 || in.Update[0].Full || in.Update[0].Base > 0 {
		in.Kind = fmt.Sprintf("download stream of %d messages", len(in.Update))
	}
	return ferr
}

func describeModel(in *Inspection, data []byte) error {
	m, err := checkpoint.Read(bytes.NewReader(data))
	if err != nil {
		return err
	}
	in.Kind = "model file"
	in.Model = &Model{FormatVersion: int(binary.LittleEndian.Uint16(data[len(checkpoint.Magic):])), Model: m.Header.Model,
		Params: len(m.Params), Round: m.Header.Round, Version: m.Header.Version, Dataset: m.Header.Dataset,
		Tensors: m.Header.Tensors, Extra: m.Header.Extra,
		CRC: fmt.Sprintf("%08x", binary.LittleEndian.Uint32(data[len(data)-4:])), CRCOK: true}
	return nil
}

// describeDevice describes a device model; with pub it also verifies the
// signature, and a failure is the error.
func describeDevice(in *Inspection, data []byte, pub ed25519.PublicKey) error {
	u, err := deliver.ReadUnverified(data, deliver.Limits{MaxFileBytes: MaxFileBytes})
	if err != nil {
		return err
	}
	f := u.File
	in.Kind = "device model"
	d := &Device{Meta: f.Meta, Input: f.Input, Classes: f.Classes(), Params: f.Params(), Layers: len(f.Layers),
		CRC: fmt.Sprintf("%08x", u.CRC), CRCOK: true, Signature: "present, not verified (give --pubkey)"}
	if bytes.Count(u.Signature, []byte{0}) == len(u.Signature) {
		d.Signature = "absent (zero bytes)"
	}
	var verr error
	if pub != nil {
		if _, verr = deliver.ReadLimits(data, pub, deliver.Limits{MaxFileBytes: MaxFileBytes}); verr == nil {
			d.Signature = "verified"
		} else {
			d.Signature = "DOES NOT VERIFY with the given key"
		}
	}
	for i := range f.Tensors {
		t, sz := &f.Tensors[i], u.Tensors[i]
		ti := Tensor{Name: t.Name, Shape: t.Shape, Sparse: t.Sparse, Stored: t.Stored(), Encoding: t.Encoding.String(),
			Index: sz.Index, Values: sz.Values, Total: sz.Total}
		switch t.Encoding {
		case deliver.Int8:
			ti.Coding, ti.Bits = t.Coding.String(), 8
		case deliver.Codebook:
			ti.Coding, ti.Bits = t.Coding.String(), t.Bits
		}
		d.Tensors = append(d.Tensors, ti)
	}
	in.Device = d
	return verr
}
