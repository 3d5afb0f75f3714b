package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"sort"
	"strconv"
	"text/tabwriter"

	"github.com/fedzip/fedzip/checkpoint"
	"github.com/fedzip/fedzip/deliver"
	"github.com/fedzip/fedzip/gradient"
)

const inspectAbout = `Prints what a fedzip file holds, told apart by its first bytes:
  FZUP      an encoded update (gradient wire format), or a download stream of
            several: codec parameters, n, k, section sizes, bits per kept
            coordinate for indices and values, versions, checksum;
  FZMODEL   a model file (simulate --save-model, the coordinator's state):
            architecture, parameters, round and version, metadata, checksum;
  FZM       a signed device model (.fzm): tensors, encodings, sizes and the
            signature, verified only with --pubkey.
A file of another kind, or one that does not check, exits with status 1.`

const inspectExample = `  fedzip inspect fedzip-model.fzm --pubkey fedzip-model.pub.pem
  fedzip inspect model.fzmodel -o json
  fedzip inspect client-state/pending.bin      # a client's unacknowledged update
`

// inspectLimit bounds the file inspect reads.
const inspectLimit = 1 << 30

func runInspect(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("inspect", flag.ContinueOnError)
	pubPath := fs.String("pubkey", "", "ed25519 public key (PEM) to verify a device model's signature (default: not verified)")
	output := fs.String("o", "table", "output format: table or json")
	addConfigFlag(fs)
	fs.SetOutput(io.Discard)
	// FILE may come before or after the flags.
	var files []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fmt.Fprintf(stdout, "Usage: fedzip inspect [flags] FILE\n\n%s\n\nFlags:\n", inspectAbout)
				printDefaults(fs, stdout)
				fmt.Fprintf(stdout, "\nExample:\n%s", inspectExample)
				return exitOK
			}
			return finish("inspect", stderr, usagef("%v", err))
		}
		if fs.NArg() == 0 {
			break
		}
		files = append(files, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if code, done := configure(ctx, fs, "inspect", stderr); done {
		return code
	}
	switch {
	case len(files) != 1:
		return finish("inspect", stderr, usagef("want one FILE, got %d", len(files)))
	case *output != "table" && *output != "json":
		return finish("inspect", stderr, usagef("-o %q: want table or json", *output))
	}
	return finish("inspect", stderr, inspect(files[0], *pubPath, *output, stdout))
}

// inspection is what inspect prints: one of Update, Model and Device.
type inspection struct {
	File   string       `json:"file"`
	Kind   string       `json:"kind"`
	Bytes  int          `json:"bytes"`
	Update []updateInfo `json:"messages,omitempty"`
	Model  *modelInfo   `json:"model,omitempty"`
	Device *deviceInfo  `json:"device_model,omitempty"`
	Error  string       `json:"error,omitempty"`
	table  func(w io.Writer)
}

type updateInfo struct {
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
	Run      string        `json:"run_id,omitempty"`
	Sections []sectionInfo `json:"sections"`
	// IndexBits and ValueBits are bits per kept coordinate: the indices
	// section, and the values with their scales.
	IndexBits float64 `json:"index_bits_per_kept"`
	ValueBits float64 `json:"value_bits_per_kept"`
	CRC       string  `json:"crc"`
	CRCOK     bool    `json:"crc_ok"`
}

type sectionInfo struct {
	Kind   string `json:"kind"`
	Coding string `json:"coding"`
	Bytes  int    `json:"bytes"`
}

type modelInfo struct {
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

type deviceInfo struct {
	Meta      map[string]string `json:"meta,omitempty"`
	Input     int               `json:"input"`
	Classes   int               `json:"classes"`
	Params    int               `json:"params"`
	Layers    int               `json:"layers"`
	Tensors   []tensorInfo      `json:"tensors"`
	CRC       string            `json:"crc"`
	CRCOK     bool              `json:"crc_ok"`
	Signature string            `json:"signature"`
}

type tensorInfo struct {
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

// errUnknownFile is the error for a file of no kind inspect knows.
var errUnknownFile = errors.New("not a fedzip file: want an encoded update (FZUP), a model file (FZMODEL) or a device model (FZM)")

func inspect(path, pubPath, output string, stdout io.Writer) error {
	data, err := readBounded(path, inspectLimit)
	if err != nil {
		return err
	}
	in := &inspection{File: path, Bytes: len(data)}
	var ferr error
	switch {
	case bytes.HasPrefix(data, []byte(gradient.Magic)):
		ferr = inspectUpdate(in, data)
	case bytes.HasPrefix(data, []byte(checkpoint.Magic)):
		ferr = inspectModel(in, data)
	case bytes.HasPrefix(data, []byte(deliver.Magic)):
		var pub ed25519.PublicKey
		if pubPath != "" {
			if pub, err = readPublicKey(pubPath); err != nil {
				return err
			}
		}
		ferr = inspectDevice(in, data, pub)
	default:
		return fmt.Errorf("%s: %w (it starts with %q)", path, errUnknownFile, data[:min(len(data), 8)])
	}
	if ferr != nil && in.table == nil {
		return fmt.Errorf("%s: %w", path, ferr)
	}
	if ferr != nil {
		in.Error = ferr.Error()
	}
	if output == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(in); err != nil {
			return err
		}
	} else {
		tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintf(tw, "%s\t%s, %d bytes\n", path, in.Kind, in.Bytes)
		in.table(tw)
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if ferr != nil {
		return fmt.Errorf("%s: %w", path, ferr)
	}
	return nil
}

// inspectUpdate reads the messages of an update or download stream one by
// one. A message whose checksum fails is described (its header is
// readable) and ends the walk with the error.
func inspectUpdate(in *inspection, data []byte) error {
	var ferr error
	for off := 0; off < len(data); {
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
		u := updateInfo{Offset: off, Size: h.Size, WireVersion: h.Version, Full: h.Full(), Selection: h.Selection.String(),
			Format: h.Format.String(), Bits: h.Bits, Bucket: h.Bucket, N: h.N, K: h.K, Round: h.Round, Base: h.Base,
			Run: h.Run.String(), CRC: fmt.Sprintf("%08x", h.CRC), CRCOK: err == nil}
		for _, s := range h.Sections[:h.NumSections] {
			u.Sections = append(u.Sections, sectionInfo{Kind: s.Kind.String(), Coding: s.Coding.String(), Bytes: s.Length})
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
	in.table = func(w io.Writer) {
		for _, u := range in.Update {
			if len(in.Update) > 1 {
				fmt.Fprintf(w, "message at byte %d\t%d bytes\n", u.Offset, u.Size)
			}
			row := func(k, v string) { fmt.Fprintf(w, "  %s\t%s\n", k, v) }
			row("wire version", strconv.Itoa(u.WireVersion))
			kind := fmt.Sprintf("%s, %s values", u.Selection, u.Format)
			if u.Format == gradient.FormatCodes.String() {
				kind += fmt.Sprintf(" of %d bits", u.Bits)
				if u.Bucket > 0 {
					kind += fmt.Sprintf(", a scale per %d", u.Bucket)
				}
			}
			if u.Full {
				kind = "full model, " + kind
			}
			row("codec", kind)
			row("n, k", fmt.Sprintf("%d, %d (%.4g%% kept)", u.N, u.K, 100*float64(u.K)/float64(max(u.N, 1))))
			row("round / version", fmt.Sprintf("%d (base %d)", u.Round, u.Base))
			if u.Run != "" {
				row("run", u.Run)
			}
			for _, s := range u.Sections {
				row(s.Kind+" section", fmt.Sprintf("%d bytes, %s", s.Bytes, s.Coding))
			}
			row("bits per kept coordinate", fmt.Sprintf("%.3f indices + %.3f values = %.3f", u.IndexBits, u.ValueBits, u.IndexBits+u.ValueBits))
			row("crc-32c", crcText(u.CRC, u.CRCOK))
		}
	}
	return ferr
}

func crcText(crc string, ok bool) string {
	if ok {
		return crc + " ok"
	}
	return crc + " MISMATCH"
}

func inspectModel(in *inspection, data []byte) error {
	m, err := checkpoint.Read(bytes.NewReader(data))
	if err != nil {
		return err
	}
	in.Kind = "model file"
	in.Model = &modelInfo{FormatVersion: int(binary.LittleEndian.Uint16(data[len(checkpoint.Magic):])), Model: m.Header.Model,
		Params: len(m.Params), Round: m.Header.Round, Version: m.Header.Version, Dataset: m.Header.Dataset,
		Tensors: m.Header.Tensors, Extra: m.Header.Extra,
		CRC: fmt.Sprintf("%08x", binary.LittleEndian.Uint32(data[len(data)-4:])), CRCOK: true}
	in.table = func(w io.Writer) {
		mi := in.Model
		row := func(k, v string) { fmt.Fprintf(w, "  %s\t%s\n", k, v) }
		row("format version", strconv.Itoa(mi.FormatVersion))
		row("model", fmt.Sprintf("%s, %d parameters", mi.Model, mi.Params))
		row("round, version", fmt.Sprintf("%d, %d", mi.Round, mi.Version))
		if mi.Dataset != "" {
			row("dataset", mi.Dataset)
		}
		for _, t := range mi.Tensors {
			row("tensor "+t.Name, fmt.Sprint(t.Shape))
		}
		for _, k := range sortedKeys(mi.Extra) {
			row(k, mi.Extra[k])
		}
		row("crc-32c", crcText(mi.CRC, mi.CRCOK))
	}
	return nil
}

// inspectDevice describes a device model; with pub it also verifies the
// signature, and a failure is the error.
func inspectDevice(in *inspection, data []byte, pub ed25519.PublicKey) error {
	u, err := deliver.ReadUnverified(data, deliver.Limits{MaxFileBytes: inspectLimit})
	if err != nil {
		return err
	}
	f := u.File
	in.Kind = "device model"
	d := &deviceInfo{Meta: f.Meta, Input: f.Input, Classes: f.Classes(), Params: f.Params(), Layers: len(f.Layers),
		CRC: fmt.Sprintf("%08x", u.CRC), CRCOK: true, Signature: "present, not verified (give --pubkey)"}
	if bytes.Count(u.Signature, []byte{0}) == len(u.Signature) {
		d.Signature = "absent (zero bytes)"
	}
	var verr error
	if pub != nil {
		if _, verr = deliver.ReadLimits(data, pub, deliver.Limits{MaxFileBytes: inspectLimit}); verr == nil {
			d.Signature = "verified"
		} else {
			d.Signature = "DOES NOT VERIFY with the given key"
		}
	}
	for i := range f.Tensors {
		t, sz := &f.Tensors[i], u.Tensors[i]
		ti := tensorInfo{Name: t.Name, Shape: t.Shape, Sparse: t.Sparse, Stored: t.Stored(), Encoding: t.Encoding.String(),
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
	in.table = func(w io.Writer) {
		row := func(k, v string) { fmt.Fprintf(w, "  %s\t%s\n", k, v) }
		row("network", fmt.Sprintf("%d inputs, %d classes, %d layers, %d parameters", d.Input, d.Classes, d.Layers, d.Params))
		for _, k := range sortedKeys(d.Meta) {
			row("meta "+k, d.Meta[k])
		}
		for _, t := range d.Tensors {
			enc := t.Encoding
			if t.Coding != "" {
				enc += fmt.Sprintf(" %d-bit %s", t.Bits, t.Coding)
			}
			layout := "dense"
			if t.Sparse {
				layout = fmt.Sprintf("sparse %d of %d (positions %d B)", t.Stored, prod(t.Shape), t.Index)
			}
			row("tensor "+t.Name, fmt.Sprintf("%v %s, %s, values %d B, %d B in all", t.Shape, layout, enc, t.Values, t.Total))
		}
		row("crc-32c", crcText(d.CRC, d.CRCOK))
		row("signature", d.Signature)
	}
	if verr != nil {
		return verr
	}
	return nil
}

func prod(shape []int) int {
	n := 1
	for _, d := range shape {
		n *= d
	}
	return n
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
